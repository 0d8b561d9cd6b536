//! The cross-validation folder's on-disk contract, read by the runner and the summary alike:
//! the plan (`cv_plan.json`), the image list (`images.csv`), the fold folders' names, and each
//! repeat after the first as a cross-validation folder of its own, `repeat_<r>/`, with its own
//! fold seed (`data.random_state`) and training seed (`system.seed`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::folds::{check_fold_data, read_images_csv, FoldImage};
use imgtype_base::config::Config;

pub const CV_PLAN_FILE: &str = "cv_plan.json";
pub const IMAGES_FILE: &str = "images.csv";

/// `cv_plan.json`: what a rerun must match to continue the same cross-validation.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct CvPlan {
    pub base_config: Config,
    pub folds: usize,
    /// Of the split files and `duplicates.csv` the folds were made from: a rerun after they
    /// changed (relabelled, split again) must not reuse these folds.
    pub data_fingerprint: String,
    pub images: usize,
    /// Held-out images per fold.
    pub fold_images: Vec<usize>,
    /// Cross-validations of the same images with other folds and seeds, whose out-of-fold
    /// probabilities are averaged; 1 (also for a plan written before repeats).
    #[serde(default = "one_repeat")]
    pub repeats: usize,
    /// Of `images.csv` as written (none in a plan written before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images_fingerprint: Option<String>,
}

fn one_repeat() -> usize {
    1
}

/// Most repeats a cross-validation may have.
pub const MAX_REPEATS: usize = 10;

/// Most folds a cross-validation may have (a folder's plan is checked against it).
pub const MAX_FOLDS: usize = 100;

impl CvPlan {
    /// The plan's numbers agree with each other and its config is valid: a folder copied,
    /// edited or damaged is one error line, never an index out of bounds later.
    pub fn check(&self) -> Result<()> {
        if !(2..=MAX_FOLDS).contains(&self.folds) {
            bail!("`folds` is {}, not between 2 and {MAX_FOLDS}", self.folds);
        }
        if !(1..=MAX_REPEATS).contains(&self.repeats) {
            bail!("`repeats` is {}, not between 1 and {MAX_REPEATS}", self.repeats);
        }
        if self.fold_images.len() != self.folds {
            bail!("`folds` is {} but `fold_images` lists {} folds", self.folds, self.fold_images.len());
        }
        let listed: usize = self.fold_images.iter().sum();
        if listed != self.images || self.fold_images.contains(&0) {
            bail!(
                "`fold_images` {:?} do not make up the plan's {} images, each fold holding some",
                self.fold_images,
                self.images
            );
        }
        self.base_config.validate().context("`base_config`")
    }
}

pub fn is_cv_folder(dir: &Path) -> bool {
    imgtype_base::fsutil::is_present(&dir.join(CV_PLAN_FILE))
}

/// A folder without a plan whose folds hold what training writes (a `run_…` folder, the
/// best-model copy's `models/`) lost it (deleted, moved): setting it up again would take those
/// runs for another cross-validation's. Anything else in a fold is for the set-up's own check.
pub fn check_plan_not_lost(dir: &Path) -> Result<()> {
    // Sorted, so that the message names the same fold and file each time.
    let sorted = |dir: &Path| -> Vec<String> {
        let entries = std::fs::read_dir(dir).into_iter().flatten().flatten();
        let mut names: Vec<String> = entries.map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        names.sort_unstable();
        names
    };
    for fold in sorted(dir).into_iter().filter(|name| name.starts_with("fold_")) {
        let entries = sorted(&dir.join(&fold));
        let run = entries.iter().find(|n| n.starts_with("run_"));
        if let Some(begun) = run.or_else(|| entries.iter().find(|n| *n == "models")) {
            bail!(
                "{} has no {CV_PLAN_FILE}, yet its {fold} has begun training ({begun} is there): was the plan \
                 deleted or moved? Put it back, or move the folder away and start again",
                dir.display()
            );
        }
    }
    Ok(())
}

/// The plan recorded in the cross-validation folder `dir`.
pub fn read_plan(dir: &Path) -> Result<CvPlan> {
    let path = dir.join(CV_PLAN_FILE);
    if !path.exists() {
        bail!("{} is not a cross-validation folder (no {CV_PLAN_FILE})", dir.display());
    }
    let plan: CvPlan = imgtype_base::fsutil::read_json(&path)
        .with_context(|| format!("{} is not a cross-validation plan", path.display()))?;
    plan.check().with_context(|| format!("{}: the plan does not add up (edited or damaged?)", path.display()))?;
    Ok(plan)
}

pub fn fold_name(fold: usize) -> String {
    format!("fold_{fold}")
}

/// One fold of one repeat of a cross-validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct FoldId {
    pub repeat: usize,
    pub fold: usize,
}

impl FoldId {
    /// How messages name it: `fold k`, or `repeat r fold k` in a cross-validation of
    /// `repeats` > 1 (where `fold k` alone would not say which).
    ///
    /// Inline: the report code shared by every binary calls it, and a call into this crate's
    /// object code would link libtorch into `divide` (`tests/architecture.rs`).
    #[inline]
    pub fn label(self, repeats: usize) -> String {
        match repeats {
            1 => format!("fold {}", self.fold),
            _ => format!("repeat {} fold {}", self.repeat, self.fold),
        }
    }
}

/// Repeat `repeat`'s cross-validation folder: the folder itself for the first.
pub fn repeat_dir(dir: &Path, repeat: usize) -> PathBuf {
    match repeat {
        1 => dir.to_path_buf(),
        r => dir.join(format!("repeat_{r}")),
    }
}

/// Repeat `repeat`'s plan, read from its folder and checked against the first's: the same
/// images, folds and split files, and the config [`repeat_config`] makes of the first's (a
/// folder copied in from another cross-validation is refused, not averaged in).
pub fn read_repeat_plan(dir: &Path, first: &CvPlan, repeat: usize) -> Result<CvPlan> {
    let folder = repeat_dir(dir, repeat);
    let plan = read_plan(&folder)?;
    let counts =
        [("folds", plan.folds, first.folds), ("images", plan.images, first.images), ("repeats", plan.repeats, 1)];
    let (own, firsts) = (folder.join(CV_PLAN_FILE), dir.join(CV_PLAN_FILE));
    let expected = repeat_config(&first.base_config, repeat);
    let wanted_in = format!("{} for repeat {repeat}", firsts.display());
    let mut what: Vec<String> =
        differences(&plan.base_config, &expected, &counts, &own.display().to_string(), &wanted_in)
            .into_iter()
            .collect();
    if plan.data_fingerprint != first.data_fingerprint {
        what.push("it was made from other split files (`data_fingerprint`)".into());
    }
    if !what.is_empty() {
        bail!(
            "{} is not repeat {repeat} of the cross-validation in {}: {}; one of the plans was edited, or the \
             folder comes from another cross-validation",
            folder.display(),
            dir.display(),
            what.join("; ")
        );
    }
    Ok(plan)
}

/// How a plan differs from what is asked of it, key by key (`` `folds` is 5 in A, 4 in B ``,
/// then the config's keys), or `None` when it does not.
pub fn differences(
    found: &Config,
    wanted: &Config,
    counts: &[(&str, usize, usize)],
    found_in: &str,
    wanted_in: &str,
) -> Option<String> {
    let counted = counts
        .iter()
        .filter(|(_, f, w)| f != w)
        .map(|(key, f, w)| format!("`{key}` is {f} in {found_in}, {w} in {wanted_in}"));
    let parts: Vec<String> =
        counted.chain(imgtype_base::config::describe_differences(found, found_in, wanted, wanted_in)).collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// Repeat `repeat`'s config: the fold seed and the training seed moved on by `repeat − 1`.
pub fn repeat_config(base: &Config, repeat: usize) -> Config {
    let mut config = base.clone();
    let step = repeat as u64 - 1;
    config.data.random_state = config.data.random_state.wrapping_add(step);
    config.system.seed = config.system.seed.wrapping_add(step);
    config
}

/// `images.csv`, as it was written when the plan was (its fingerprint), each fold as many
/// images as the plan counted: an edited list would judge other labels, products or folds.
pub fn read_images(dir: &Path, plan: &CvPlan) -> Result<Vec<FoldImage>> {
    let path = dir.join(IMAGES_FILE);
    let (images, fingerprint) = read_images_csv(&path, &plan.base_config.data.class_names, plan.folds)?;
    let plan_path = dir.join(CV_PLAN_FILE);
    let what = "one of the two was changed since; start a new cross-validation";
    if plan.images_fingerprint.as_ref().is_some_and(|planned| *planned != fingerprint) {
        bail!(
            "{} is not the file {} was made with (its fingerprint differs): {what}",
            path.display(),
            plan_path.display()
        );
    }
    for (fold, &planned) in (1..=plan.folds).zip(&plan.fold_images) {
        let listed = images.iter().filter(|i| i.fold == fold).count();
        if listed != planned {
            bail!(
                "{}: fold {fold} lists {listed} images but {} counted {planned}: {what}",
                path.display(),
                plan_path.display()
            );
        }
    }
    Ok(images)
}

/// Each fold's split files are what `images` deals it (see [`check_fold_data`]); with
/// `restore_missing` (training continues), a deleted one is written again, otherwise (a
/// summary) it is only missing for the check of the fold's runs, should it have any.
pub fn check_folds_data(dir: &Path, plan: &CvPlan, images: &[FoldImage], restore_missing: bool) -> Result<()> {
    for fold in 1..=plan.folds {
        let data_dir = dir.join(fold_name(fold)).join("data");
        let class_names = &plan.base_config.data.class_names;
        for path in check_fold_data(&data_dir, images, fold, class_names, restore_missing)? {
            tracing::info!("{} was missing: written again from {}", path.display(), dir.join(IMAGES_FILE).display());
        }
    }
    Ok(())
}

/// Fold `fold`'s config: its split files, run folder and best-model copy inside its folder.
pub fn fold_config(base: &Config, dir: &Path, fold: usize) -> Config {
    let mut config = base.clone();
    let fold_dir = dir.join(fold_name(fold));
    config.paths.data_dir = fold_dir.join("data");
    config.paths.model_dir = fold_dir.join("models");
    config.paths.result_dir = fold_dir;
    config
}

/// `images` (`images.csv` in `dir`) lists, in order, every image of `config`'s split files
/// with its label and split, and keeps each product, with those it shares a photo with or is
/// linked to by `duplicates.csv`, in one fold: what [`crate::folds::assign_folds`] deals. Checked
/// without the fingerprint a plan keeps of it (an older plan has none, or it was deleted): an
/// edited list would train and judge other labels than the split files hold, or leak a
/// product between training and held-out images.
pub fn check_dealt_from_splits(dir: &Path, images: &[FoldImage], config: &Config) -> Result<()> {
    let images_file = dir.join(IMAGES_FILE);
    let edited = "images.csv was edited since the folds were dealt; start a new cross-validation";
    let data_dir = &config.paths.data_dir;
    let mut row = 0;
    for split in imgtype_images::SplitName::ALL {
        let path = data_dir.join(split.file_name());
        for record in imgtype_images::read_split_csv(&path, &config.data.class_names)? {
            let listed = images.get(row).map(|image| (image.record(), image.split.as_str()));
            if listed.as_ref() != Some(&(record.clone(), split.as_str())) {
                bail!(
                    "{}: row {} is not `{},{},{}` of {}, as the folds were dealt: {edited}",
                    images_file.display(),
                    row + 2,
                    record.product_id,
                    record.image_path,
                    record.image_type,
                    path.display()
                );
            }
            row += 1;
        }
    }
    if images.len() != row {
        bail!("{}: lists {} images, but the split files hold {row}: {edited}", images_file.display(), images.len());
    }
    let mut fold_of: std::collections::HashMap<(&str, &str), usize> = std::collections::HashMap::new();
    for image in images {
        for key in [("product", image.product_id.as_str()), ("photo", image.image_path.as_str())] {
            let fold = *fold_of.entry(key).or_insert(image.fold);
            if fold != image.fold {
                bail!(
                    "{}: {} `{}` is in fold {fold} and in fold {}, so a model would be tested on what it trained on: \
                     {edited}",
                    images_file.display(),
                    key.0,
                    key.1,
                    image.fold
                );
            }
        }
    }
    for group in crate::folds::duplicate_groups(&data_dir.join("duplicates.csv"))? {
        let folds: Vec<usize> = group.iter().filter_map(|id| fold_of.get(&("product", id.as_str())).copied()).collect();
        if folds.windows(2).any(|pair| pair[0] != pair[1]) {
            bail!(
                "{}: products {} share photos (duplicates.csv) but are in folds {folds:?}: {edited}",
                images_file.display(),
                group.join(", ")
            );
        }
    }
    Ok(())
}
