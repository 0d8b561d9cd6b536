//! Running a cross-validation: the folder `results/cv_YYYYMMDD_HHMMSS_<hex>/` (or the one
//! given), its plan and folds written once, then each fold a normal run folder under
//! `fold_<k>/`, on the sweep's machinery: finished folds skipped and an interrupted one
//! resumed when the same command runs again, `--member K/N` for a job array.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::layout::{
    check_dealt_from_splits, check_folds_data, check_plan_not_lost, differences, fold_config, fold_name, is_cv_folder,
    read_images, read_plan, read_repeat_plan, repeat_config, repeat_dir, CvPlan, FoldId, CV_PLAN_FILE, IMAGES_FILE,
    MAX_FOLDS, MAX_REPEATS,
};
use super::summary::{summarize, CvSummary, Judging};
use crate::config::Config;
use crate::data::folds::{assign_folds, fold_split_files_fingerprint, write_fold_data, write_images_csv};
use crate::stop::Outcome;
use crate::sweep::{run_planned, Member, PlannedRun, RunCounts};
use crate::train::TrainOptions;

pub struct CvOptions {
    pub folds: usize,
    /// Cross-validations with other folds and seeds, averaged (1: one).
    pub repeats: usize,
    /// Default: a new `cv_…` folder in `paths.result_dir`; an existing one is continued.
    pub cv_dir: Option<PathBuf>,
    pub member: Option<Member>,
    pub judging: Judging,
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

/// Cross-validates `config` as `options` say (this member's folds of it).
pub fn cross_validate(config: &Config, options: &CvOptions) -> Result<CvEnd> {
    if !(2..=MAX_FOLDS).contains(&options.folds) {
        bail!("--cross-validate {}: between 2 and {MAX_FOLDS} folds", options.folds);
    }
    let dir = match &options.cv_dir {
        Some(dir) => dir.clone(),
        None => config.paths.result_dir.join(crate::rundir::named("cv")),
    };
    if !(1..=MAX_REPEATS).contains(&options.repeats) {
        bail!("--repeats {}: between 1 and {MAX_REPEATS}", options.repeats);
    }
    let plan = prepare(&dir, config, options.folds, options.repeats)?;
    let mut runs = Vec::new();
    for repeat in 1..=plan.repeats {
        // Each repeat's plan was prepared above; the first is the folder's own.
        let repeat_plan = if repeat == 1 { None } else { Some(read_repeat_plan(&dir, &plan, repeat)?) };
        let repeat_plan = repeat_plan.as_ref().unwrap_or(&plan);
        let folder = repeat_dir(&dir, repeat);
        let images = read_images(&folder, repeat_plan)?;
        for fold in 1..=plan.folds {
            let held_out = repeat_plan.fold_images[fold - 1];
            let name = match repeat {
                1 => fold_name(fold),
                r => format!("repeat_{r}/{}", fold_name(fold)),
            };
            runs.push(PlannedRun {
                name,
                label: FoldId { repeat, fold }.label(plan.repeats),
                config: fold_config(&repeat_plan.base_config, &folder, fold),
                plan_file: folder.join(CV_PLAN_FILE),
                description: format!("training on {} images, holding out {held_out}", plan.images - held_out),
                split_files: Some(fold_split_files_fingerprint(&images, fold)?),
            });
        }
    }
    let how = format!("continue with `train --resume {}`", dir.display());
    let RunCounts { ran, skipped, failed } = match run_planned(&dir, &runs, options.member, &options.train, &how)? {
        Outcome::Finished(counts) => counts,
        Outcome::Stopped(stopped) => return Ok(Outcome::Stopped(stopped)),
    };
    let summary = match options.member {
        Some(_) => None,
        None => match summarize(&dir, options.judging, &options.train.stop)? {
            Outcome::Finished(summary) => Some(summary),
            Outcome::Stopped(stopped) => return Ok(Outcome::Stopped(stopped)),
        },
    };
    Ok(Outcome::Finished(CvReport { cv_dir: dir, ran, skipped, failed, summary }))
}

/// Continues the cross-validation in `dir` with the config and folds it was started with.
pub fn resume_cross_validation(dir: &Path, mut options: CvOptions) -> Result<CvEnd> {
    let plan = read_plan(dir)?;
    options.folds = plan.folds;
    options.repeats = plan.repeats;
    options.cv_dir = Some(dir.to_path_buf());
    cross_validate(&plan.base_config, &options)
}

/// The folder's plan: read back and checked against this command, or, in a new folder,
/// the folds assigned and written, then each repeat's folder, the plan last (so a plan on
/// disk means complete folds).
fn prepare(dir: &Path, config: &Config, folds: usize, repeats: usize) -> Result<CvPlan> {
    let data_fingerprint = crate::train::split_files_fingerprint(&config.paths.data_dir, &["duplicates.csv"])
        .with_context(|| {
            let data = crate::train::data_dir_named(&config.paths.data_dir);
            format!("the split files the folds are dealt from (`paths.data_dir` {data})")
        })?;
    let planned = is_cv_folder(dir);
    let plan = if planned {
        let plan = read_plan(dir)?;
        let counts = [("folds", plan.folds, folds), ("repeats", plan.repeats, repeats)];
        let plan_file = dir.join(CV_PLAN_FILE).display().to_string();
        if let Some(what) = differences(&plan.base_config, config, &counts, &plan_file, "this command") {
            bail!(
                "{} holds another cross-validation ({what}): continue it with `train --resume {}`, or give this \
                 one its own folder",
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
        // An edited image list or fold file is refused now, not after the folds left to train have trained.
        let images = read_images(dir, &plan)?;
        check_dealt_from_splits(dir, &images, config)?;
        check_folds_data(dir, &plan, &images, true)?;
        plan
    } else {
        check_unplanned(dir)?;
        let images = assign_folds(config, folds)?;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let images_fingerprint = Some(write_images_csv(&dir.join(IMAGES_FILE), &images)?);
        for fold in 1..=folds {
            write_fold_data(&dir.join(fold_name(fold)).join("data"), &images, fold)?;
        }
        let fold_images = (1..=folds).map(|f| images.iter().filter(|i| i.fold == f).count()).collect();
        let images = images.len();
        CvPlan {
            base_config: config.clone(),
            folds,
            data_fingerprint,
            images,
            fold_images,
            repeats,
            images_fingerprint,
        }
    };
    for repeat in 2..=repeats {
        let folder = repeat_dir(dir, repeat);
        if is_cv_folder(&folder) {
            let repeat_plan = read_repeat_plan(dir, &plan, repeat)?;
            let images = read_images(&folder, &repeat_plan)?;
            check_dealt_from_splits(&folder, &images, config)?;
            check_folds_data(&folder, &repeat_plan, &images, true)?;
        } else {
            prepare(&folder, &repeat_config(config, repeat), folds, 1)?;
        }
    }
    if !planned {
        crate::fsutil::write_json_atomic(&dir.join(CV_PLAN_FILE), &plan)?;
        tracing::info!(
            "cross-validation in {}: {} images in {folds} folds of {:?} held-out images{}",
            dir.display(),
            plan.images,
            plan.fold_images,
            if repeats > 1 { format!(", {repeats} times with other folds") } else { String::new() }
        );
    }
    Ok(plan)
}

/// A folder without a plan may hold only what a set-up cut short leaves behind: `images.csv`,
/// `fold_<k>/data/`, and repeat folders that are the same or planned. Anything else (a run
/// folder, which would be taken as finished, a user's file, a file named like a folder) is
/// refused before anything is written.
fn check_unplanned(dir: &Path) -> Result<()> {
    let numbered = |name: &str, prefix: &str| name.strip_prefix(prefix).is_some_and(|n| n.parse::<usize>().is_ok());
    check_plan_not_lost(dir)?;
    crate::fsutil::check_new_folder(dir, "a cross-validation folder", |name| {
        name == IMAGES_FILE || numbered(name, "fold_") || numbered(name, "repeat_")
    })?;
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
    for entry in entries.flatten() {
        let (name, path) = (entry.file_name().to_string_lossy().into_owned(), entry.path());
        let folder = numbered(&name, "fold_") || numbered(&name, "repeat_");
        if folder && !path.is_dir() {
            bail!("{} is in the way: a cross-validation needs a folder there", path.display());
        }
        if numbered(&name, "fold_") {
            crate::fsutil::check_new_folder(&path, "a fold not yet started", |name| name == "data")?;
        } else if numbered(&name, "repeat_") && !is_cv_folder(&path) {
            check_unplanned(&path)?;
        }
    }
    Ok(())
}
