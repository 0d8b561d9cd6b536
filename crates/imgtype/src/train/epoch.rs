//! One training epoch (timm's `train_one_epoch`): the batches from the input pipeline,
//! a forward and backward pass and an optimiser step each, the EMA update, the running
//! loss and accuracy, progress, and a stop between batches when one is requested.

use std::time::Instant;

use anyhow::{anyhow, Result};
use tch::{Kind, Tensor};

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
    let n_batches = session.train_records.len().div_ceil(config.training.batch_size);
    let started = Instant::now();
    let mut progress = crate::progress::Progress::new(
        format!("epoch {}/{}", epoch + 1, config.training.epochs),
        n_batches as u64,
        config.logging.log_frequency as u64,
    );
    progress.advance(state.next_batch as u64, "");
    let plan = EpochPlan {
        records: session.train_records.clone(),
        labels: session.train_labels.clone(),
        num_classes: config.data.class_names.len() as i64,
        epoch,
        first_batch: state.next_batch,
    };
    let mut end = EpochEnd::Completed;
    for batch in epoch_batches(plan, config.clone(), session.source.clone()) {
        let batch = batch.map_err(|reason| anyhow!("epoch {}: {reason}", epoch + 1))?;
        for (path, reason) in &batch.skipped {
            tracing::warn!("skipping {path} in this batch: {reason}");
        }
        if batch.labels.numel() > 0 {
            let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                train_step(session, optimizer, state, &batch, epoch)
            }));
            step.map_err(|panic| {
                anyhow!(
                    "epoch {}, batch {}: the training step failed: {}",
                    epoch + 1,
                    batch.index + 1,
                    panic_message(&panic)
                )
            })?;
        }
        state.next_batch = batch.index + 1;
        let partial = &state.partial;
        let elapsed = partial.seconds + started.elapsed().as_secs_f64();
        let seen = partial.seen.max(1) as f64;
        progress.advance(
            1,
            &format!(
                "loss {:.4} acc {:.3} {:.1} img/s",
                partial.loss_sum / seen,
                partial.correct as f64 / seen,
                partial.seen as f64 / elapsed.max(1e-9)
            ),
        );
        if stop.is_raised() && state.next_batch < n_batches {
            end = EpochEnd::Stopped;
            break;
        }
    }
    progress.finish();
    state.partial.seconds += started.elapsed().as_secs_f64();
    Ok(end)
}

/// One optimiser step on `batch`. Dropout and stochastic depth draw from a seed fixed by
/// (seed, epoch, batch), so a resumed run repeats them.
fn train_step(
    session: &mut Session,
    optimizer: &mut Optimizer,
    state: &mut TrainingState,
    batch: &Batch,
    epoch: usize,
) {
    let t = &session.config.training;
    let n = batch.labels.numel();
    tch::manual_seed((derive_seed(session.config.system.seed, epoch as u64, batch.index as u64) >> 1) as i64);
    let images = batch.images.to_device(session.device);
    let labels = batch.labels.to_device(session.device);
    let logits = forward(session, &images);
    let soft = batch.soft_targets.as_ref().map(|s| s.to_device(session.device));
    let targets = match &soft {
        Some(s) => Targets::Soft(s),
        None => Targets::Hard(&labels),
    };
    let loss = session.loss_fn.compute(&logits, targets);
    optimizer.zero_grad();
    loss.backward();
    if let Some(clip) = t.gradient_clip_norm.filter(|c| *c > 0.0) {
        optimizer.clip_grad_norm(clip);
    }
    optimizer.step();
    if let Some(ema) = session.ema.as_mut() {
        super::ema::update_ema(ema, &session.model, t.ema_decay);
    }
    state.partial.loss_sum += loss.double_value(&[]) * n as f64;
    state.partial.correct += logits.argmax(-1, false).eq_tensor(&labels).sum(Kind::Int64).int64_value(&[]) as usize;
    state.partial.seen += n;
}

/// The training-mode forward pass (in bf16 when the session asked the model for it).
fn forward(session: &Session, images: &Tensor) -> Tensor {
    session.model.forward_t(images, true)
}
