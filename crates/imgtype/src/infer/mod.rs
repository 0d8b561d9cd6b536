//! Inference: a model file and the decision rule ([`Predictor`]), the backend API, and
//! (feature `batch`) the `test` binary's file-writing modes: a CSV of images, the whole
//! dataset, shards and their merge, and the wrong-prediction reports.

pub mod api;
mod batcher;
mod predictor;
mod single_image;

#[cfg(feature = "batch")]
mod columns;
#[cfg(feature = "batch")]
mod csv_mode;
#[cfg(feature = "batch")]
mod csv_partial;
#[cfg(feature = "batch")]
mod dataset_mode;
#[cfg(feature = "batch")]
mod merge;
#[cfg(feature = "batch")]
mod prefetch;
#[cfg(feature = "batch")]
mod shards;
#[cfg(feature = "batch")]
mod thresholds;
#[cfg(feature = "batch")]
mod timing;
#[cfg(feature = "batch")]
mod wrong_predictions;

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

pub use api::{ApiPrediction, ImageClassificationApi, ERROR_CLASS};
pub use predictor::{LoadedBatch, Prediction, Predictor};
pub use single_image::format_single;

#[cfg(feature = "batch")]
pub use csv_mode::{run_csv, CsvReport, CsvRequest};
#[cfg(feature = "batch")]
pub use dataset_mode::{run_dataset, DatasetReport};
#[cfg(feature = "batch")]
pub use merge::merge_shards;
#[cfg(feature = "batch")]
pub use shards::Shard;
#[cfg(feature = "batch")]
pub use thresholds::{fit_thresholds, ThresholdFit};
#[cfg(feature = "batch")]
pub use timing::TimingSummary;

/// A model file given directly, or a run folder holding `model/best_model.safetensors`.
pub fn resolve_model_path(path: &Path) -> Result<PathBuf> {
    if path.is_dir() {
        // Ours, then the Python system's run layout.
        for candidate in [
            "model/best_model.safetensors",
            "model/last_model.safetensors",
            "best_model.safetensors",
            "models/best_model.pth",
            "best_model.pth",
        ] {
            let file = path.join(candidate);
            if crate::fsutil::is_present(&file) {
                return Ok(file);
            }
        }
        bail!("{}: run folder has no model/best_model.safetensors", path.display());
    }
    if !path.exists() {
        bail!("model file {} does not exist", path.display());
    }
    Ok(path.to_path_buf())
}
