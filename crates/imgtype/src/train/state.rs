//! Where a run stands: the epoch and batch to run next, the partial sums of an epoch cut
//! short, the history, the best score, the schedule and optimiser step counts. Saved in
//! every checkpoint, so a resumed run continues exactly.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::schedule::LrSchedule;

/// One epoch's figures: a row of `logs/metrics.csv`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub backbone_frozen: bool,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub val_loss: Option<f64>,
    pub val_accuracy: Option<f64>,
    pub val_f1_macro: Option<f64>,
    pub val_f1_weighted: Option<f64>,
    pub lr_head: f64,
    pub lr_backbone: f64,
    pub seconds: f64,
    pub images_per_second: f64,
}

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
    /// EMA updates so far (its decay warms up with them); absent in older checkpoints.
    #[serde(default)]
    pub ema_updates: u64,
    pub finished: bool,
}
