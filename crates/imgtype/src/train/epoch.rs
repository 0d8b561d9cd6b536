//! One training epoch (timm's `train_one_epoch`): the batches from the input pipeline,
//! a forward and backward pass and an optimiser step each, the EMA update, the running
//! loss and accuracy, progress, and a stop between batches when one is requested.

use std::time::Instant;

use anyhow::{anyhow, Result};
use tch::{Device, Kind, Tensor};

use super::optim::Optimizer;
use super::pipeline::{derive_seed, epoch_batches, Batch, EpochPlan};
use super::session::Session;
use super::state::TrainingState;
use crate::data::decode::panic_message;
use crate::loss::Targets;
use crate::StopFlag;

/// How an epoch's batches ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EpochEnd {
    Completed,
    /// A stop was requested before the last batch; the state says where to resume.
    Stopped,
}

/// The epoch's running loss sum and correct count, kept on the device: reading them is a
/// device→host sync, done only when progress is shown and when the epoch ends. They start
/// from the state's partial sums, so a resumed epoch adds up in the same order as an
/// uninterrupted one.
struct RunningSums {
    loss_sum: Tensor,
    correct: Tensor,
}

impl RunningSums {
    fn new(state: &TrainingState, device: Device) -> Self {
        Self {
            loss_sum: Tensor::from(state.partial.loss_sum).to_device(device),
            correct: Tensor::from(state.partial.correct as i64).to_device(device),
        }
    }

    /// Copies the sums into the state (a host sync).
    fn store(&self, state: &mut TrainingState) {
        state.partial.loss_sum = self.loss_sum.double_value(&[]);
        state.partial.correct = self.correct.int64_value(&[]) as usize;
    }
}

/// Trains epoch `epoch` (0-based) from `state.next_batch`, adding to `state.partial`. A
/// batch that cannot be built, or a step that fails (a libtorch error such as running out
/// of memory), is an error: the run stops there, its last checkpoint intact.
pub(super) fn train_epoch(
    session: &mut Session,
    optimizer: &mut Optimizer,
    state: &mut TrainingState,
    epoch: usize,
    stop: &StopFlag,
) -> Result<EpochEnd> {
    let config = session.config.clone();
    let n_batches = super::pipeline::batch_count(session.train_records.len(), session.batch_recipe.batch_size);
    let log_every = config.logging.log_frequency;
    let started = Instant::now();
    let mut progress = crate::progress::Progress::new(
        format!("epoch {}/{}", epoch + 1, config.training.epochs),
        n_batches as u64,
        log_every as u64,
    );
    progress.advance(state.next_batch as u64, "");
    let plan = EpochPlan {
        records: session.train_records.clone(),
        labels: session.train_labels.clone(),
        num_classes: config.data.class_names.len() as i64,
        epoch,
        first_batch: state.next_batch,
    };
    let mut sums = RunningSums::new(state, session.device);
    let mut end = EpochEnd::Completed;
    for batch in epoch_batches(plan, session.batch_recipe.clone(), session.source.clone()) {
        let batch = batch.map_err(|reason| anyhow!("epoch {}: {reason}", epoch + 1))?;
        for (path, reason) in &batch.skipped {
            tracing::warn!("skipping {path} in this batch: {reason}");
        }
        if batch.labels.numel() > 0 {
            if session.device == tch::Device::Cpu {
                crate::threads::share_cores();
            }
            let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                train_step(session, optimizer, &mut sums, &batch, epoch)
            }));
            step.map_err(|panic| {
                anyhow!(
                    "epoch {}, batch {}: the training step failed: {}",
                    epoch + 1,
                    batch.index + 1,
                    panic_message(&panic)
                )
            })?;
            state.partial.seen += batch.labels.numel();
        }
        state.next_batch = batch.index + 1;
        let message = if state.next_batch % log_every == 0 || state.next_batch == n_batches {
            sums.store(state);
            let partial = &state.partial;
            let elapsed = partial.seconds + started.elapsed().as_secs_f64();
            let seen = partial.seen.max(1) as f64;
            format!(
                "loss {:.4} acc {:.3} {:.1} img/s",
                partial.loss_sum / seen,
                partial.correct as f64 / seen,
                partial.seen as f64 / elapsed.max(1e-9)
            )
        } else {
            String::new()
        };
        progress.advance(1, &message);
        if stop.is_raised() && state.next_batch < n_batches {
            end = EpochEnd::Stopped;
            break;
        }
    }
    progress.finish();
    sums.store(state);
    state.partial.seconds += started.elapsed().as_secs_f64();
    Ok(end)
}

/// One optimiser step on `batch`. Dropout and stochastic depth draw from a seed fixed by
/// (seed, epoch, batch), so a resumed run repeats them.
fn train_step(session: &mut Session, optimizer: &mut Optimizer, sums: &mut RunningSums, batch: &Batch, epoch: usize) {
    let t = &session.config.training;
    let n = batch.labels.numel();
    tch::manual_seed((derive_seed(session.config.system.seed, epoch as u64, batch.index as u64) >> 1) as i64);
    let images = crate::model::input::to_device(&batch.images, session.device);
    let labels = crate::model::input::to_device(&batch.labels, session.device);
    let logits = forward(session, &images);
    let soft = batch.soft_targets.as_ref().map(|s| crate::model::input::to_device(s, session.device));
    let targets = match &soft {
        Some(s) => Targets::Soft(s),
        None => Targets::Hard(&labels),
    };
    let loss = session.loss_fn.compute(&logits, targets);
    optimizer.zero_grad();
    loss.backward();
    if let Some(clip) = t.gradient_clip_norm.filter(|c| *c > 0.0) {
        let _ = optimizer.clip_grad_norm(clip);
    }
    optimizer.step();
    if let Some(ema) = session.ema.as_mut() {
        ema.update();
    }
    tch::no_grad(|| {
        let _ = sums.loss_sum.g_add_(&(loss.detach().to_kind(Kind::Double) * n as f64));
        let _ = sums.correct.g_add_(&logits.argmax(-1, false).eq_tensor(&labels).sum(Kind::Int64));
    });
}

/// The training-mode forward pass (in bf16 when the session asked the model for it).
fn forward(session: &Session, images: &Tensor) -> Tensor {
    session.model.forward_t(images, true)
}
