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
    pub fn experiment_config(&self, experiment: &NamedExperiment) -> anyhow::Result<Config> {
        let base: Config = serde_json::from_value(self.base_config.clone()).context("`base_config`")?;
        let mut config = super::plan::apply_overrides(&base, &experiment.overrides)?;
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
}

pub const PLAN_FILE: &str = "sweep_plan.json";

pub(crate) enum ExperimentState {
    Finished(PathBuf),
    Resumable(PathBuf),
    Fresh,
}

/// Where an experiment's folder stands, for running it (the caller holds the experiment
/// folder's lock). Run folders that failed, or stopped before their first checkpoint, are
/// removed: the experiment starts over; one that another process holds (a `train --resume`
/// of it) is never removed: that is an error.
pub(crate) fn experiment_state(dir: &Path) -> anyhow::Result<ExperimentState> {
    let mut state = ExperimentState::Fresh;
    for run in run_folders(dir) {
        match run_status(&run).with_context(|| format!("{}: not resumed or replaced", run.display()))? {
            Some(RunStatus::Finished) => return Ok(ExperimentState::Finished(run)),
            None if RunLayout::of(&run).is_ok_and(|layout| crate::fsutil::is_present(&layout.latest_checkpoint())) => {
                state = ExperimentState::Resumable(run);
            }
            _ => {
                let _lock = crate::fsutil::FolderLock::acquire(&run, "removing it")?;
                tracing::warn!("removing {}: it failed or stopped before its first checkpoint", run.display());
                let _ = std::fs::remove_dir_all(&run);
            }
        }
    }
    Ok(state)
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
    let Ok(layout) = RunLayout::of(run) else { return Ok(None) };
    if !crate::fsutil::is_present(&layout.final_results()) {
        return Ok(None);
    }
    Ok(Some(layout.read_final_results()?.status))
}

/// Refuses the run in `run` unless it was started with `planned` (written down in `plan_file`):
/// its `config.json` must agree on every key but `paths`, which say where the folders were then
/// (a sweep or cross-validation moved elsewhere still counts). A run folder copied in from
/// another sweep or cross-validation, or a plan edited after the run began, is named key by key,
/// never counted or resumed as the planned run.
pub(crate) fn check_trained_as_planned(run: &Path, planned: &Config, plan_file: &Path) -> anyhow::Result<()> {
    let mut started = RunLayout::started_config(run)?;
    let mut planned = planned.clone();
    started.paths = Default::default();
    planned.paths = Default::default();
    let plan_file = plan_file.display().to_string();
    if let Some(what) = crate::config::describe_differences(&started, "its config.json", &planned, &plan_file) {
        anyhow::bail!(
            "{} was not trained as planned ({what}): the plan was edited after the run began, or the run comes \
             from elsewhere; put the plan back, or move the run folder away to train it again",
            run.display()
        );
    }
    Ok(())
}
