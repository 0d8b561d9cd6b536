//! The three splits a run trains on: read from `paths.data_dir`, screened for images that
//! cannot be used (skipped and listed in `logs/skipped_images.csv`, or the run stops past
//! `data.max_bad_image_ratio`), counted per class. Screening reads headers and structure, not
//! pixels, where that proves an image readable; a resumed run reuses its first screening.

use std::path::Path;

use anyhow::{bail, Result};

use crate::config::Config;
use crate::data::batch::{check_images, SkippedImage};
use crate::data::records::class_indices;
use crate::data::{split_records, ImageRecord, ImageSource, SplitName};

pub(super) struct Splits {
    pub train: Vec<ImageRecord>,
    /// Train images per class, in class order (for balanced class weights).
    pub train_counts: Vec<usize>,
    pub validation: Vec<ImageRecord>,
    pub test: Vec<ImageRecord>,
    pub skipped: Vec<(SplitName, SkippedImage)>,
}

/// Each split's records, and the fingerprint of the split files they were read from.
type SplitRecords = (Vec<(SplitName, Vec<ImageRecord>)>, String);

/// Reads the three split CSVs; fails when one is missing, malformed, lists an unknown
/// class or is empty. Cheap: run before a run folder is created. With the fingerprint of the
/// bytes the records come from ([`split_files_fingerprint`]): one read, so that what a run
/// records is what it trains on.
pub(super) fn read_splits(config: &Config) -> Result<SplitRecords> {
    let mut splits = Vec::new();
    let mut files = Vec::new();
    for split in SplitName::ALL {
        let path = config.paths.data_dir.join(split.file_name());
        let label = format!("split CSV {}", path.display());
        let bytes = crate::fsutil::read_capped(&path, &label, crate::fsutil::CSV_FILE_CAP)?;
        let records = split_records(csv::Reader::from_reader(bytes.as_slice()), &path, &config.data.class_names)?;
        if records.is_empty() {
            bail!("{} split is empty ({}); run `divide` first", split.as_str(), path.display());
        }
        splits.push((split, records));
        files.push((split.file_name(), bytes));
    }
    let fingerprint = crate::fsutil::fingerprint(files.iter().map(|(name, bytes)| (*name, bytes.as_slice())));
    Ok((splits, fingerprint))
}

/// A class without a single training image is refused before a run folder exists; after
/// screening, [`load_splits`] refuses one whose images could not all be read.
pub(super) fn check_train_classes(splits: &[(SplitName, Vec<ImageRecord>)], config: &Config) -> Result<()> {
    let train = splits.iter().find(|(split, _)| *split == SplitName::Train).map(|(_, records)| records);
    match train {
        Some(train) if !config.data.allow_empty_train_classes => {
            check_every_class_present(SplitName::Train, &count_per_class(train, &config.data.class_names)?, config)
        }
        _ => Ok(()),
    }
}

/// The splits, screened now or, for a resumed run, as its first start screened them
/// (`earlier_screening`: the skipped images it listed).
/// `recorded`: the fingerprint of the split files the run recorded when it began (none for a
/// run from before it was kept); files that are not those now (changed since, even between the
/// run's start and this read) are refused, never trained on under the recorded fingerprint.
pub(super) fn load_splits(
    config: &Config,
    source: &ImageSource,
    earlier_screening: Option<Vec<(SplitName, SkippedImage)>>,
    recorded: Option<&str>,
) -> Result<Splits> {
    let class_names = &config.data.class_names;
    let reuse = earlier_screening.is_some();
    let mut skipped = earlier_screening.unwrap_or_default();
    let mut loaded = Vec::new();
    let (splits, fingerprint) = read_splits(config)?;
    let shared = products_in_two_splits(&splits);
    if let Some(first) = shared.first() {
        tracing::warn!(
            "{} product(s) are in the train split and in validation or test (the first: {first}): the figures will \
             look better than they are; `divide` keeps each product in one split",
            shared.len()
        );
    }
    if recorded.is_some_and(|recorded| recorded != fingerprint) {
        bail!(
            "the split files in {} are not those the run recorded when it began (changed while it started, or \
             since): not trained on; start a new run",
            config.paths.data_dir.display()
        );
    }
    for (split, records) in splits {
        let records = if reuse {
            let left_out: std::collections::HashSet<&str> =
                skipped.iter().filter(|(s, _)| *s == split).map(|(_, i)| i.image_path.as_str()).collect();
            records.into_iter().filter(|r| !left_out.contains(r.image_path.as_str())).collect()
        } else {
            screen_images(split, records, config, source, &mut skipped)?
        };
        if records.is_empty() {
            bail!("{} split has no readable image", split.as_str());
        }
        let counts = count_per_class(&records, class_names)?;
        let per_class: Vec<String> = class_names.iter().zip(&counts).map(|(c, n)| format!("{c}={n}")).collect();
        tracing::info!("{}: {} images ({})", split.as_str(), records.len(), per_class.join(", "));
        check_every_class_present(split, &counts, config)?;
        loaded.push((records, counts));
    }
    let [(train, train_counts), (validation, _), (test, _)]: [_; 3] = loaded.try_into().ok().expect("three splits");
    Ok(Splits { train, train_counts, validation, test, skipped })
}

/// The products of the train split also in another: split files made or edited by hand may
/// list them, and a model judged on images of products it trained on looks better than it is
/// (said, not refused: files from elsewhere are taken as they are).
fn products_in_two_splits(splits: &[(SplitName, Vec<ImageRecord>)]) -> Vec<&str> {
    let products = |wanted: &dyn Fn(SplitName) -> bool| -> std::collections::BTreeSet<&str> {
        let records = splits.iter().filter(|(split, _)| wanted(*split)).flat_map(|(_, records)| records);
        records.map(|r| r.product_id.as_str()).collect()
    };
    let train = products(&|split| split == SplitName::Train);
    products(&|split| split != SplitName::Train).intersection(&train).copied().collect()
}

/// A class without training images can never be learnt: an error unless allowed. Missing
/// from validation or test, it only leaves its metrics empty: a warning.
/// The fingerprint of the three split files in `data_dir` and of those of `optional` that are
/// there (`duplicates.csv`): what a run or cross-validation was made from.
pub fn split_files_fingerprint(data_dir: &Path, optional: &[&str]) -> Result<String> {
    let mut files = Vec::new();
    for name in SplitName::ALL.map(SplitName::file_name).into_iter().chain(optional.iter().copied()) {
        let path = data_dir.join(name);
        if optional.contains(&name) && std::fs::symlink_metadata(&path).is_err() {
            continue;
        }
        let bytes = crate::fsutil::read_capped(&path, &path.display().to_string(), crate::fsutil::CSV_FILE_CAP)?;
        files.push((name, bytes));
    }
    Ok(crate::fsutil::fingerprint(files.iter().map(|(name, bytes)| (*name, bytes.as_slice()))))
}

fn check_every_class_present(split: SplitName, counts: &[usize], config: &Config) -> Result<()> {
    for (class, _) in config.data.class_names.iter().zip(counts).filter(|(_, &n)| n == 0) {
        if split == SplitName::Train && !config.data.allow_empty_train_classes {
            bail!(
                "the train split has no `{class}` image, so the model could never learn that class; add some, \
                 or set data.allow_empty_train_classes to train without it"
            );
        }
        tracing::warn!("the {} split has no `{class}` image; its metrics for that class will be empty", split.as_str());
    }
    Ok(())
}

fn count_per_class(records: &[ImageRecord], class_names: &[String]) -> Result<Vec<usize>> {
    let mut counts = vec![0usize; class_names.len()];
    for i in class_indices(records, class_names)? {
        counts[i as usize] += 1;
    }
    Ok(counts)
}

/// Drops images that cannot be decoded; fails when a split has more than the allowed share.
fn screen_images(
    split: SplitName,
    records: Vec<ImageRecord>,
    config: &Config,
    source: &ImageSource,
    skipped: &mut Vec<(SplitName, SkippedImage)>,
) -> Result<Vec<ImageRecord>> {
    let refs: Vec<&ImageRecord> = records.iter().collect();
    let started = std::time::Instant::now();
    let checked = check_images(&refs, source, config.system.decode_threads());
    tracing::debug!("{}: {} images screened in {:.2} s", split.as_str(), refs.len(), started.elapsed().as_secs_f64());
    let total = records.len();
    let mut kept = Vec::with_capacity(total);
    let mut bad = 0;
    for (record, result) in records.into_iter().zip(checked) {
        match result {
            Ok(_) => kept.push(record),
            Err(reason) => {
                tracing::warn!("{}: skipping unreadable image {}: {reason}", split.as_str(), record.image_path);
                skipped.push((split, SkippedImage { image_path: record.image_path, reason }));
                bad += 1;
            }
        }
    }
    let ratio = if total > 0 { bad as f64 / total as f64 } else { 0.0 };
    if ratio > config.data.max_bad_image_ratio {
        bail!(
            "{} split: {bad} of {total} images are unreadable ({:.1}%), more than data.max_bad_image_ratio = {}; \
             see the warnings above",
            split.as_str(),
            ratio * 100.0,
            config.data.max_bad_image_ratio
        );
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_in_the_train_split_and_another_are_found() {
        let record = |product: &str| ImageRecord {
            product_id: product.into(),
            image_path: format!("{product}.jpg"),
            image_type: "full_shot".into(),
        };
        let splits = vec![
            (SplitName::Train, vec![record("a"), record("b"), record("c")]),
            (SplitName::Validation, vec![record("c"), record("d")]),
            (SplitName::Test, vec![record("a"), record("d")]),
        ];
        assert_eq!(products_in_two_splits(&splits), ["a", "c"]);
        // Validation and test may share (a cross-validation fold holds one out for both).
        assert!(products_in_two_splits(&splits[1..]).is_empty());
    }

    /// What a run trains on is what it recorded: split files that changed after the run began
    /// (here between the recording and the load) are refused, not trained on under the
    /// recorded fingerprint.
    #[test]
    fn split_files_other_than_those_recorded_are_not_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.paths.data_dir = dir.path().to_path_buf();
        config.data.allow_empty_train_classes = true;
        let class = &config.data.class_names[0];
        for split in SplitName::ALL {
            let rows = format!("product_id,image_path,image_type\nP1,a.jpg,{class}\nP2,b.jpg,{class}\n");
            std::fs::write(dir.path().join(split.file_name()), rows).unwrap();
        }
        let (_, recorded) = read_splits(&config).unwrap();
        assert_eq!(recorded, split_files_fingerprint(dir.path(), &[]).unwrap(), "one fingerprint, however read");
        let source = ImageSource::from_config(&config.data);
        let load = |recorded: Option<&str>| load_splits(&config, &source, Some(Vec::new()), recorded);
        assert_eq!(load(Some(&recorded)).unwrap().train.len(), 2);
        let train = dir.path().join("train_data.csv");
        std::fs::write(&train, format!("product_id,image_path,image_type\nP1,a.jpg,{class}\n")).unwrap();
        let error = load(Some(&recorded)).err().unwrap().to_string();
        assert!(error.contains("are not those the run recorded when it began"), "{error}");
        assert_eq!(load(None).unwrap().train.len(), 1, "a run from before the fingerprint was kept");
    }
}
