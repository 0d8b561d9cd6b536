//! The sweep folder's on-disk contract, read by the runner and the summary alike: the plan
//! record (`sweep_plan.json`), and where each experiment's run folder stands.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::plan::NamedExperiment;
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
