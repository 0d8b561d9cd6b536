//! Running a cross-validation: the folder `results/cv_YYYYMMDD_HHMMSS_<hex>/` (or the one
//! given), its plan and folds written once, then each fold a normal run folder under
//! `fold_<k>/`, on the sweep's machinery: finished folds skipped and an interrupted one
//! resumed when the same command runs again, `--member K/N` for a job array.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::folds::{assign_folds, read_images_csv, write_fold_data, write_images_csv, FoldImage};
use super::summary::{summarize, CvSummary};
use crate::config::Config;
use crate::data::SplitName;
use crate::eval::label_issues::LabelQuality;
use crate::stop::Outcome;
use crate::sweep::{run_planned, Member, PlannedRun, RunCounts};
use crate::train::TrainOptions;

pub const CV_PLAN_FILE: &str = "cv_plan.json";
pub(super) const IMAGES_FILE: &str = "images.csv";

/// `cv_plan.json`: what a rerun must match to continue the same cross-validation.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub(super) struct CvPlan {
    pub base_config: Config,
    pub folds: usize,
    /// Of the split files and `duplicates.csv` the folds were made from: a rerun after they
    /// changed (relabelled, split again) must not reuse these folds.
    pub data_fingerprint: String,
    pub images: usize,
    /// Held-out images per fold.
    pub fold_images: Vec<usize>,
}

/// Most folds a cross-validation may have (a folder's plan is checked against it).
pub const MAX_FOLDS: usize = 100;

impl CvPlan {
    /// The plan's numbers agree with each other and its config is valid: a folder copied,
    /// edited or damaged is one error line, never an index out of bounds later.
    fn check(&self) -> Result<()> {
        if !(2..=MAX_FOLDS).contains(&self.folds) {
            bail!("`folds` is {}, not between 2 and {MAX_FOLDS}", self.folds);
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

pub struct CvOptions {
    pub folds: usize,
    /// Default: a new `cv_…` folder in `paths.result_dir`; an existing one is continued.
    pub cv_dir: Option<PathBuf>,
    pub member: Option<Member>,
    pub quality: LabelQuality,
    pub train: TrainOptions,
}

pub struct CvReport {
    pub cv_dir: PathBuf,
    pub ran: usize,
    pub skipped: usize,
    pub failed: usize,
    /// None for a job array's member: `--summarize` once every member is done.
    pub summary: Option<CvSummary>,
}

pub type CvEnd = Outcome<CvReport>;

pub fn is_cv_folder(dir: &Path) -> bool {
    crate::fsutil::is_present(&dir.join(CV_PLAN_FILE))
}

/// The plan recorded in the cross-validation folder `dir`.
pub(super) fn read_plan(dir: &Path) -> Result<CvPlan> {
    let path = dir.join(CV_PLAN_FILE);
    if !path.exists() {
        bail!("{} is not a cross-validation folder (no {CV_PLAN_FILE})", dir.display());
    }
    let plan: CvPlan = crate::fsutil::read_json(&path)
        .with_context(|| format!("{} is not a cross-validation plan", path.display()))?;
    plan.check().with_context(|| format!("{}: the plan does not add up (edited or damaged?)", path.display()))?;
    Ok(plan)
}

/// Cross-validates `config` as `options` say (this member's folds of it).
pub fn cross_validate(config: &Config, options: &CvOptions) -> Result<CvEnd> {
    if !(2..=MAX_FOLDS).contains(&options.folds) {
        bail!("--cross-validate {}: between 2 and {MAX_FOLDS} folds", options.folds);
    }
    let dir = match &options.cv_dir {
        Some(dir) => dir.clone(),
        None => config.paths.result_dir.join(crate::rundir::named("cv")),
    };
    let plan = prepare(&dir, config, options.folds)?;
    let runs: Vec<PlannedRun> = (1..=plan.folds)
        .map(|fold| {
            let held_out = plan.fold_images[fold - 1];
            PlannedRun {
                name: fold_name(fold),
                label: format!("fold {fold}"),
                config: fold_config(&plan.base_config, &dir, fold),
                description: format!("training on {} images, holding out {held_out}", plan.images - held_out),
            }
        })
        .collect();
    let how = format!("continue with `train --resume {}`", dir.display());
    let RunCounts { ran, skipped, failed } = match run_planned(&dir, &runs, options.member, &options.train, &how)? {
        Outcome::Finished(counts) => counts,
        Outcome::Stopped(stopped) => return Ok(Outcome::Stopped(stopped)),
    };
    let summary = if options.member.is_none() { Some(summarize(&dir, options.quality)?) } else { None };
    Ok(Outcome::Finished(CvReport { cv_dir: dir, ran, skipped, failed, summary }))
}

/// Continues the cross-validation in `dir` with the config and folds it was started with.
pub fn resume_cross_validation(dir: &Path, mut options: CvOptions) -> Result<CvEnd> {
    let plan = read_plan(dir)?;
    options.folds = plan.folds;
    options.cv_dir = Some(dir.to_path_buf());
    cross_validate(&plan.base_config, &options)
}

pub(super) fn fold_name(fold: usize) -> String {
    format!("fold_{fold}")
}

/// The folder's plan: read back and checked against this command, or, in a new folder,
/// the folds assigned and written, the plan last (so a plan on disk means complete folds).
fn prepare(dir: &Path, config: &Config, folds: usize) -> Result<CvPlan> {
    let data_fingerprint = data_fingerprint(&config.paths.data_dir)?;
    if is_cv_folder(dir) {
        let plan = read_plan(dir)?;
        if plan.base_config != *config || plan.folds != folds {
            bail!(
                "{} holds a cross-validation with another config or number of folds: continue it with \
                 `train --resume {}`, or give this one its own folder",
                dir.display(),
                dir.display()
            );
        }
        if plan.data_fingerprint != data_fingerprint {
            bail!(
                "the split files in {} changed since the cross-validation in {} began (relabelled or split \
                 again?): give the new one its own folder",
                config.paths.data_dir.display(),
                dir.display()
            );
        }
        return Ok(plan);
    }
    crate::fsutil::check_new_folder(dir, "a cross-validation folder", |name| {
        name == IMAGES_FILE || name.strip_prefix("fold_").is_some_and(|n| n.parse::<usize>().is_ok())
    })?;
    let images = assign_folds(config, folds)?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    write_images_csv(&dir.join(IMAGES_FILE), &images)?;
    for fold in 1..=folds {
        write_fold_data(&dir.join(fold_name(fold)).join("data"), &images, fold)?;
    }
    let fold_images = (1..=folds).map(|f| images.iter().filter(|i| i.fold == f).count()).collect();
    let plan = CvPlan { base_config: config.clone(), folds, data_fingerprint, images: images.len(), fold_images };
    crate::fsutil::write_json_atomic(&dir.join(CV_PLAN_FILE), &plan)?;
    tracing::info!(
        "cross-validation in {}: {} images in {folds} folds of {:?} held-out images",
        dir.display(),
        plan.images,
        plan.fold_images
    );
    Ok(plan)
}

/// SipHash (fixed keys) of the three split files and `duplicates.csv`, as 16 hex digits.
fn data_fingerprint(data_dir: &Path) -> Result<String> {
    use std::hash::{Hash, Hasher};
    #[allow(deprecated)]
    let mut hasher = std::hash::SipHasher::new();
    for name in SplitName::ALL.map(SplitName::file_name).into_iter().chain(["duplicates.csv"]) {
        let path = data_dir.join(name);
        if name == "duplicates.csv" && std::fs::symlink_metadata(&path).is_err() {
            continue;
        }
        let bytes = crate::fsutil::read_capped(&path, &path.display().to_string(), crate::fsutil::CSV_FILE_CAP)?;
        (name, bytes).hash(&mut hasher);
    }
    Ok(format!("{:016x}", hasher.finish()))
}

pub(super) fn read_images(dir: &Path, plan: &CvPlan) -> Result<Vec<FoldImage>> {
    read_images_csv(&dir.join(IMAGES_FILE), &plan.base_config.data.class_names, plan.folds)
}

/// Fold `fold`'s config: its split files, run folder and best-model copy inside its folder.
fn fold_config(base: &Config, dir: &Path, fold: usize) -> Config {
    let mut config = base.clone();
    let fold_dir = dir.join(fold_name(fold));
    config.paths.data_dir = fold_dir.join("data");
    config.paths.model_dir = fold_dir.join("models");
    config.paths.result_dir = fold_dir;
    config
}
