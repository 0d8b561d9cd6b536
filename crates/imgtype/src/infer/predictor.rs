//! A loaded model plus the decision rule (per-class thresholds, top-k): images in,
//! predictions out. Every `test` mode and the backend API predict through it.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::Result;
use image::RgbImage;
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use super::resolve_model_path;
use crate::config::{Config, Precision};
use crate::data::batch::load_images_timed;
use crate::data::decode::{decode_bytes, panic_message};
use crate::data::image::resize_square;
use crate::data::image::{to_device, to_normalized_batch};
use crate::data::{ImageRecord, ImageSource};
use crate::device::inference_kind;
use crate::eval::DecisionRule;
use crate::model::fused::FusedClassifier;
use crate::model::ImageTypeClassifier;

/// One image's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    pub class_index: usize,
    pub predicted_class: String,
    pub confidence: f64,
    pub probabilities: Vec<f64>,
    /// (class, probability), most probable first.
    pub top_k: Vec<(String, f64)>,
}

/// A loaded model ready to predict, as the inference model (BatchNorm folded, channels-last,
/// in the number format `system.precision` gives). Shareable between threads: image decoding
/// runs on the caller's threads, forward passes take turns on the model (libtorch tensors
/// are not `Sync`), each over a whole batch.
pub struct Predictor {
    model: Mutex<FusedClassifier>,
    device: Device,
    class_names: Vec<String>,
    config: Config,
    rule: DecisionRule,
    top_k: usize,
    source: ImageSource,
    pub batch_size: usize,
    pub workers: usize,
    pub load_seconds: f64,
    /// The model file's path, size and modification time; "in memory" for a model built here.
    pub model_identity: String,
}

impl Predictor {
    /// Loads a model file (or run folder), in the precision its config names.
    pub fn load(model_path: &Path, device: Device) -> Result<Self> {
        Self::load_with_precision(model_path, device, None)
    }

    /// Loads a model file (or run folder); `precision` overrides its `system.precision`.
    pub fn load_with_precision(model_path: &Path, device: Device, precision: Option<Precision>) -> Result<Self> {
        let started = Instant::now();
        let path = resolve_model_path(model_path)?;
        let mut model = ImageTypeClassifier::load(&path, device)?;
        if let Some(precision) = precision {
            model.config_mut().system.precision = precision;
        }
        let mut predictor = Self::from_model(model);
        predictor.load_seconds = started.elapsed().as_secs_f64();
        predictor.model_identity = match std::fs::metadata(&path) {
            Ok(meta) => {
                let modified = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
                format!("{} ({} bytes, modified {})", path.display(), meta.len(), modified.map_or(0, |d| d.as_secs()))
            }
            Err(_) => path.display().to_string(),
        };
        tracing::info!(
            "model {} loaded in {:.2} s; classes: {}; {}",
            path.display(),
            predictor.load_seconds,
            predictor.class_names.join(", "),
            if predictor.kind() == Kind::BFloat16 { "bf16" } else { "fp32" }
        );
        Ok(predictor)
    }

    pub fn from_model(model: ImageTypeClassifier) -> Self {
        let config = model.config().clone();
        let class_names = model.class_names().to_vec();
        let rule = DecisionRule::new(&config, &class_names);
        Self {
            device: model.device(),
            rule,
            top_k: config.inference.return_top_k.clamp(1, class_names.len()),
            source: ImageSource::from_config(&config.data),
            batch_size: config.inference.batch_size.max(1),
            workers: config.system.num_workers.max(1),
            load_seconds: 0.0,
            model_identity: "in memory".into(),
            class_names,
            model: Mutex::new(FusedClassifier::new(&model, inference_kind(config.system.precision, model.device()))),
            config,
        }
    }

    /// The model's number format: `Float` or `BFloat16`.
    pub fn kind(&self) -> Kind {
        self.model.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).kind()
    }

    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Applies a source policy to every later fetch (see [`crate::data::SourcePolicy`]);
    /// fails on an allowed host that is not a host.
    pub fn set_source_policy(&mut self, policy: crate::data::SourcePolicy) -> Result<()> {
        self.source.set_policy(policy, &self.config.data)
    }

    pub fn source(&self) -> &ImageSource {
        &self.source
    }

    pub fn set_base_image_path(&mut self, base: Option<PathBuf>) {
        self.source.set_base_path(base);
    }

    pub fn image_size(&self) -> u32 {
        self.config.augmentation.image_size
    }

    /// Softmax probabilities for a normalised batch. A libtorch error in the forward pass
    /// (out of memory, say) is an error for this batch; the predictor stays usable.
    pub fn probabilities(&self, batch: &Tensor) -> Result<Vec<Vec<f64>>, String> {
        let model = self.model.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // The copy back to the host is inside too: asynchronous CUDA errors surface there.
        let forward = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let probs = model.forward(&to_device(batch, self.device)).softmax(-1, Kind::Float);
            Vec::<f32>::try_from(probs.to_device(Device::Cpu).flatten(0, -1))
        }));
        drop(model);
        let flat = forward
            .map_err(|panic| format!("the model failed on this batch: {}", panic_message(&panic)))?
            .map_err(|e| format!("cannot read the model's output: {e}"))?;
        Ok(flat.chunks(self.class_names.len()).map(|row| row.iter().map(|&p| p as f64).collect()).collect())
    }

    /// Among classes whose probability passes its threshold, the most probable; else argmax.
    pub fn decide(&self, probabilities: &[f64]) -> Prediction {
        let class_index = self.rule.decide(probabilities);
        let mut order: Vec<usize> = (0..probabilities.len()).collect();
        order.sort_by(|&a, &b| probabilities[b].total_cmp(&probabilities[a]));
        Prediction {
            class_index,
            predicted_class: self.class_names[class_index].clone(),
            confidence: probabilities[class_index],
            probabilities: probabilities.to_vec(),
            top_k: order.iter().take(self.top_k).map(|&c| (self.class_names[c].clone(), probabilities[c])).collect(),
        }
    }

    /// Predictions for decoded, resized images (one batch).
    pub fn predict_images(&self, images: &[RgbImage]) -> Result<Vec<Prediction>, String> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.probabilities(&to_normalized_batch(images))?.iter().map(|p| self.decide(p)).collect())
    }

    /// The prediction for a local file given by path (any bytes, on Unix not only UTF-8).
    pub fn predict_file(&self, path: &Path) -> Result<Prediction, String> {
        let label = path.to_string_lossy();
        let image = self
            .source
            .read_path(path)
            .and_then(|bytes| decode_bytes(&bytes, &label, self.source.decode_limits()))
            .map_err(|e| format!("{e:#}"))?;
        let resized = resize_square(&image, self.image_size());
        self.predict_images(std::slice::from_ref(&resized)).map(|mut p| p.remove(0))
    }

    /// Predictions for image keys, in order (one batch); an image that cannot be read
    /// gives the reason instead.
    pub fn predict_keys(&self, keys: &[String]) -> Vec<Result<Prediction, String>> {
        let records: Vec<ImageRecord> = keys
            .iter()
            .map(|k| ImageRecord { product_id: String::new(), image_path: k.clone(), image_type: String::new() })
            .collect();
        self.predict_records(&records.iter().collect::<Vec<_>>())
    }

    /// Loads and predicts records' images as one batch, in order; an image that cannot be
    /// read gives the reason instead (and every image of a batch the model fails on).
    pub fn predict_records(&self, records: &[&ImageRecord]) -> Vec<Result<Prediction, String>> {
        self.predict_loaded(self.load_batch(records))
    }

    /// Decodes and resizes a batch's images, on `workers` threads: the half of prediction
    /// that a `test` run does for the next batch while the model works on this one.
    pub fn load_batch(&self, records: &[&ImageRecord]) -> LoadedBatch {
        let loaded = load_images_timed(records, &self.source, self.image_size(), self.workers);
        let mut images = Vec::with_capacity(loaded.len());
        let mut load_ms = Vec::with_capacity(loaded.len());
        let slots = loaded
            .into_iter()
            .map(|(result, ms)| {
                load_ms.push(ms);
                result.map(|image| images.push(image))
            })
            .collect();
        LoadedBatch { slots, images, load_ms }
    }

    /// As [`Self::predict_loaded`], each outcome with the image's own time in milliseconds:
    /// its fetching, decoding and resizing plus an equal share of its batch's forward pass.
    pub fn predict_loaded_timed(&self, mut batch: LoadedBatch) -> Vec<(Result<Prediction, String>, f64)> {
        let load_ms = std::mem::take(&mut batch.load_ms);
        let images = batch.images.len().max(1) as f64;
        let started = Instant::now();
        let outcomes = self.predict_loaded(batch);
        let forward_share_ms = started.elapsed().as_secs_f64() * 1000.0 / images;
        outcomes.into_iter().zip(load_ms).map(|(outcome, ms)| (outcome, ms + forward_share_ms)).collect()
    }

    /// The other half: the forward pass over a loaded batch, outcomes in order.
    pub fn predict_loaded(&self, batch: LoadedBatch) -> Vec<Result<Prediction, String>> {
        match self.predict_images(&batch.images) {
            Ok(predictions) => {
                let mut predictions = predictions.into_iter();
                batch
                    .slots
                    .into_iter()
                    .map(|slot| slot.map(|()| predictions.next().expect("one prediction per good image")))
                    .collect()
            }
            Err(reason) => batch.slots.into_iter().map(|slot| slot.and(Err(reason.clone()))).collect(),
        }
    }
}

/// A batch's images, decoded and resized: one slot per record (the reason where it could
/// not be read) and the images that could, in order.
pub struct LoadedBatch {
    slots: Vec<Result<(), String>>,
    images: Vec<RgbImage>,
    /// Each record's own fetch, decode and resize time, in milliseconds.
    load_ms: Vec<f64>,
}
