//! Running a sweep: each experiment a normal run folder under `SWEEP_DIR/<name>/`, finished
//! ones skipped and an interrupted one resumed from its checkpoint when the same command
//! runs again; `--member K/N` runs experiments i with i mod N = K, for a job array.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::layout::{experiment_state, runs_not_as_planned, ExperimentState, PlanRecord, PLAN_FILE};
use super::plan::{plan, EpochsOverride, Experiment, NamedExperiment};
use crate::config::Config;
use crate::stop::{Outcome, StopReason, Stopped};
use crate::train::{RunFolder, TrainOptions};

/// This member's share of a sweep spread over N jobs (a Kubernetes Indexed Job, a Slurm array).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for Member {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Self> {
        let parsed = text.split_once('/').and_then(|(k, n)| Some((k.trim().parse().ok()?, n.trim().parse().ok()?)));
        match parsed {
            Some((index, count)) if count > 0 && index < count => Ok(Self { index, count }),
            _ => bail!("--member {text}: expected K/N with 0 ≤ K < N (as 0/4)"),
        }
    }
}

impl Member {
    pub fn runs(&self, position: usize) -> bool {
        position % self.count == self.index
    }
}

pub struct SweepOptions {
    pub epochs: Option<EpochsOverride>,
    pub member: Option<Member>,
    /// The sweep folder; default `tuning_results/<sweep file stem>/`, so the same command
    /// finds the same folder again.
    pub sweep_dir: Option<PathBuf>,
    pub train: TrainOptions,
}

/// Every experiment of this member ran (or had run); the summary when not a member.
pub struct SweepReport {
    pub sweep_dir: PathBuf,
    pub ran: usize,
    pub skipped: usize,
    pub failed: usize,
    pub summary: Option<super::Summary>,
}

/// How a sweep ends: every experiment done, or stopped inside one (`Stopped::kept_in` is the
/// sweep folder; the same command resumes it).
pub type SweepEnd = Outcome<SweepReport>;

/// Runs the sweep `path` describes (this member's part of it).
pub fn run_sweep(path: &Path, options: &SweepOptions) -> Result<SweepEnd> {
    let (_, base, experiments) = plan(path, options.epochs)?;
    let sweep_dir = match &options.sweep_dir {
        Some(dir) => dir.clone(),
        None => {
            let stem = path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "sweep".into());
            Path::new("tuning_results").join(stem)
        }
    };
    record_plan(&sweep_dir, &base, options.epochs, &experiments)?;
    let runs: Vec<PlannedRun> = experiments
        .iter()
        .map(|e| planned_run(&sweep_dir, &e.name, &e.overrides, experiment_config(e, &sweep_dir.join(&e.name))))
        .collect();
    run_experiments(sweep_dir, &runs, options, "run the same command to continue")
}

/// Continues the sweep in `dir` with the plan it records (`sweep_plan.json`), without its sweep
/// file: what a rerun of its command would do.
pub fn resume_sweep(dir: &Path, options: &SweepOptions) -> Result<SweepEnd> {
    let plan = PlanRecord::read(dir)?;
    let runs = plan
        .experiments
        .iter()
        .map(|e| Ok(planned_run(dir, &e.name, &e.overrides, plan.experiment_config(e, &dir.join(&e.name))?)))
        .collect::<Result<Vec<PlannedRun>>>()?;
    let how = format!("continue with `train --resume {}`", dir.display());
    run_experiments(dir.to_path_buf(), &runs, options, &how)
}

fn planned_run(sweep_dir: &Path, name: &str, overrides: &BTreeMap<String, Value>, config: Config) -> PlannedRun {
    PlannedRun {
        name: name.to_string(),
        label: format!("experiment {name}"),
        config,
        plan_file: sweep_dir.join(PLAN_FILE),
        description: describe(overrides),
        split_files: None,
    }
}

/// This member's experiments of the sweep in `sweep_dir`, then, when not a member, the summary.
fn run_experiments(sweep_dir: PathBuf, runs: &[PlannedRun], options: &SweepOptions, how: &str) -> Result<SweepEnd> {
    let RunCounts { ran, skipped, failed } = match run_planned(&sweep_dir, runs, options.member, &options.train, how)? {
        Outcome::Finished(counts) => counts,
        Outcome::Stopped(stopped) => return Ok(Outcome::Stopped(stopped)),
    };
    // A member leaves the summary to `--summarize`: the others may still be running.
    let summary = if options.member.is_none() { Some(super::results::summarize(&sweep_dir)?) } else { None };
    Ok(Outcome::Finished(SweepReport { sweep_dir, ran, skipped, failed, summary }))
}

/// One of a batch of training runs (a sweep's experiment, a cross-validation's fold): its
/// folder `ROOT/<name>/` (the config's `paths.result_dir`), what to log when it starts.
pub(crate) struct PlannedRun {
    pub name: String,
    /// How logs call it ("experiment lr_high", "fold 3").
    pub label: String,
    pub config: Config,
    /// Where `config` is written down: its runs are checked against it.
    pub plan_file: PathBuf,
    pub description: String,
    /// The fingerprint its split files must have (a fold's, as `images.csv` deals them): checked
    /// within the run's own read of them, so a file changed after the plan's check is never
    /// trained on. None: whatever `paths.data_dir` holds (a sweep's experiment).
    pub split_files: Option<String>,
}

pub(crate) struct RunCounts {
    pub ran: usize,
    pub skipped: usize,
    pub failed: usize,
}

/// Runs this member's share of `runs`: a finished one is skipped, an interrupted one resumed
/// from its checkpoint, a failed one recorded in its folder while the next ones still run.
/// Stopped by a signal, it says so with `root` and `how_to_continue`.
pub(crate) fn run_planned(
    root: &Path,
    runs: &[PlannedRun],
    member: Option<Member>,
    train: &TrainOptions,
    how_to_continue: &str,
) -> Result<Outcome<RunCounts>> {
    let mine = |position: usize| member.is_none_or(|m| m.runs(position));
    check_runs_to_continue(root, runs, mine)?;
    let mut counts = RunCounts { ran: 0, skipped: 0, failed: 0 };
    for (position, run) in runs.iter().enumerate() {
        if !mine(position) {
            continue;
        }
        // Held until this run ends: a second process given the same member (a replacement
        // pod while the old one still runs) stops here instead of removing a live run folder.
        let _lock = crate::fsutil::FolderLock::acquire(&root.join(&run.name), &format!("running {}", run.label))?;
        let folder = match experiment_state(&root.join(&run.name))? {
            ExperimentState::Finished(dir) => {
                tracing::info!("{}: finished earlier ({}), skipped", run.label, dir.display());
                counts.skipped += 1;
                continue;
            }
            ExperimentState::Resumable(dir) => {
                tracing::info!("{}: resuming {}", run.label, dir.display());
                let folder = RunFolder::reopen(&dir)?;
                if let Some(planned) = &run.split_files {
                    folder
                        .check_planned_split_files(planned)
                        .with_context(|| format!("{}: {}", run.label, dir.display()))?;
                }
                folder
            }
            ExperimentState::Fresh => {
                tracing::info!("{} ({}/{}): {}", run.label, position + 1, runs.len(), run.description);
                match &run.split_files {
                    Some(planned) => {
                        RunFolder::create_planned(&run.config, planned).with_context(|| run.label.clone())?
                    }
                    None => RunFolder::create(&run.config, None)?,
                }
            }
        };
        match crate::train::train(folder, train) {
            Ok(Outcome::Finished(_)) => counts.ran += 1,
            Ok(Outcome::Stopped(Stopped { reason: StopReason::Interrupted, .. })) => {
                let message = format!("interrupted in {}; {how_to_continue}", run.label);
                return Ok(Outcome::Stopped(Stopped::interrupted(Some(root.to_path_buf()), message)));
            }
            Ok(Outcome::Stopped(Stopped { reason: StopReason::StopAfter, .. })) => {
                bail!("{} paused: --stop-after is not for sweeps or cross-validation", run.label)
            }
            Err(e) => {
                // Its run folder records the failure; the next runs still go ahead.
                tracing::error!("{} failed: {e:#}", run.label);
                counts.failed += 1;
            }
        }
    }
    Ok(Outcome::Finished(counts))
}

/// Before anything trains: each run's folder is one of `root`'s own, and each of this member's
/// runs that would be skipped as finished or resumed was started as planned.
fn check_runs_to_continue(root: &Path, runs: &[PlannedRun], mine: impl Fn(usize) -> bool) -> Result<()> {
    // A run's folder is one of `root`'s own: through a link, its runs would be trained, resumed
    // or removed elsewhere.
    for run in runs {
        let folder = root.join(&run.name);
        if std::fs::symlink_metadata(&folder).is_ok_and(|m| m.file_type().is_symlink()) {
            bail!(
                "{} is a symbolic link: {}'s folder must be a folder of {} itself; put the folder there",
                folder.display(),
                run.label,
                root.display()
            );
        }
    }
    // Before anything trains: every run that would be skipped as finished or resumed was
    // started as planned.
    let refused: Vec<(PathBuf, anyhow::Error)> = runs
        .iter()
        .enumerate()
        .filter(|(position, _)| mine(*position))
        .flat_map(|(_, run)| runs_not_as_planned(&root.join(&run.name), &run.config, &run.plan_file, root))
        .collect();
    if let Some((_, first)) = refused.first() {
        let others: Vec<String> = refused[1..].iter().map(|(run, _)| run.display().to_string()).collect();
        match others.len() {
            0 => bail!("{first:#}"),
            n => bail!("{first:#}; {n} other run(s) likewise: {}", others.join(", ")),
        }
    }
    Ok(())
}

fn describe(overrides: &BTreeMap<String, Value>) -> String {
    if overrides.is_empty() {
        return "the base config".into();
    }
    overrides.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
}

/// The experiment's config, with its run folder and best-model copy inside its own folder.
fn experiment_config(experiment: &Experiment, dir: &Path) -> Config {
    let mut config = experiment.config.clone();
    super::layout::place_experiment(&mut config, dir);
    config
}

/// Writes the plan into a new sweep folder, or checks that an existing one has the same.
fn record_plan(dir: &Path, base: &Config, epochs: Option<EpochsOverride>, experiments: &[Experiment]) -> Result<()> {
    let record = PlanRecord {
        base_config: serde_json::to_value(base).expect("a config serialises"),
        epochs: match epochs {
            Some(EpochsOverride::Epochs(n)) => Some(n),
            _ => None,
        },
        quick_test: epochs == Some(EpochsOverride::QuickTest),
        experiments: experiments
            .iter()
            .map(|e| NamedExperiment { name: e.name.clone(), overrides: e.overrides.clone() })
            .collect(),
    };
    let path = dir.join(PLAN_FILE);
    if crate::fsutil::is_present(&path) {
        let existing: PlanRecord =
            crate::fsutil::read_json(&path).with_context(|| format!("{} is not a sweep plan", path.display()))?;
        if existing != record {
            bail!(
                "{} holds a sweep with another plan (base config, epochs or experiments differ): give this one \
                 its own folder with --sweep-dir",
                dir.display()
            );
        }
        return Ok(());
    }
    crate::fsutil::check_new_folder(dir, "a sweep folder", |_| false)?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create sweep folder {}", dir.display()))?;
    crate::fsutil::write_json_atomic(&path, &record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::SplitName;

    /// A fold whose split files change after the plan's check (by hand, even while the command
    /// starts) is refused within its run's own read of them, before a run folder exists.
    #[test]
    fn a_planned_run_is_refused_split_files_other_than_its_plan_deals_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("cv");
        let mut config = Config::default();
        config.paths.data_dir = root.join("fold_1/data");
        config.paths.result_dir = root.join("fold_1");
        config.paths.model_dir = root.join("fold_1/models");
        config.model.pretrained = false;
        config.data.allow_empty_train_classes = true;
        std::fs::create_dir_all(&config.paths.data_dir).unwrap();
        let class = &config.data.class_names[0];
        let write = |product: &str| {
            for split in SplitName::ALL {
                let rows = format!("product_id,image_path,image_type\n{product},{product}.jpg,{class}\n");
                std::fs::write(config.paths.data_dir.join(split.file_name()), rows).unwrap();
            }
        };
        write("p1");
        let planned = crate::train::split_files_fingerprint(&config.paths.data_dir, &[]).unwrap();
        write("p2");
        let run = PlannedRun {
            name: "fold_1".into(),
            label: "fold 1".into(),
            config: config.clone(),
            plan_file: root.join("cv_plan.json"),
            description: String::new(),
            split_files: Some(planned.clone()),
        };
        let error = run_planned(&root, &[run], None, &TrainOptions::default(), "").err().expect("refused");
        let message = format!("{error:#}");
        assert!(message.contains("fold 1") && message.contains("are not those its plan deals this run"), "{message}");
        let runs = std::fs::read_dir(root.join("fold_1")).unwrap().flatten();
        assert!(runs.filter(|e| e.file_name().to_string_lossy().starts_with("run_")).next().is_none());
        // The files the plan deals are taken.
        write("p1");
        let folder = RunFolder::create_planned(&config, &planned).unwrap();
        folder.check_planned_split_files(&planned).unwrap();
        assert!(folder.check_planned_split_files("another").is_err());
    }
}
