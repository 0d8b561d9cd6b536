//! `train`: one config drives a run that writes its config, metadata, per-epoch metrics,
//! checkpoints, the best model and the test-split evaluation into its [`RunFolder`]. A run
//! can be stopped (a raised [`StopFlag`], or `stop_after_epochs`) and resumed from its
//! latest checkpoint with the same outcome as an uninterrupted run: every random draw is
//! derived from (seed, epoch, batch).
//!
//! The phases, in order: `run_folder` (create, or reopen to resume), `session` (splits
//! from `splits`, model, loss), `fit` (the epoch loop: `epoch` trains one epoch, `selection`
//! validates and keeps the best model, `checkpoint` saves the state), `finish` (the test
//! evaluation). `artifacts` writes the files a run leaves besides models and checkpoints.

mod artifacts;
mod calibrate;
pub mod checkpoint;
mod curves;
mod ema;
mod epoch;
mod finish;
mod fit;
pub mod optim;
pub mod pipeline;
mod run_files;
mod run_folder;
pub mod schedule;
mod selection;
mod session;
mod splits;
pub use splits::split_files_fingerprint;
mod state;
mod tensorboard;
mod test_predictions;

use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;

pub use ema::{ema_decay_after, Ema};
pub use run_files::{
    CalibrationReport, EvaluationResults, FinalResults, FinishedRun, RunLayout, RunStatus, TrainingResults,
};
pub use run_folder::{began_with_other_split_files, data_dir_named, RunFolder};
pub use state::{EpochRecord, TrainingState};
pub use test_predictions::{PredictionRow, TestPredictions};

use crate::eval::Metrics;
use crate::StopFlag;

#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Stop (resumably) after this many epochs in this invocation.
    pub stop_after_epochs: Option<usize>,
    /// Raised from outside (e.g. on SIGINT): finish the current step, save a checkpoint, pause.
    pub stop: StopFlag,
}

#[derive(Debug, Serialize)]
pub struct TrainOutcome {
    pub run_dir: PathBuf,
    pub best_model: Option<PathBuf>,
    pub best_epoch: Option<usize>,
    pub test_metrics: Metrics,
    pub skipped_images: usize,
}

/// How training ends: finished, or stopped with a checkpoint (`Stopped::kept_in` is the run
/// folder; `train --resume RUN_DIR` continues it).
pub type TrainEnd = crate::stop::Outcome<TrainOutcome>;

/// Trains in `folder`: a new run from its first epoch, a reopened one from its latest
/// checkpoint. A run that fails says why in its `final_results.json` (status "failed").
pub fn train(folder: RunFolder, options: &TrainOptions) -> Result<TrainEnd> {
    let (layout, run_id) = (folder.layout().clone(), folder.run_id());
    let result = start_or_resume(folder, options);
    if let Err(error) = &result {
        artifacts::write_failed_results(&layout, &run_id, error);
    }
    result
}

fn start_or_resume(folder: RunFolder, options: &TrainOptions) -> Result<TrainEnd> {
    tracing::info!("run folder: {}", folder.dir().display());
    let checkpoint_path = folder.latest_checkpoint();
    let resumed = folder.is_resumed();
    let mut session = session::Session::open(folder)?;
    if !resumed {
        return fit::fit(&mut session, TrainingState::default(), None, options);
    }
    let restored =
        checkpoint::load(&checkpoint_path, &mut session.model, session.ema.as_mut().map(|ema| &mut ema.model))?;
    if let Some(ema) = session.ema.as_mut() {
        ema.updates = restored.state.ema_updates;
    }
    if restored.state.finished {
        // Reopening refused a run whose final_results.json says it finished: here that file
        // was removed or spoilt after the run finished. Its final evaluation is done again from
        // the checkpoint's best weights, as the run did it, rather than the run lost.
        tracing::warn!(
            "{}: the run finished, but its final_results.json is missing or not a finished run's: its final \
             evaluation is done again",
            session.folder.dir().display()
        );
        let state = TrainingState { finished: false, ..restored.state.clone() };
        return fit::fit(&mut session, state, Some(restored), options);
    }
    tracing::info!(
        "resuming {} at epoch {} batch {}",
        session.folder.dir().display(),
        restored.state.next_epoch + 1,
        restored.state.next_batch + 1
    );
    let state = restored.state.clone();
    fit::fit(&mut session, state, Some(restored), options)
}
