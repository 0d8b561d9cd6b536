//! The epoch loop. Each epoch sets the phase (backbone frozen or not, with a fresh
//! optimiser and schedule when a phase starts) and the learning rates, trains
//! ([`super::epoch`]), validates and keeps the best model ([`super::selection`]), then
//! saves the checkpoint and the history. The loop pauses resumably when a stop is
//! requested or `stop_after_epochs` is reached.

use anyhow::{bail, Result};
use tch::Tensor;

use super::artifacts::{log_epoch_scalars, write_history};
use super::checkpoint::{CheckpointContents, Restored};
use super::epoch::{train_epoch, EpochEnd};
use super::optim::Optimizer;
use super::schedule::LrSchedule;
use super::selection::{validate_epoch, BestWeights};
use super::session::Session;
use super::state::EpochRecord;
use super::state::TrainingState;
use super::{TrainEnd, TrainOptions};
use crate::model::{BACKBONE_GROUP, HEAD_GROUP};
use crate::stop::{Outcome, StopReason, Stopped};

struct Fit<'a> {
    session: &'a mut Session,
    options: &'a TrainOptions,
    state: TrainingState,
    optimizer: Option<Optimizer>,
    /// A resumed run's optimiser moments, for the optimiser rebuilt mid-phase.
    restored_optimizer: Option<Vec<(String, Tensor)>>,
    schedule: LrSchedule,
    best_weights: BestWeights,
    epochs_this_run: usize,
}

/// Runs the remaining epochs from `state` (a new run's default, or a checkpoint's), then
/// the final evaluation.
pub(super) fn fit(
    session: &mut Session,
    state: TrainingState,
    restored: Option<Restored>,
    options: &TrainOptions,
) -> Result<TrainEnd> {
    let t = &session.config.training;
    let schedule = state
        .schedule
        .clone()
        .unwrap_or_else(|| LrSchedule::new(t.scheduler, t.epochs, t.warmup_epochs, t.scheduler_patience));
    let (restored_optimizer, best_weights) = match restored {
        Some(r) => (Some(r.optimizer), r.best),
        None => (None, None),
    };
    let mut fit = Fit {
        session,
        options,
        state,
        optimizer: None,
        restored_optimizer,
        schedule,
        best_weights,
        epochs_this_run: 0,
    };
    let epochs = fit.session.config.training.epochs;
    while fit.state.next_epoch < epochs && !fit.state.stopped_early {
        let epoch = fit.state.next_epoch;
        let (lr_head, lr_backbone) = fit.begin_epoch(epoch)?;
        let optimizer = fit.optimizer.as_mut().expect("optimizer built");
        if train_epoch(fit.session, optimizer, &mut fit.state, epoch, &options.stop)? == EpochEnd::Stopped {
            return fit.pause_mid_epoch(epoch);
        }
        let record = fit.take_epoch_record(epoch, lr_head, lr_backbone);
        fit.end_epoch(record)?;
        if let Some(end) = fit.pause_between_epochs() {
            return Ok(end);
        }
    }
    let Fit { session, state, best_weights, .. } = fit;
    super::finish::finish(session, state, best_weights, &options.stop)
}

impl Fit<'_> {
    /// Sets the phase and the learning rates of `epoch` (0-based); returns (head, backbone) rates.
    fn begin_epoch(&mut self, epoch: usize) -> Result<(f64, f64)> {
        let t = &self.session.config.training;
        let freeze_epochs = self.session.config.frozen_epochs();
        let frozen = epoch < freeze_epochs;
        self.session.model.set_backbone_frozen(frozen);
        let phase_starts = epoch == 0 || (epoch == freeze_epochs && freeze_epochs > 0);
        if phase_starts && self.state.next_batch == 0 {
            self.optimizer = Some(Optimizer::new(t.optimizer, t.weight_decay, &self.session.model.vs));
            let phase_epochs = if frozen { freeze_epochs } else { t.epochs - freeze_epochs };
            self.schedule = LrSchedule::new(t.scheduler, phase_epochs, t.warmup_epochs, t.scheduler_patience);
            self.state.phase_start = epoch;
            if epoch > 0 {
                tracing::info!("epoch {}: backbone unfrozen; optimiser and scheduler rebuilt", epoch + 1);
            }
        } else if self.optimizer.is_none() {
            let mut optimizer = Optimizer::new(t.optimizer, t.weight_decay, &self.session.model.vs);
            if let Some(moments) = &self.restored_optimizer {
                optimizer.load_state(moments, self.state.optimizer_steps.clone())?;
            }
            self.optimizer = Some(optimizer);
        }
        let factor = self.schedule.factor(epoch - self.state.phase_start);
        let lr_head = t.learning_rate * factor;
        let lr_backbone = if frozen { 0.0 } else { t.effective_backbone_lr() * factor };
        let optimizer = self.optimizer.as_mut().expect("optimizer built");
        optimizer.set_lr(HEAD_GROUP, lr_head);
        optimizer.set_lr(BACKBONE_GROUP, lr_backbone);
        Ok((lr_head, lr_backbone))
    }

    /// The finished epoch's training figures; the partial sums restart for the next epoch.
    fn take_epoch_record(&mut self, epoch: usize, lr_head: f64, lr_backbone: f64) -> EpochRecord {
        let partial = std::mem::take(&mut self.state.partial);
        self.state.next_batch = 0;
        let seen = partial.seen.max(1) as f64;
        EpochRecord {
            epoch: epoch + 1,
            backbone_frozen: self.session.model.backbone_frozen(),
            train_loss: partial.loss_sum / seen,
            train_accuracy: partial.correct as f64 / seen,
            val_loss: None,
            val_accuracy: None,
            val_f1_macro: None,
            val_f1_weighted: None,
            lr_head,
            lr_backbone,
            seconds: partial.seconds,
            images_per_second: partial.seen as f64 / partial.seconds.max(1e-9),
        }
    }

    /// Validation, history, the checkpoint and the numbered model of a finished epoch.
    fn end_epoch(&mut self, mut record: EpochRecord) -> Result<()> {
        self.check_not_diverged(&record)?;
        validate_epoch(self.session, &mut self.state, &mut self.best_weights, &mut self.schedule, &mut record)?;
        log_epoch_scalars(self.session.events.as_mut(), &record);
        let epochs_done = record.epoch;
        self.state.history.push(record);
        self.state.next_epoch = epochs_done;
        self.save_checkpoint()?;
        let save_frequency = self.session.config.logging.save_frequency;
        if save_frequency > 0 && epochs_done % save_frequency == 0 {
            self.session.eval_model().save(&self.session.folder.numbered_checkpoint(epochs_done))?;
        }
        write_history(&self.session.folder, &self.state)?;
        self.epochs_this_run += 1;
        Ok(())
    }

    /// A run whose loss or weights went NaN or infinite stops as failed before this epoch
    /// touches a checkpoint, the best model or the copy in `paths.model_dir`: nothing it would
    /// write could predict.
    fn check_not_diverged(&self, record: &EpochRecord) -> Result<()> {
        let bad_variable = self.session.model.first_non_finite_variable();
        if record.train_loss.is_finite() && bad_variable.is_none() {
            return Ok(());
        }
        let what = match &bad_variable {
            Some(name) => format!("weight `{name}` holds NaN or infinite values"),
            None => format!("the mean training loss is {}", record.train_loss),
        };
        let t = &self.session.config.training;
        bail!(
            "training diverged in epoch {}: {what}. Nothing of this epoch was kept (any checkpoint and best model are from \
             earlier epochs). Lower training.learning_rate ({}), training.backbone_lr, training.weight_decay ({}) or \
             augmentation.mixup_alpha ({})",
            record.epoch,
            t.learning_rate,
            t.weight_decay,
            self.session.config.augmentation.mixup_alpha
        )
    }

    fn save_checkpoint(&mut self) -> Result<()> {
        let optimizer = self.optimizer.as_ref().expect("optimizer built");
        self.state.schedule = Some(self.schedule.clone());
        self.state.optimizer_steps = optimizer.steps();
        self.state.ema_updates = self.session.ema.as_ref().map_or(0, |ema| ema.updates);
        CheckpointContents {
            config: &self.session.config,
            model: &self.session.model,
            ema: self.session.ema.as_ref().map(|ema| &ema.model),
            optimizer,
            state: &self.state,
            best: self.best_weights.as_deref(),
        }
        .save(&self.session.folder.latest_checkpoint())
    }

    fn pause_mid_epoch(&mut self, epoch: usize) -> Result<TrainEnd> {
        self.state.next_epoch = epoch;
        self.save_checkpoint()?;
        tracing::warn!(
            "interrupted in epoch {} after batch {}; checkpoint saved. Resume with: train --resume {}",
            epoch + 1,
            self.state.next_batch,
            self.session.folder.dir().display()
        );
        Ok(self.paused(epoch, StopReason::Interrupted))
    }

    /// After a finished epoch with more to do: a pause when `stop_after_epochs` is reached
    /// or a stop was requested.
    fn pause_between_epochs(&self) -> Option<TrainEnd> {
        let epochs_done = self.state.next_epoch;
        let more_to_do = epochs_done < self.session.config.training.epochs && !self.state.stopped_early;
        if !more_to_do {
            return None;
        }
        let resume_hint = format!("train --resume {}", self.session.folder.dir().display());
        if self.options.stop_after_epochs.is_some_and(|n| self.epochs_this_run >= n) {
            tracing::info!("stopping after {} epoch(s) as asked; resume with: {resume_hint}", self.epochs_this_run);
            return Some(self.paused(epochs_done, StopReason::StopAfter));
        }
        if self.options.stop.is_raised() {
            tracing::warn!("interrupted after epoch {epochs_done}; checkpoint saved. Resume with: {resume_hint}");
            return Some(self.paused(epochs_done, StopReason::Interrupted));
        }
        None
    }

    fn paused(&self, epochs_done: usize, reason: StopReason) -> TrainEnd {
        let run_dir = self.session.folder.dir();
        let message = format!("paused after {epochs_done} epoch(s); resume with: train --resume {}", run_dir.display());
        Outcome::Stopped(Stopped { reason, kept_in: Some(run_dir.to_path_buf()), message })
    }
}
