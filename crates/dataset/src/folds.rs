//! The folds: every image of the three split files, each product in exactly one fold, and
//! products that share a photo (the same path, or a group of `divide --find-duplicates`'s
//! `duplicates.csv`) in the same one; within each category (from the product CSV) the
//! products are shuffled and dealt round, so each fold is within one product of its share per
//! category. `images.csv` records the assignment; each fold's folder gets split files
//! training on the other folds and validating and testing on its own.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use imgtype_base::config::Config;
use imgtype_images::records::{read_split_csv, split_records};
use imgtype_images::{ImageRecord, SplitName};

use crate::duplicates::UnionFind;

/// A row of `images.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FoldImage {
    pub image_path: String,
    pub product_id: String,
    pub image_type: String,
    /// The split file it came from.
    pub split: String,
    /// 1-based.
    pub fold: usize,
}

impl FoldImage {
    pub fn record(&self) -> ImageRecord {
        ImageRecord {
            product_id: self.product_id.clone(),
            image_path: self.image_path.clone(),
            image_type: self.image_type.clone(),
        }
    }
}

/// Every image of `config`'s split files with its fold, in split-file order.
pub fn assign_folds(config: &Config, folds: usize) -> Result<Vec<FoldImage>> {
    let data_dir = &config.paths.data_dir;
    let mut images = Vec::new();
    for split in SplitName::ALL {
        let path = data_dir.join(split.file_name());
        for record in read_split_csv(&path, &config.data.class_names)? {
            images.push((record, split));
        }
    }
    let mut product_index: HashMap<String, usize> = HashMap::new();
    let mut products: Vec<String> = Vec::new();
    for (record, _) in &images {
        if !product_index.contains_key(&record.product_id) {
            product_index.insert(record.product_id.clone(), products.len());
            products.push(record.product_id.clone());
        }
    }
    let mut links = UnionFind::new(products.len());
    let mut owner_of_path: HashMap<&str, usize> = HashMap::new();
    for (record, _) in &images {
        let product = product_index[&record.product_id];
        if let Some(&other) = owner_of_path.get(record.image_path.as_str()) {
            links.join(other, product);
        }
        owner_of_path.insert(&record.image_path, product);
    }
    for group in duplicate_groups(&data_dir.join("duplicates.csv"))? {
        let members: Vec<usize> = group.iter().filter_map(|id| product_index.get(id).copied()).collect();
        members.windows(2).for_each(|pair| links.join(pair[0], pair[1]));
    }
    let clusters = links.clusters();
    if clusters.len() < folds {
        bail!(
            "{}: {} product group(s) cannot fill {folds} folds (products sharing a photo count as one)",
            data_dir.display(),
            clusters.len()
        );
    }
    let categories = product_categories(config);
    let mut by_category: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (index, cluster) in clusters.iter().enumerate() {
        let category = categories.get(&products[cluster[0]]).map(String::as_str).unwrap_or("");
        by_category.entry(category).or_default().push(index);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(config.data.random_state);
    let mut fold_of_product = vec![0usize; products.len()];
    let mut dealt = 0usize;
    for units in by_category.values_mut() {
        units.shuffle(&mut rng);
        for &unit in units.iter() {
            clusters[unit].iter().for_each(|&p| fold_of_product[p] = dealt % folds + 1);
            dealt += 1;
        }
    }
    Ok(images
        .into_iter()
        .map(|(record, split)| FoldImage {
            fold: fold_of_product[product_index[&record.product_id]],
            image_path: record.image_path,
            product_id: record.product_id,
            image_type: record.image_type,
            split: split.as_str().to_string(),
        })
        .collect())
}

/// Each product's `category_name` from the product CSV; none (one stratum) when it cannot
/// be read, with a warning.
fn product_categories(config: &Config) -> HashMap<String, String> {
    match crate::product::read_products(&config.data.csv_path) {
        Ok(table) => table.products.into_iter().map(|p| (p.id, p.category)).collect(),
        Err(e) => {
            tracing::warn!("folds not stratified by category: {e:#}");
            HashMap::new()
        }
    }
}

/// The product ids of each group of `duplicates.csv`, when `divide --find-duplicates` wrote one.
pub(crate) fn duplicate_groups(path: &Path) -> Result<Vec<Vec<String>>> {
    if !imgtype_base::fsutil::is_present(path) {
        return Ok(Vec::new());
    }
    #[derive(Deserialize)]
    struct Row {
        group: usize,
        product_id: String,
    }
    let mut groups: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    let mut reader = imgtype_base::fsutil::csv_reader(path, &path.display().to_string())?;
    for (index, row) in reader.deserialize::<Row>().enumerate() {
        let row = row.with_context(|| format!("{}: row {} is not valid", path.display(), index + 2))?;
        groups.entry(row.group).or_default().push(row.product_id);
    }
    Ok(groups.into_values().collect())
}

/// Writes `images.csv`; the fingerprint of what was written, for the plan.
pub fn write_images_csv(path: &Path, images: &[FoldImage]) -> Result<String> {
    let mut csv = csv::Writer::from_writer(Vec::new());
    images.iter().try_for_each(|image| csv.serialize(image))?;
    let bytes = csv.into_inner().context("images.csv in memory")?;
    imgtype_base::fsutil::write_atomic(path, &bytes)?;
    Ok(fingerprint(&bytes))
}

/// `images.csv`, each row's class one of `class_names` and its fold in 1..=`folds`; with the
/// fingerprint of the bytes read (one read: the check and the rows are of the same file).
pub fn read_images_csv(path: &Path, class_names: &[String], folds: usize) -> Result<(Vec<FoldImage>, String)> {
    let label = path.display().to_string();
    let bytes = imgtype_base::fsutil::read_capped(path, &label, imgtype_base::fsutil::CSV_FILE_CAP)?;
    let mut reader = csv::Reader::from_reader(bytes.as_slice());
    let mut images = Vec::new();
    for (index, row) in reader.deserialize::<FoldImage>().enumerate() {
        let row = row.with_context(|| format!("{label}: row {} is not valid", index + 2))?;
        if !class_names.contains(&row.image_type) {
            bail!(
                "{label}: row {}: image_type `{}` is not one of the classes {class_names:?}",
                index + 2,
                row.image_type
            );
        }
        if !(1..=folds).contains(&row.fold) {
            bail!("{label}: row {}: fold {} is not one of 1..={folds}", index + 2, row.fold);
        }
        images.push(row);
    }
    Ok((images, fingerprint(&bytes)))
}

fn fingerprint(images_csv: &[u8]) -> String {
    imgtype_base::fsutil::fingerprint([("images.csv", images_csv)])
}

/// What fold `fold`'s split files hold: training on the other folds, validating and testing
/// on this one.
fn fold_split_records(images: &[FoldImage], fold: usize) -> [(SplitName, Vec<ImageRecord>); 3] {
    let held_out: Vec<ImageRecord> = images.iter().filter(|i| i.fold == fold).map(FoldImage::record).collect();
    let training: Vec<ImageRecord> = images.iter().filter(|i| i.fold != fold).map(FoldImage::record).collect();
    [(SplitName::Train, training), (SplitName::Validation, held_out.clone()), (SplitName::Test, held_out)]
}

/// The bytes of a split file of `records`, as a fold's are written.
fn split_file_bytes(records: &[ImageRecord]) -> Result<Vec<u8>> {
    let mut csv = csv::Writer::from_writer(Vec::new());
    records.iter().try_for_each(|r| csv.serialize(r))?;
    csv.into_inner().context("a split file in memory")
}

/// The fingerprint of fold `fold`'s split files as `images` deals them (what a run reading
/// them records, see `read_splits`).
pub fn fold_split_files_fingerprint(images: &[FoldImage], fold: usize) -> Result<String> {
    let files = fold_split_records(images, fold)
        .into_iter()
        .map(|(split, records)| Ok((split.file_name(), split_file_bytes(&records)?)))
        .collect::<Result<Vec<_>>>()?;
    Ok(imgtype_base::fsutil::fingerprint(files.iter().map(|(name, bytes)| (*name, bytes.as_slice()))))
}

fn write_split_records(path: &Path, records: &[ImageRecord]) -> Result<()> {
    imgtype_base::fsutil::write_atomic(path, &split_file_bytes(records)?)
}

/// `data_dir/{train,validation,test}_data.csv` for fold `fold`: training on the other folds,
/// validating and testing on this one.
pub fn write_fold_data(data_dir: &Path, images: &[FoldImage], fold: usize) -> Result<()> {
    std::fs::create_dir_all(data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
    for (split, records) in fold_split_records(images, fold) {
        write_split_records(&data_dir.join(split.file_name()), &records)?;
    }
    Ok(())
}

/// Fold `fold`'s split files in `data_dir` are, byte for byte, what `images` (`images.csv`)
/// deals it: a file edited by hand would train, or be judged, on other images or labels than
/// the plan's, and one with the same rows in other bytes would be recorded by its run as other
/// split files than the one written again should it be deleted. With `restore_missing`, a
/// file that is not there is written again from `images` (its paths returned); otherwise it is
/// left to whoever reads it.
pub fn check_fold_data(
    data_dir: &Path,
    images: &[FoldImage],
    fold: usize,
    class_names: &[String],
    restore_missing: bool,
) -> Result<Vec<std::path::PathBuf>> {
    let mut restored = Vec::new();
    for (split, dealt) in fold_split_records(images, fold) {
        let path = data_dir.join(split.file_name());
        if !imgtype_base::fsutil::is_present(&path) {
            if !restore_missing {
                continue;
            }
            std::fs::create_dir_all(data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
            write_split_records(&path, &dealt)?;
            restored.push(path);
            continue;
        }
        const EDITED: &str = "the fold's split files were edited; put them back as images.csv has them (a deleted \
                              one is written again), or start a new cross-validation";
        let label = format!("split CSV {}", path.display());
        let bytes = imgtype_base::fsutil::read_capped(&path, &label, imgtype_base::fsutil::CSV_FILE_CAP)?;
        if bytes == split_file_bytes(&dealt)? {
            continue;
        }
        let found = split_records(csv::Reader::from_reader(bytes.as_slice()), &path, class_names)?;
        if found == dealt {
            bail!(
                "{} holds the rows images.csv deals fold {fold}, but not as they were written (line ends, quoting, \
                 columns or a byte-order mark changed): a run would record other split files than the fold's; delete \
                 it and it is written again from images.csv",
                path.display()
            );
        }
        let dealt_to =
            |other: usize| fold_split_records(images, other).into_iter().any(|(s, r)| s == split && r == found);
        if let Some(other) = (1..=images.iter().map(|i| i.fold).max().unwrap_or(0)).find(|&o| o != fold && dealt_to(o))
        {
            bail!(
                "{} holds what images.csv deals fold {other}, not fold {fold}: folds swapped, or copied from one \
                 another? Put each fold's files back, or start a new cross-validation",
                path.display()
            );
        }
        if let Some(row) = found.iter().zip(&dealt).position(|(f, d)| f != d) {
            let (f, d) = (&found[row], &dealt[row]);
            bail!(
                "{}: row {} is `{},{},{}`, but images.csv deals fold {fold} `{},{},{}` there: {EDITED}",
                path.display(),
                row + 2,
                f.product_id,
                f.image_path,
                f.image_type,
                d.product_id,
                d.image_path,
                d.image_type
            );
        }
        if found.len() != dealt.len() {
            bail!(
                "{} lists {} images, but images.csv deals fold {fold} {} there: {EDITED}",
                path.display(),
                found.len(),
                dealt.len()
            );
        }
    }
    Ok(restored)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
    }

    /// Twelve products in two categories, two of them sharing a photo and two more linked by
    /// duplicates.csv: each fold gets two of each category, linked products land together,
    /// and every image is in exactly one fold.
    #[test]
    fn folds_keep_products_and_shared_photos_together_and_balance_categories() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.paths.data_dir = dir.path().to_path_buf();
        config.data.csv_path = dir.path().join("products.csv");
        let class = config.data.class_names[0].clone();
        let mut products = String::from("id,category_name,main_image\n");
        let mut rows = vec![String::new(); 3];
        for p in 0..12 {
            products += &format!("P{p},{},x\n", if p % 2 == 0 { "pants" } else { "outer" });
            for i in 0..2 {
                let path = if p == 3 && i == 0 { "shared.jpg".to_string() } else { format!("p{p}_{i}.jpg") };
                rows[p % 3] += &format!("P{p},{path},{class}\n");
            }
        }
        rows[1] += &format!("P5,shared.jpg,{class}\n");
        write(&config.data.csv_path, &products);
        for (split, body) in SplitName::ALL.iter().zip(&rows) {
            write(&dir.path().join(split.file_name()), &format!("product_id,image_path,image_type\n{body}"));
        }
        write(&dir.path().join("duplicates.csv"), "group,product_id\n1,P8\n1,P10\n");
        let images = assign_folds(&config, 3).unwrap();
        assert_eq!(images.len(), 25);
        let fold_of = |id: &str| images.iter().find(|i| i.product_id == id).unwrap().fold;
        for id in (0..12).map(|p| format!("P{p}")) {
            assert!(images.iter().filter(|i| i.product_id == id).all(|i| i.fold == fold_of(&id)), "{id}");
        }
        assert_eq!(fold_of("P3"), fold_of("P5"));
        assert_eq!(fold_of("P8"), fold_of("P10"));
        for fold in 1..=3 {
            let in_fold: std::collections::BTreeSet<&str> =
                images.iter().filter(|i| i.fold == fold).map(|i| i.product_id.as_str()).collect();
            assert!((3..=5).contains(&in_fold.len()), "fold {fold}: {in_fold:?}");
        }
        assert_eq!(assign_folds(&config, 3).unwrap(), images, "the same seed gives the same folds");
        let err = assign_folds(&config, 11).unwrap_err().to_string();
        assert!(err.contains("10 product group(s) cannot fill 11 folds"), "{err}");
    }
}
