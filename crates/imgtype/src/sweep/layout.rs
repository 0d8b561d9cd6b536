//! The sweep folder's on-disk contract, read by the runner and the summary alike: the plan
//! record (`sweep_plan.json`), and where each experiment's run folder stands.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::plan::{EpochsOverride, NamedExperiment};
use crate::config::Config;
use crate::train::{RunLayout, RunStatus};

/// What the sweep folder records about its plan, so a rerun continues the same sweep and
/// `--summarize` knows every experiment, finished or not.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub(super) struct PlanRecord {
    pub base_config: serde_json::Value,
    pub epochs: Option<usize>,
    /// `--quick-test` (older plans have no such key: false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub quick_test: bool,
    pub experiments: Vec<NamedExperiment>,
}

impl PlanRecord {
    /// An experiment's config as the plan builds it for its run: the base config, the
    /// experiment's overrides, then `--epochs` or `--quick-test`.
    pub fn experiment_config(&self, experiment: &NamedExperiment, dir: &Path) -> anyhow::Result<Config> {
        let mut config = super::plan::apply_overrides(&self.base()?, &experiment.overrides)?;
        place_experiment(&mut config, dir);
        let epochs = match (self.epochs, self.quick_test) {
            (Some(epochs), _) => Some(EpochsOverride::Epochs(epochs)),
            (None, true) => Some(EpochsOverride::QuickTest),
            (None, false) => None,
        };
        if let Some(epochs) = epochs {
            epochs.apply(&mut config);
        }
        Ok(config)
    }

    /// The plan recorded in the sweep folder `dir`, its base config a valid config.
    pub fn read(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join(PLAN_FILE);
        if !crate::fsutil::is_present(&path) {
            anyhow::bail!("{} is not a sweep folder (no {PLAN_FILE})", dir.display());
        }
        let plan: Self =
            crate::fsutil::read_json(&path).with_context(|| format!("{} is not a sweep plan", path.display()))?;
        plan.check().with_context(|| format!("{} is not a sweep plan", path.display()))?;
        Ok(plan)
    }

    /// What `--sweep` checks of its file holds of the plan: an edited or damaged plan is refused
    /// before anything runs, never an experiment folder outside the sweep folder.
    fn check(&self) -> anyhow::Result<()> {
        self.base()?.validate()?;
        if let Some(epochs) = self.epochs.filter(|e| !(1..=crate::config::MAX_EPOCHS).contains(e)) {
            anyhow::bail!("`epochs` is {epochs}, not between 1 and {}", crate::config::MAX_EPOCHS);
        }
        super::plan::check_experiment_names(self.experiments.iter().map(|e| e.name.as_str()))
    }

    /// The base config every experiment starts from.
    pub fn base(&self) -> anyhow::Result<Config> {
        serde_json::from_value(self.base_config.clone()).context("`base_config` is not a config")
    }
}

/// An experiment's run folder and best-model copy, inside its folder `dir` of the sweep folder.
pub(super) fn place_experiment(config: &mut Config, dir: &Path) {
    config.paths.result_dir = dir.to_path_buf();
    config.paths.model_dir = dir.join("models");
}

pub const PLAN_FILE: &str = "sweep_plan.json";

pub(crate) enum ExperimentState {
    Finished(PathBuf),
    Resumable(PathBuf),
    Fresh,
}

/// Where an experiment's folder stands, for running it (the caller holds the experiment
/// folder's lock). A run with a checkpoint, failed or not, is resumed from it; run folders that
/// stopped (or failed) before their first checkpoint are removed: the experiment starts over;
/// one that another process holds (a `train --resume` of it) is never removed: that is an error.
pub(crate) fn experiment_state(dir: &Path) -> anyhow::Result<ExperimentState> {
    let mut state = ExperimentState::Fresh;
    for run in run_folders(dir) {
        match run_status(&run).with_context(|| format!("{}: not resumed or replaced", run.display()))? {
            Some(RunStatus::Finished) => return Ok(ExperimentState::Finished(run)),
            // A run that failed after a checkpoint (a resume that could not read its split files,
            // a divergence) goes on from it: its epochs are not thrown away.
            status if is_kept(status, &run) => state = ExperimentState::Resumable(run),
            _ => {
                let _lock = crate::fsutil::FolderLock::acquire(&run, "removing it")?;
                // A model is saved after a checkpoint: one without it lost files, never removed.
                let models = RunLayout::of(&run).map(|l| [l.best_model(), l.last_model()]).into_iter().flatten();
                if let Some(model) = models.into_iter().find(|m| m.exists()) {
                    anyhow::bail!(
                        "{} holds a trained model ({}) but no checkpoint to resume from and no finished \
                         final_results.json: its files were removed or moved; put them back, or move the run folder \
                         away to train again",
                        run.display(),
                        model.display()
                    );
                }
                tracing::warn!("removing {}: it failed or stopped before its first checkpoint", run.display());
                let _ = std::fs::remove_dir_all(&run);
            }
        }
    }
    Ok(state)
}

/// Whether a rerun keeps the run `run` that ended as `status`: skipped as finished, or resumed
/// from its checkpoint (others are removed, the experiment or fold starting over).
fn is_kept(status: Option<RunStatus>, run: &Path) -> bool {
    status == Some(RunStatus::Finished)
        || RunLayout::of(run).is_ok_and(|layout| crate::fsutil::is_present(&layout.latest_checkpoint()))
}

/// What a summary sees in an experiment's folder; unlike [`experiment_state`] it removes
/// nothing: a run folder without a checkpoint yet may be a job array's member at work.
pub(crate) enum Observed {
    Finished(PathBuf),
    /// Not finished: at work, interrupted, or stopped before its first checkpoint.
    Running(PathBuf),
    Failed,
    Missing,
}

impl Observed {
    pub fn status(&self) -> &'static str {
        match self {
            Observed::Finished(_) => "finished",
            Observed::Running(_) => "running",
            Observed::Failed => "failed",
            Observed::Missing => "missing",
        }
    }
}

pub(crate) fn observed_state(dir: &Path) -> anyhow::Result<Observed> {
    let mut state = Observed::Missing;
    for run in run_folders(dir) {
        match run_status(&run)? {
            Some(RunStatus::Finished) => return Ok(Observed::Finished(run)),
            Some(RunStatus::Failed) if matches!(state, Observed::Missing) => state = Observed::Failed,
            Some(RunStatus::Failed) => {}
            None => state = Observed::Running(run),
        }
    }
    Ok(state)
}

/// The `run_…` folders in `dir`, oldest first.
fn run_folders(dir: &Path) -> Vec<PathBuf> {
    let mut runs: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir() && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("run_")))
        .collect();
    runs.sort();
    runs
}

/// `final_results.json`'s status, when the run wrote one (the file lies at the run
/// folder's top, whatever its config).
/// How the run in `run` ended: `None` while it has no `final_results.json` (at work,
/// interrupted, or its folder not yet written); an error when that file is there but cannot be
/// read (copied, edited, damaged), so that nobody takes such a run for one still at work.
pub(super) fn run_status(run: &Path) -> anyhow::Result<Option<RunStatus>> {
    let layout = match RunLayout::of(run) {
        Ok(layout) => layout,
        // A folder just made, its config not written yet (a member at work), holds no file;
        // one that does lost its config (deleted, cut, edited), and is damage, not a run
        // to remove and start over.
        Err(error) if holds_a_file(run, 32) => {
            return Err(error.context(
                "its config.json cannot be read: put it back, or move the run folder away to train the run again",
            ))
        }
        Err(_) => return Ok(None),
    };
    if !crate::fsutil::is_present(&layout.final_results()) {
        return Ok(None);
    }
    Ok(Some(layout.read_final_results()?.status))
}

/// Refuses the run in `run` unless it was started with `planned` (written down in `plan_file`
/// of the sweep or cross-validation folder `root`): its `config.json` must agree on every key.
/// A path inside `root` (a fold's split files, the run's own folder) is compared by where it
/// leads inside its folder, since the folder may have been moved; one outside it (a sweep's
/// split files) as it is. A run folder copied in from another fold, experiment or plan, or a
/// plan edited after the run began, is named key by key, never counted or resumed as planned.
pub(crate) fn check_trained_as_planned(
    run: &Path,
    planned: &Config,
    plan_file: &Path,
    root: &Path,
) -> anyhow::Result<()> {
    let mut started = RunLayout::started_config(run)?;
    let planned_paths = &planned.paths;
    for (theirs, ours) in [
        (&mut started.paths.data_dir, &planned_paths.data_dir),
        (&mut started.paths.model_dir, &planned_paths.model_dir),
        (&mut started.paths.result_dir, &planned_paths.result_dir),
    ] {
        if ours.strip_prefix(root).is_ok_and(|inside| theirs.ends_with(inside) && !inside.as_os_str().is_empty()) {
            *theirs = ours.clone();
        }
    }
    let plan_file = plan_file.display().to_string();
    if let Some(what) = crate::config::describe_differences(&started, "its config.json", planned, &plan_file) {
        anyhow::bail!(
            "{} was not trained as planned ({what}): the plan was edited after the run began, or the run comes \
             from elsewhere; put the plan back, or move the run folder away to train it again",
            run.display()
        );
    }
    let data = &planned.paths.data_dir;
    let split_files = || format!("{}: the split files in {}", run.display(), crate::train::data_dir_named(data));
    if crate::train::began_with_other_split_files(run, data).with_context(split_files)? {
        anyhow::bail!(
            "{} was trained on other split files than {} holds (changed since, the run comes from another sweep or \
             cross-validation, or `{}` is relative to another working folder); move the run folder away to train \
             it again",
            run.display(),
            data.display(),
            data.display()
        );
    }
    Ok(())
}

/// The runs in the experiment or fold folder `dir` that would be skipped as finished or resumed
/// yet were not started as planned ([`check_trained_as_planned`]), and those whose files are
/// damaged, each with why.
pub(crate) fn runs_not_as_planned(
    dir: &Path,
    planned: &Config,
    plan_file: &Path,
    root: &Path,
) -> Vec<(PathBuf, anyhow::Error)> {
    let mut refused = Vec::new();
    for run in run_folders(dir) {
        match run_status(&run) {
            Ok(status) if is_kept(status, &run) => {}
            Ok(_) => continue,
            // Damage stops the command before anything trains, as it would at the run's turn.
            Err(error) => {
                let error = error.context(format!("{}: not resumed or replaced", run.display()));
                refused.push((run, error));
                continue;
            }
        }
        if let Err(error) = check_trained_as_planned(&run, planned, plan_file, root) {
            refused.push((run, error));
        }
    }
    refused
}

/// Whether `dir` or a folder below it (links not followed) holds anything but folders, its lock
/// and temp files; a tree deeper than `depth` counts as holding something.
fn holds_a_file(dir: &Path, depth: usize) -> bool {
    let ours = |name: &str| name == crate::fsutil::LOCK_FILE || name.starts_with(crate::fsutil::TEMP_PREFIX);
    std::fs::read_dir(dir).into_iter().flatten().flatten().any(|entry| match entry.file_type() {
        Ok(kind) if kind.is_dir() => depth == 0 || holds_a_file(&entry.path(), depth - 1),
        _ => !ours(&entry.file_name().to_string_lossy()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run folder in `root/<experiment>/` started with `config`.
    fn started(root: &Path, experiment: &str, config: &Config) -> PathBuf {
        let run = root.join(experiment).join("run_20260101_000000_00000000");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(run.join("config.json"), config.to_json_pretty()).unwrap();
        // As a run from before split files were recorded: only the config is compared.
        std::fs::write(run.join("run_metadata.json"), r#"{"run_id": "run_20260101_000000_00000000"}"#).unwrap();
        run
    }

    fn placed(root: &Path, experiment: &str) -> Config {
        let mut config = Config::default();
        config.paths.data_dir = PathBuf::from("data");
        place_experiment(&mut config, &root.join(experiment));
        config
    }

    #[test]
    fn paths_inside_the_folder_are_compared_where_they_lead_and_others_as_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let (before, now) = (dir.path().join("sweep"), dir.path().join("elsewhere/moved"));
        let plan = now.join(PLAN_FILE);
        // Moved: its own folders differ only by where the sweep folder is.
        let run = started(&now, "a", &placed(&before, "a"));
        check_trained_as_planned(&run, &placed(&now, "a"), &plan, &now).unwrap();
        // Another experiment's run, or one trained on other split files, is refused.
        let run = started(&now, "b", &placed(&before, "a"));
        let error = format!("{:#}", check_trained_as_planned(&run, &placed(&now, "b"), &plan, &now).unwrap_err());
        assert!(error.contains("`paths.model_dir`"), "{error}");
        let mut other_data = placed(&before, "c");
        other_data.paths.data_dir = PathBuf::from("other_data");
        let run = started(&now, "c", &other_data);
        let error = format!("{:#}", check_trained_as_planned(&run, &placed(&now, "c"), &plan, &now).unwrap_err());
        assert!(error.contains("`paths.data_dir` is \"other_data\" in its config.json, \"data\" in"), "{error}");
    }
}
