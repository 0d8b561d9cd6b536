//! Running a sweep: each experiment a normal run folder under `SWEEP_DIR/<name>/`, finished
//! ones skipped and an interrupted one resumed from its checkpoint when the same command
//! runs again; `--member K/N` runs experiments i with i mod N = K, for a job array.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::layout::{experiment_state, ExperimentState, PlanRecord, PLAN_FILE};
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
    let (mut ran, mut skipped, mut failed) = (0, 0, 0);
    for (position, experiment) in experiments.iter().enumerate() {
        if options.member.is_some_and(|m| !m.runs(position)) {
            continue;
        }
        let dir = sweep_dir.join(&experiment.name);
        let folder = match experiment_state(&dir) {
            ExperimentState::Finished(run) => {
                tracing::info!("experiment {}: finished earlier ({}), skipped", experiment.name, run.display());
                skipped += 1;
                continue;
            }
            ExperimentState::Resumable(run) => {
                tracing::info!("experiment {}: resuming {}", experiment.name, run.display());
                RunFolder::reopen(&run)?
            }
            ExperimentState::Fresh => {
                tracing::info!(
                    "experiment {} ({}/{}): {}",
                    experiment.name,
                    position + 1,
                    experiments.len(),
                    describe(experiment)
                );
                RunFolder::create(&experiment_config(experiment, &dir), None)?
            }
        };
        match crate::train::train(folder, &options.train) {
            Ok(Outcome::Finished(_)) => ran += 1,
            Ok(Outcome::Stopped(Stopped { reason: StopReason::Interrupted, .. })) => {
                let message =
                    format!("interrupted in experiment {}; run the same command to continue", experiment.name);
                return Ok(Outcome::Stopped(Stopped::interrupted(Some(sweep_dir), message)));
            }
            Ok(Outcome::Stopped(Stopped { reason: StopReason::StopAfter, .. })) => {
                bail!("experiment {} paused: --stop-after is not for sweeps", experiment.name)
            }
            Err(e) => {
                // Its run folder records the failure; the next experiments still run.
                tracing::error!("experiment {} failed: {e:#}", experiment.name);
                failed += 1;
            }
        }
    }
    // A member leaves the summary to `--summarize`: the others may still be running.
    let summary = if options.member.is_none() { Some(super::results::summarize(&sweep_dir)?) } else { None };
    Ok(Outcome::Finished(SweepReport { sweep_dir, ran, skipped, failed, summary }))
}

fn describe(experiment: &Experiment) -> String {
    if experiment.overrides.is_empty() {
        return "the base config".into();
    }
    experiment.overrides.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
}

/// The experiment's config, with its run folder and best-model copy inside its own folder.
fn experiment_config(experiment: &Experiment, dir: &Path) -> Config {
    let mut config = experiment.config.clone();
    config.paths.result_dir = dir.to_path_buf();
    config.paths.model_dir = dir.join("models");
    config
}

/// Writes the plan into a new sweep folder, or checks that an existing one has the same.
fn record_plan(dir: &Path, base: &Config, epochs: Option<EpochsOverride>, experiments: &[Experiment]) -> Result<()> {
    let record = PlanRecord {
        base_config: serde_json::to_value(base).expect("a config serialises"),
        epochs: epochs.map(|e| e.0),
        experiments: experiments
            .iter()
            .map(|e| NamedExperiment { name: e.name.clone(), overrides: e.overrides.clone() })
            .collect(),
    };
    let path = dir.join(PLAN_FILE);
    if path.is_file() {
        let existing: PlanRecord = serde_json::from_str(&std::fs::read_to_string(&path)?)
            .with_context(|| format!("{} is not a sweep plan", path.display()))?;
        if existing != record {
            bail!(
                "{} holds a sweep with another plan (base config, epochs or experiments differ): give this one \
                 its own folder with --sweep-dir",
                dir.display()
            );
        }
        return Ok(());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create sweep folder {}", dir.display()))?;
    crate::fsutil::write_json_atomic(&path, &record)
}
