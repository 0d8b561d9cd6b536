//! The on-disk contract of a run folder: where each file lies ([`RunLayout`], by the run's
//! own `paths.*`), and one type per file other code reads back (the sweep's summary, a
//! resumed run, users' scripts), written and read through serde, so writers and readers
//! cannot drift apart.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::fsutil::read_json;
use serde::{Deserialize, Serialize};

use super::state::EpochRecord;
use crate::config::{Config, Metric};
use crate::eval::calibration::CalibrationFigures;
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
        Ok(Self::new(dir, &Self::started_config(dir)?))
    }

    /// The config the run folder at `dir` was started with (its `config.json`).
    pub fn started_config(dir: &Path) -> Result<Config> {
        let path = dir.join("config.json");
        let text = crate::fsutil::read_text_capped(&path, &path.display().to_string(), crate::fsutil::JSON_FILE_CAP)?;
        Ok(Config::parse(&text).with_context(|| format!("{}", path.display()))?.config)
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

    pub fn test_predictions(&self) -> PathBuf {
        self.dir.join("test_predictions.csv")
    }

    /// `logs/metrics.csv`, one record per epoch; empty when the run has not finished an epoch.
    pub fn read_metrics_csv(&self) -> Result<Vec<EpochRecord>> {
        let path = self.metrics_csv();
        if !path.exists() {
            return Ok(Vec::new());
        }
        let mut reader = crate::fsutil::csv_reader(&path, &path.display().to_string())?;
        let records = reader.deserialize().collect::<Result<Vec<EpochRecord>, _>>();
        records.with_context(|| format!("{}: not a metrics table", path.display()))
    }

    pub fn read_final_results(&self) -> Result<FinalResults> {
        read_json(&self.final_results())
    }

    pub fn read_evaluation_results(&self) -> Result<EvaluationResults> {
        read_json(&self.evaluation_results())
    }

    pub fn read_test_predictions(&self) -> Result<super::TestPredictions> {
        super::TestPredictions::read(&self.test_predictions())
    }
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
    /// How often INT8 decided as the test evaluation did, where it could be checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub int8_test_agreement: Option<crate::infer::Int8Agreement>,
}

/// `evaluation_results.json`: the test split's evaluation at the end of training.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvaluationResults {
    pub split: String,
    /// JSON has no NaN: a diverged run's loss is written as `null` and read back as NaN.
    #[serde(deserialize_with = "crate::eval::calibration::null_as_nan")]
    pub loss: f64,
    pub unreadable_images: usize,
    pub metrics: MetricsRecord,
    /// The temperature fitted at the end of training and what it did (absent when
    /// `training.calibrate` is off or there was no validation split).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<CalibrationReport>,
}

/// `inference.temperature` as fitted on the validation split, with the NLL and ECE of the
/// validation and test splits before and after it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CalibrationReport {
    pub temperature: f64,
    pub validation: CalibrationFigures,
    pub test: CalibrationFigures,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_results_read_back_what_was_written_finished_or_failed() {
        let failed = FinalResults {
            run_id: "run_1".into(),
            status: RunStatus::Failed,
            error: Some("disk full".into()),
            finished: None,
        };
        let text = serde_json::to_string(&failed).unwrap();
        assert_eq!(text, r#"{"run_id":"run_1","status":"failed","error":"disk full"}"#);
        let back: FinalResults = serde_json::from_str(&text).unwrap();
        assert_eq!(
            (back.status, back.error.as_deref(), back.finished.is_none()),
            (RunStatus::Failed, Some("disk full"), true)
        );

        let finished = FinalResults {
            run_id: "run_2".into(),
            status: RunStatus::Finished,
            error: None,
            finished: Some(FinishedRun {
                best_epoch: Some(3),
                validation_metric: Metric::F1Weighted,
                best_validation_score: Some(0.9),
                epochs_run: 4,
                stopped_early: false,
                best_model: None,
                test_accuracy: 0.5,
                test_f1_macro: 0.4,
                test_f1_weighted: 0.45,
                test_roc_auc_macro: None,
                skipped_images: 0,
                int8_test_agreement: None,
            }),
        };
        let value = serde_json::to_value(&finished).unwrap();
        let keys: Vec<&str> = value.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(&keys[..4], ["run_id", "status", "best_epoch", "validation_metric"], "keys in a stable order");
        assert!(value.get("error").is_none());
        let back: FinalResults = serde_json::from_value(value).unwrap();
        assert_eq!(back.finished.unwrap().best_epoch, Some(3));
        // An unknown status is an error, not a string to compare.
        assert!(serde_json::from_str::<FinalResults>(r#"{"run_id":"r","status":"paused"}"#).is_err());
    }

    #[test]
    fn a_diverged_runs_loss_reads_back_as_nan() {
        let metrics = crate::eval::compute_metrics(&["a".to_string(), "b".to_string()], &[0, 1], &[0, 0], None);
        // A diverged model's NaN logits: NaN calibration figures too.
        let nan = CalibrationFigures {
            images: 2,
            nll_before: f64::NAN,
            nll_after: f64::NAN,
            ece_before: 0.5,
            ece_after: f64::NAN,
        };
        let written = EvaluationResults {
            split: "test".into(),
            loss: f64::NAN,
            unreadable_images: 0,
            metrics: metrics.into(),
            calibration: Some(CalibrationReport { temperature: 0.05, validation: nan, test: nan }),
        };
        let text = serde_json::to_string(&written).unwrap();
        assert!(text.contains(r#""loss":null"#), "{text}");
        assert!(text.contains(r#""f1_weighted":"#), "the Python system's flat keys are kept: {text}");
        let back: EvaluationResults = serde_json::from_str(&text).unwrap();
        assert!(back.loss.is_nan());
        let calibration = back.calibration.unwrap();
        assert!(calibration.test.nll_after.is_nan() && calibration.validation.ece_before == 0.5);
        assert_eq!(back.metrics.metrics.accuracy, 0.5);
        assert_eq!(back.metrics.metrics.confusion_matrix, vec![vec![1, 0], vec![1, 0]]);
    }

    #[test]
    fn the_layout_follows_the_runs_own_folders() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.paths.log_dir = "my_logs".into();
        config.paths.checkpoint_dir = "states".into();
        std::fs::write(dir.path().join("config.json"), config.to_json_pretty()).unwrap();
        let layout = RunLayout::of(dir.path()).unwrap();
        assert_eq!(layout.metrics_csv(), dir.path().join("my_logs/metrics.csv"));
        assert_eq!(layout.latest_checkpoint(), dir.path().join("states/latest_checkpoint.safetensors"));
        assert!(layout.read_metrics_csv().unwrap().is_empty(), "no epoch finished yet");
        std::fs::create_dir(dir.path().join("my_logs")).unwrap();
        let record = EpochRecord {
            epoch: 1,
            backbone_frozen: false,
            train_loss: f64::NAN,
            train_accuracy: 0.5,
            val_loss: None,
            val_accuracy: Some(0.25),
            val_f1_macro: None,
            val_f1_weighted: Some(0.2),
            lr_head: 1e-3,
            lr_backbone: 1e-4,
            seconds: 2.0,
            images_per_second: 10.0,
        };
        crate::fsutil::write_csv_atomic(&layout.metrics_csv(), &METRICS_CSV_HEADER, &[record]).unwrap();
        let back = layout.read_metrics_csv().unwrap();
        assert_eq!(back.len(), 1);
        assert!(back[0].train_loss.is_nan() && back[0].val_loss.is_none());
        assert_eq!((back[0].val_accuracy, back[0].val_f1_weighted), (Some(0.25), Some(0.2)));
        let missing = tempfile::tempdir().unwrap();
        assert!(RunLayout::of(missing.path()).unwrap_err().to_string().contains("config.json"));
    }
}
