//! `checkpoints/latest_checkpoint.safetensors`: the model weights under their usual names
//! (so the file also loads as a model), optimiser moments (`optimizer.*`), EMA weights
//! (`ema.*`), the best weights so far (`best.*`), and in the header the config, class
//! names and the training state (epoch, batch, partial epoch sums, history, best score,
//! schedule, optimiser step counts). Written atomically after every epoch and on interrupt.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use tch::Tensor;

use super::optim::Optimizer;
use super::state::TrainingState;
use crate::config::Config;
use crate::model::file::{is_training_state, read_safetensors, write_safetensors, ModelMetadata};
use crate::model::ImageTypeClassifier;

const STATE_KEY: &str = "training_state";

pub struct Restored {
    pub state: TrainingState,
    pub optimizer: Vec<(String, Tensor)>,
    pub best: Option<Vec<(String, Tensor)>>,
}

fn prefixed(prefix: &str, tensors: &[(String, Tensor)]) -> Vec<(String, Tensor)> {
    tensors.iter().map(|(n, t)| (format!("{prefix}{n}"), t.shallow_clone())).collect()
}

/// What a checkpoint is made of.
pub struct CheckpointContents<'a> {
    pub config: &'a Config,
    pub model: &'a ImageTypeClassifier,
    pub ema: Option<&'a ImageTypeClassifier>,
    pub optimizer: &'a Optimizer,
    pub state: &'a TrainingState,
    pub best: Option<&'a [(String, Tensor)]>,
}

impl CheckpointContents<'_> {
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors = self.model.named_tensors();
        tensors.extend(self.optimizer.state_tensors());
        if let Some(ema) = self.ema {
            tensors.extend(prefixed("ema.", &ema.named_tensors()));
        }
        if let Some(best) = self.best {
            tensors.extend(prefixed("best.", best));
        }
        let mut header = ModelMetadata::new(self.config).to_header();
        header.insert(STATE_KEY.into(), serde_json::to_string(self.state)?);
        write_safetensors(path, &tensors, header).with_context(|| format!("cannot write checkpoint {}", path.display()))
    }
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
    model.load_tensors(&plain, path)?;
    if let Some(ema) = ema {
        let ema_weights = take("ema.");
        ema.load_tensors(if ema_weights.is_empty() { &plain } else { &ema_weights }, path)?;
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
