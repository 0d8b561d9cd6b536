//! `checkpoints/latest_checkpoint.safetensors`: the model weights under their usual names
//! (so the file also loads as a model), optimiser moments (`optimizer.*`), EMA weights
//! (`ema.*`), the best weights so far (`best.*`), and in the header the config, class
//! names and the training state (epoch, batch, partial epoch sums, history, best score,
//! schedule, optimiser step counts). Written atomically after every epoch and on interrupt.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::optim::Optimizer;
use super::schedule::LrSchedule;
use super::{EpochRecord, Session};
use crate::model::file::{copy_named_tensors, is_training_state, read_safetensors, write_safetensors, ModelMetadata};
use crate::model::ImageTypeClassifier;

const STATE_KEY: &str = "training_state";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PartialEpoch {
    pub loss_sum: f64,
    pub correct: usize,
    pub seen: usize,
    pub seconds: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TrainingState {
    /// The epoch (0-based) to run next, and the batch within it.
    pub next_epoch: usize,
    pub next_batch: usize,
    pub partial: PartialEpoch,
    pub history: Vec<EpochRecord>,
    pub best_score: Option<f64>,
    pub best_epoch: Option<usize>,
    pub epochs_without_improvement: usize,
    pub stopped_early: bool,
    pub schedule: Option<LrSchedule>,
    pub phase_start: usize,
    pub optimizer_steps: HashMap<String, i64>,
    pub finished: bool,
}

pub struct Restored {
    pub state: TrainingState,
    pub optimizer: Vec<(String, Tensor)>,
    pub best: Option<Vec<(String, Tensor)>>,
}

fn prefixed(prefix: &str, tensors: &[(String, Tensor)]) -> Vec<(String, Tensor)> {
    tensors.iter().map(|(n, t)| (format!("{prefix}{n}"), t.shallow_clone())).collect()
}

fn variables(model: &ImageTypeClassifier) -> Vec<(String, Tensor)> {
    let mut vars: Vec<(String, Tensor)> = model.vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

pub(super) fn save(
    path: &Path,
    session: &Session,
    optimizer: &Optimizer,
    state: &TrainingState,
    best: Option<&[(String, Tensor)]>,
) -> Result<()> {
    let mut tensors = variables(&session.model);
    tensors.extend(optimizer.state_tensors());
    if let Some(ema) = &session.ema {
        tensors.extend(prefixed("ema.", &variables(ema)));
    }
    if let Some(best) = best {
        tensors.extend(prefixed("best.", best));
    }
    let mut header = ModelMetadata::new(&session.config).to_header();
    header.insert(STATE_KEY.into(), serde_json::to_string(state)?);
    write_safetensors(path, &tensors, header).with_context(|| format!("cannot write checkpoint {}", path.display()))
}

/// Loads weights (and EMA weights) into the models and returns the rest.
pub fn load(path: &Path, model: &mut ImageTypeClassifier, ema: Option<&mut ImageTypeClassifier>) -> Result<Restored> {
    let (tensors, header) = read_safetensors(path)?;
    let state: TrainingState = serde_json::from_str(
        header
            .get(STATE_KEY)
            .ok_or_else(|| anyhow!("{}: not a training checkpoint (no {STATE_KEY})", path.display()))?,
    )
    .with_context(|| format!("{}: unreadable training state", path.display()))?;
    let take = |prefix: &str| -> Vec<(String, Tensor)> {
        tensors
            .iter()
            .filter_map(|(n, t)| n.strip_prefix(prefix).map(|rest| (rest.to_string(), t.shallow_clone())))
            .collect()
    };
    let plain: Vec<(String, Tensor)> =
        tensors.iter().filter(|(n, _)| !is_training_state(n)).map(|(n, t)| (n.clone(), t.shallow_clone())).collect();
    copy_named_tensors(&plain, &mut model.vs, path, "")?;
    if let Some(ema) = ema {
        let ema_weights = take("ema.");
        if ema_weights.is_empty() {
            copy_named_tensors(&plain, &mut ema.vs, path, "")?;
        } else {
            copy_named_tensors(&ema_weights, &mut ema.vs, path, "")?;
        }
    }
    let best = take("best.");
    let optimizer = tensors
        .iter()
        .filter(|(n, _)| n.starts_with("optimizer."))
        .map(|(n, t)| (n.clone(), t.shallow_clone()))
        .collect();
    Ok(Restored { state, optimizer, best: (!best.is_empty()).then_some(best) })
}

/// Records in the checkpoint that the run finished (a later --resume then refuses).
pub fn mark_finished(path: &Path, state: &TrainingState) -> Result<()> {
    let (tensors, mut header) = read_safetensors(path)?;
    header.insert(STATE_KEY.into(), serde_json::to_string(state)?);
    write_safetensors(path, &tensors, header)
}
