//! A loaded model plus the decision rule (per-class thresholds, top-k): images in,
//! predictions out. Every `test` mode and the backend API predict through it.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Result};
use image::RgbImage;
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use super::resolve_model_path;
pub use crate::score::LoadedBatch;
use crate::score::{build_engine, BatchScorer, DecisionRule, ScoringSettings};
use imgtype_base::config::{Config, InferenceEngineChoice, Precision};
use imgtype_images::decode::decode_within_budget;
use imgtype_images::image::resize_square;
use imgtype_images::{ImageRecord, ImageSource};
use imgtype_model::ImageTypeClassifier;

/// One image's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    pub class_index: usize,
    pub predicted_class: String,
    pub confidence: f64,
    /// The confidence is under `inference.confidence_threshold`: a case for human review.
    pub low_confidence: bool,
    pub probabilities: Vec<f64>,
    /// (class, probability), most probable first.
    pub top_k: Vec<(String, f64)>,
}

/// A loaded model ready to predict: the [`BatchScorer`] over its inference model (BatchNorm
/// folded, channels-last, in the number format `system.precision` gives) and the settings
/// that turn scores into predictions, read once from the model file's config. Shareable
/// between threads: image decoding runs on the caller's threads, forward passes take turns.
pub struct Predictor {
    scorer: BatchScorer,
    rule: DecisionRule,
    top_k: usize,
    confidence_threshold: f64,
    /// The config stored in the model file, for defaults only (folders, the label column,
    /// the validation metric); nothing here edits it.
    trained_with: Config,
    pub load_seconds: f64,
    /// The model file's path, size and modification time; "in memory" for a model built here.
    pub model_identity: String,
    /// The model file it was loaded from (none for a model built in memory).
    pub model_file: Option<std::path::PathBuf>,
}

impl Predictor {
    /// Loads a model file (or run folder), in the precision its config names.
    pub fn load(model_path: &Path, device: Device) -> Result<Self> {
        Self::load_with_precision(model_path, device, None)
    }

    /// Loads a model file (or run folder); `precision` overrides its `system.precision`.
    pub fn load_with_precision(model_path: &Path, device: Device, precision: Option<Precision>) -> Result<Self> {
        Self::load_with(model_path, device, precision, None)
    }

    /// Loads a model file (or run folder); `precision` and `engine` override its
    /// `system.precision` and `system.inference_engine`.
    pub fn load_with(
        model_path: &Path,
        device: Device,
        precision: Option<Precision>,
        engine: Option<InferenceEngineChoice>,
    ) -> Result<Self> {
        let started = Instant::now();
        let path = resolve_model_path(model_path)?;
        let model = ImageTypeClassifier::load(&path, device)?;
        if precision.unwrap_or(model.config().system.precision) == Precision::Int8 && model.int8_ranges().is_none() {
            bail!(
                "{0}: INT8 needs the activation ranges `train` stores in its model file, and {1}; measure them: \
                 test --model-path {0} --int8-calibrate IMAGES.csv --output-path NEW.safetensors",
                path.display(),
                model.int8_missing_reason()
            );
        }
        let mut predictor = Self::with_settings(model, precision, engine);
        predictor.load_seconds = started.elapsed().as_secs_f64();
        predictor.model_file = Some(path.to_path_buf());
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
            predictor.class_names().join(", "),
            predictor.scorer.engine().describe()
        );
        Ok(predictor)
    }

    pub fn from_model(model: ImageTypeClassifier) -> Self {
        Self::with_settings(model, None, None)
    }

    /// With `precision` and `engine` in place of the model file's settings where given.
    pub fn with_settings(
        model: ImageTypeClassifier,
        precision: Option<Precision>,
        engine: Option<InferenceEngineChoice>,
    ) -> Self {
        let config = model.config().clone();
        let class_names = model.class_names();
        let precision = precision.unwrap_or(config.system.precision);
        if model.device().is_cuda() {
            imgtype_model::device::allow_tf32_convolutions(precision != Precision::Fp32);
        }
        let engine = build_engine(&model, engine.unwrap_or(config.system.inference_engine), precision);
        let scorer = BatchScorer::new(
            engine,
            ImageSource::from_config(&config.data),
            ScoringSettings::new(&config, model.input_size()),
            class_names.len(),
        )
        .with_temperature(config.inference.temperature);
        Self {
            scorer,
            rule: DecisionRule::new(&config.inference.class_thresholds, class_names),
            top_k: config.inference.return_top_k.clamp(1, class_names.len()),
            confidence_threshold: config.inference.confidence_threshold,
            load_seconds: 0.0,
            model_identity: "in memory".into(),
            model_file: None,
            trained_with: config,
        }
    }

    /// The engine and its number format, e.g. "openvino bf16".
    pub fn engine_description(&self) -> String {
        self.scorer.engine().describe()
    }

    /// The model's number format: `Float` or `BFloat16`.
    pub fn kind(&self) -> Kind {
        self.scorer.engine().kind()
    }

    /// The model's classes, in output order (from the model file, as the model has them).
    pub fn class_names(&self) -> &[String] {
        &self.trained_with.data.class_names
    }

    /// The config stored in the model file: defaults for folders and columns, never edited.
    pub fn trained_with(&self) -> &Config {
        &self.trained_with
    }

    /// The decision rule: per-class thresholds from the model file.
    pub fn rule(&self) -> &DecisionRule {
        &self.rule
    }

    /// `inference.confidence_threshold`: predictions below it are flagged `low_confidence`.
    pub fn confidence_threshold(&self) -> f64 {
        self.confidence_threshold
    }

    pub fn scorer(&self) -> &BatchScorer {
        &self.scorer
    }

    /// Images per forward pass (`inference.batch_size`).
    pub fn batch_size(&self) -> usize {
        self.scorer.settings().batch_size
    }

    /// Applies a source policy to every later fetch (see [`imgtype_images::SourcePolicy`]);
    /// fails on an allowed host that is not a host.
    pub fn set_source_policy(&mut self, policy: imgtype_images::SourcePolicy) -> Result<()> {
        self.scorer.source_mut().set_policy(policy, &self.trained_with.data)
    }

    pub fn source(&self) -> &ImageSource {
        self.scorer.source()
    }

    pub fn set_base_image_path(&mut self, base: Option<PathBuf>) {
        self.scorer.source_mut().set_base_path(base);
    }

    /// The side of the square images the model takes (the model file's `image_size`).
    pub fn input_size(&self) -> u32 {
        self.scorer.settings().input_size
    }

    /// Softmax probabilities for a normalised batch. A libtorch error in the forward pass
    /// (out of memory, say) is an error for this batch; the predictor stays usable.
    pub fn probabilities(&self, batch: &Tensor) -> Result<Vec<Vec<f64>>, String> {
        Ok(self.scorer.score_batch(batch)?.into_iter().map(|scores| scores.probabilities).collect())
    }

    /// Among classes whose probability passes its threshold, the most probable; else argmax.
    pub fn decide(&self, probabilities: &[f64]) -> Prediction {
        let class_index = self.rule.decide(probabilities);
        let mut order: Vec<usize> = (0..probabilities.len()).collect();
        order.sort_by(|&a, &b| probabilities[b].total_cmp(&probabilities[a]));
        Prediction {
            class_index,
            predicted_class: self.class_names()[class_index].clone(),
            confidence: probabilities[class_index],
            low_confidence: probabilities[class_index] < self.confidence_threshold,
            probabilities: probabilities.to_vec(),
            top_k: order.iter().take(self.top_k).map(|&c| (self.class_names()[c].clone(), probabilities[c])).collect(),
        }
    }

    /// The prediction from an image's scores; scores that are not finite numbers are no
    /// prediction but an error for that image (an ERROR row, counted by `--strict`).
    fn decide_scores(&self, scores: Result<crate::score::ImageScores, String>) -> Result<Prediction, String> {
        scores.and_then(crate::score::ImageScores::check_finite).map(|s| self.decide(&s.probabilities))
    }

    /// Predictions for decoded, resized images (one batch); an image whose scores are not
    /// finite numbers fails the batch.
    pub fn predict_images(&self, images: &[RgbImage]) -> Result<Vec<Prediction>, String> {
        let scores = self.scorer.score_images(images)?;
        scores.into_iter().map(|scores| self.decide_scores(Ok(scores))).collect()
    }

    /// The prediction for a local file given by path (any bytes, on Unix not only UTF-8).
    pub fn predict_file(&self, path: &Path) -> Result<Prediction, String> {
        let label = path.to_string_lossy();
        let (image, permit) = self
            .source()
            .read_path(path)
            .and_then(|bytes| decode_within_budget(&bytes, &label, self.source().decode_limits(), None))
            .map_err(|e| format!("{e:#}"))?;
        let resized = resize_square(&image, self.input_size());
        drop((image, permit));
        self.predict_images(std::slice::from_ref(&resized)).map(|mut p| p.remove(0))
    }

    /// Predictions for image keys, in order (one batch); an image that cannot be read
    /// gives the reason instead.
    pub fn predict_keys(&self, keys: &[String]) -> Vec<Result<Prediction, String>> {
        self.predict_loaded(self.load_keys(keys))
    }

    /// Decodes and resizes the images of image keys (one batch), in order.
    pub fn load_keys(&self, keys: &[String]) -> LoadedBatch {
        let records: Vec<ImageRecord> = keys
            .iter()
            .map(|k| ImageRecord { product_id: String::new(), image_path: k.clone(), image_type: String::new() })
            .collect();
        self.load_batch(&records.iter().collect::<Vec<_>>())
    }

    /// Predictions from a loaded batch and the scores of its images (from a forward pass
    /// run elsewhere, e.g. merged with other callers').
    pub fn decide_loaded(
        &self,
        batch: LoadedBatch,
        scores: Result<Vec<crate::score::ImageScores>, String>,
    ) -> Vec<Result<Prediction, String>> {
        batch.with_scores(scores).into_iter().map(|outcome| self.decide_scores(outcome)).collect()
    }

    /// Loads and predicts records' images as one batch, in order; an image that cannot be
    /// read gives the reason instead (and every image of a batch the model fails on).
    pub fn predict_records(&self, records: &[&ImageRecord]) -> Vec<Result<Prediction, String>> {
        self.predict_loaded(self.load_batch(records))
    }

    /// Decodes and resizes a batch's images (see [`BatchScorer::load`]).
    pub fn load_batch(&self, records: &[&ImageRecord]) -> LoadedBatch {
        self.scorer.load(records)
    }

    /// As [`Self::predict_loaded`], each outcome with the image's own time in milliseconds:
    /// its fetching, decoding and resizing plus an equal share of its batch's forward pass.
    pub fn predict_loaded_timed(&self, batch: LoadedBatch) -> Vec<(Result<Prediction, String>, f64)> {
        let outcomes = self.scorer.score_loaded_timed(batch);
        outcomes.into_iter().map(|(outcome, ms)| (self.decide_scores(outcome), ms)).collect()
    }

    /// The other half: the forward pass over a loaded batch, outcomes in order.
    pub fn predict_loaded(&self, batch: LoadedBatch) -> Vec<Result<Prediction, String>> {
        let outcomes = self.scorer.score_loaded(batch);
        outcomes.into_iter().map(|outcome| self.decide_scores(outcome)).collect()
    }
}
