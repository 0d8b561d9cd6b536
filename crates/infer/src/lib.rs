//! Prediction, as a backend embeds it and the Python module wraps it: the one batch scorer
//! and its engines (`score`), the [`Predictor`] (the scorer and the settings that turn
//! scores into predictions, read once from the model file), the backend API (`api`, with
//! `batcher`: concurrent calls merged into shared forward passes), and keeping all of it safe
//! across `fork` (`forksafe`). Nothing of
//! training, plotting, the command line or TLS (without the `remote` feature) is linked.

pub mod api;
mod batcher;
pub mod forksafe;
mod predictor;
pub mod score;

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

pub use api::{ApiPrediction, ImageClassificationApi, ERROR_CLASS};
pub use predictor::{LoadedBatch, Prediction, Predictor};

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
            if imgtype_base::fsutil::is_present(&file) {
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
