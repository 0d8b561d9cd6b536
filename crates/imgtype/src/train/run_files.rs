//! The on-disk contract of a run folder: where each file lies ([`RunLayout`], by the run's
//! own `paths.*`), and one type per file other code reads back (the sweep's summary, a
//! resumed run, users' scripts), written and read through serde, so writers and readers
//! cannot drift apart.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::state::EpochRecord;
use crate::config::{Config, Metric};
use crate::eval::MetricsRecord;

const LATEST_CHECKPOINT: &str = "latest_checkpoint.safetensors";

/// `logs/metrics.csv`'s columns: [`EpochRecord`]'s fields, in order.
pub const METRICS_CSV_HEADER: [&str; 12] = [
    "epoch",
    "backbone_frozen",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "val_f1_macro",
    "val_f1_weighted",
    "lr_head",
    "lr_backbone",
    "seconds",
    "images_per_second",
];

/// Where a run folder's files lie, from its config's `paths.log_dir` and
/// `paths.checkpoint_dir` (folders inside the run folder).
#[derive(Debug, Clone)]
pub struct RunLayout {
    dir: PathBuf,
    log_dir: PathBuf,
    checkpoint_dir: PathBuf,
}

impl RunLayout {
    pub fn new(dir: &Path, config: &Config) -> Self {
        Self {
            dir: dir.to_path_buf(),
            log_dir: config.paths.log_dir.clone(),
            checkpoint_dir: config.paths.checkpoint_dir.clone(),
        }
    }

    /// The layout of the run folder at `dir` by its own `config.json`, without opening it.
    pub fn of(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let config = Config::parse(&text).with_context(|| format!("{}", path.display()))?.config;
        Ok(Self::new(dir, &config))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.dir.join(&self.log_dir)
    }

    pub fn checkpoints_dir(&self) -> PathBuf {
        self.dir.join(&self.checkpoint_dir)
    }

    pub fn latest_checkpoint(&self) -> PathBuf {
        self.checkpoints_dir().join(LATEST_CHECKPOINT)
    }

    pub fn numbered_checkpoint(&self, epoch: usize) -> PathBuf {
        self.checkpoints_dir().join(format!("checkpoint_epoch_{epoch:03}.safetensors"))
    }

    pub fn best_model(&self) -> PathBuf {
        self.dir.join("model/best_model.safetensors")
    }

    pub fn last_model(&self) -> PathBuf {
        self.dir.join("model/last_model.safetensors")
    }

    pub fn metadata(&self) -> PathBuf {
        self.dir.join("run_metadata.json")
    }

    pub fn metrics_csv(&self) -> PathBuf {
        self.logs_dir().join("metrics.csv")
    }

    pub fn training_results(&self) -> PathBuf {
        self.logs_dir().join("training_results.json")
    }

    pub fn skipped_images(&self) -> PathBuf {
        self.logs_dir().join("skipped_images.csv")
    }

    pub fn evaluation_results(&self) -> PathBuf {
        self.dir.join("evaluation_results.json")
    }

    pub fn final_results(&self) -> PathBuf {
        self.dir.join("final_results.json")
    }

    /// `logs/metrics.csv`, one record per epoch; empty when the run has not finished an epoch.
    pub fn read_metrics_csv(&self) -> Result<Vec<EpochRecord>> {
        let path = self.metrics_csv();
        if !path.exists() {
            return Ok(Vec::new());
        }
        let mut reader = csv::Reader::from_path(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let records = reader.deserialize().collect::<Result<Vec<EpochRecord>, _>>();
        records.with_context(|| format!("{}: not a metrics table", path.display()))
    }

    pub fn read_final_results(&self) -> Result<FinalResults> {
        read_json(&self.final_results())
    }

    pub fn read_evaluation_results(&self) -> Result<EvaluationResults> {
        read_json(&self.evaluation_results())
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not the expected JSON", path.display()))
}

/// `logs/training_results.json`: the history and model selection so far (every epoch).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainingResults {
    pub history: Vec<EpochRecord>,
    pub best_epoch: Option<usize>,
    pub best_score: Option<f64>,
    pub metric: Metric,
    pub stopped_early: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Finished,
    Failed,
}

/// `final_results.json`: a run's end in one place; the error of one that failed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinalResults {
    pub run_id: String,
    pub status: RunStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(flatten)]
    pub finished: Option<FinishedRun>,
}

/// The figures of a finished run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinishedRun {
    pub best_epoch: Option<usize>,
    pub validation_metric: Metric,
    pub best_validation_score: Option<f64>,
    pub epochs_run: usize,
    pub stopped_early: bool,
    pub best_model: Option<String>,
    pub test_accuracy: f64,
    pub test_f1_macro: f64,
    pub test_f1_weighted: f64,
    pub test_roc_auc_macro: Option<f64>,
    pub skipped_images: usize,
}

/// `evaluation_results.json`: the test split's evaluation at the end of training.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvaluationResults {
    pub split: String,
    /// JSON has no NaN: a diverged run's loss is written as `null` and read back as NaN.
    #[serde(deserialize_with = "null_as_nan")]
    pub loss: f64,
    pub unreadable_images: usize,
    pub metrics: MetricsRecord,
}

fn null_as_nan<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(deserializer)?.unwrap_or(f64::NAN))
}
