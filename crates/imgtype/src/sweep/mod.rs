//! Hyper-parameter sweeps, as the Python system's `tune_hyperparameters.py`: a sweep file
//! names a base config and experiments (dotted-key overrides, or a grid sampled down to
//! `max_experiments`); each experiment is a normal training run in its own folder of the
//! sweep folder; the results are tabled and the winner's config written out. Checked up
//! front (`plan`), run resumably and spread over a job array (`run`), summarised from
//! whatever has finished (`results`).

mod layout;
mod plan;
mod results;
mod run;

pub use layout::PLAN_FILE;
pub(crate) use layout::{observed_state, runs_not_as_planned, Observed};
pub use plan::{apply_overrides, plan, EpochsOverride, Experiment, NamedExperiment, SweepFile};
pub use results::{summarize, ExperimentResult, Summary};
pub use run::{resume_sweep, run_sweep, Member, SweepEnd, SweepOptions, SweepReport};
pub(crate) use run::{run_planned, PlannedRun, RunCounts};
