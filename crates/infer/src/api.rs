//! The backend API (the Python system's `run.py`): list of image paths in, list of
//! predictions out, same order; writes no files; one log line per call.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use serde::Serialize;
use tch::Device;

use super::batcher::Batcher;
use super::{Prediction, Predictor};
use imgtype_images::SourcePolicy;
use imgtype_model::ImageTypeClassifier;

/// What the backend gets for one image. An image that cannot be read or predicted gives
/// `predicted_class = "ERROR"` and confidence 0.0.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiPrediction {
    pub image_path: String,
    pub predicted_class: String,
    pub confidence: f64,
    /// The confidence is under `inference.confidence_threshold`: a case for human review
    /// (meaningful once the model's temperature is calibrated, as training does). False
    /// for `ERROR` rows.
    pub low_confidence: bool,
    /// Why an `ERROR` row is one (an unreadable image, a path the source policy refuses).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub const ERROR_CLASS: &str = imgtype_base::config::RESERVED_CLASS_NAME;

/// `Send + Sync`: share one instance (e.g. in an `Arc`) between request threads. Each call
/// decodes its images on its own threads; the forward passes of concurrent calls are merged,
/// up to `inference.batch_size` images, into one, waiting at most
/// `inference.max_batch_delay_ms` for a call still decoding (see `batcher.rs`).
///
/// Paths usually come from a backend's own users, so the API applies
/// [`SourcePolicy::restricted`](imgtype_images::SourcePolicy::restricted) by default: relative
/// keys stay inside `data.base_image_path` or go to the CDN, absolute paths are refused,
/// absolute URLs only on the CDN's host, nothing that resolves to a non-public address.
/// [`Self::with_source_policy`] loosens it.
pub struct ImageClassificationApi {
    predictor: Arc<Predictor>,
    /// Started with the first call, so the predictor can still be configured before it; and
    /// again by the first call in a child made by `fork` (gunicorn `--preload`,
    /// `multiprocessing`), which has none of its parent's threads.
    batcher: Mutex<Option<Arc<Batcher>>>,
}

impl ImageClassificationApi {
    /// Loads a model file (or run folder) on the best device (CUDA, then MPS, then CPU).
    pub fn new(model_path: impl AsRef<Path>) -> Result<Self> {
        let device = imgtype_model::device::resolve_device(imgtype_base::config::DeviceChoice::Auto)?;
        Self::with_device(model_path, device)
    }

    pub fn with_device(model_path: impl AsRef<Path>, device: Device) -> Result<Self> {
        Ok(Self::from_predictor(Predictor::load(model_path.as_ref(), device)?))
    }

    /// From a model already in memory (for example right after training).
    pub fn from_model(model: ImageTypeClassifier) -> Self {
        Self::from_predictor(Predictor::from_model(model))
    }

    /// With the restricted source policy applied to `predictor`.
    pub fn from_predictor(mut predictor: Predictor) -> Self {
        predictor.set_source_policy(SourcePolicy::restricted()).expect("the restricted policy lists no host to read");
        Self { predictor: Arc::new(predictor), batcher: Mutex::new(None) }
    }

    /// Replaces the source policy (for example to allow more hosts, or absolute paths for a
    /// backend that only passes its own). Fails on an allowed host that is not a host.
    pub fn with_source_policy(mut self, policy: SourcePolicy) -> Result<Self> {
        // The forward-pass thread shares the predictor: stopped here, it restarts with the next call.
        drop(self.batcher.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner()).take());
        let predictor = Arc::get_mut(&mut self.predictor).ok_or_else(|| {
            anyhow::anyhow!(
                "the source policy is set before the first prediction (in the process that loaded the model)"
            )
        })?;
        predictor.set_source_policy(policy)?;
        Ok(self)
    }

    /// The forward-pass thread of this process, started if there is none yet (or the one
    /// there is belongs to the parent this process was forked from).
    fn batcher(&self) -> Arc<Batcher> {
        let _section = crate::forksafe::enter();
        let mut batcher = self.batcher.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match batcher.as_ref() {
            Some(running) if running.is_in_this_process() => running.clone(),
            _ => {
                let delay = self.predictor.trained_with().inference.max_batch_delay_ms;
                let started = Arc::new(Batcher::start(self.predictor.clone(), Duration::from_millis(delay)));
                // A parent's batcher, dropped here, leaves its thread's handle alone (see `Batcher`).
                *batcher = Some(started.clone());
                started
            }
        }
    }

    /// Full predictions (probabilities, top-k) for every key, in order; an image that
    /// cannot be read or predicted gives the reason instead. Forward passes are shared
    /// with concurrent callers.
    pub fn predict_full(&self, keys: &[String]) -> Vec<Result<Prediction, String>> {
        let mut outcomes = Vec::with_capacity(keys.len());
        let batcher = self.batcher();
        for chunk in keys.chunks(self.predictor.batch_size()) {
            let coming = batcher.coming();
            let mut loaded = self.predictor.load_keys(chunk);
            let scores = coming.score(loaded.take_images());
            outcomes.extend(self.predictor.decide_loaded(loaded, scores));
        }
        outcomes
    }

    /// Forward passes run so far by this API (each over one or more calls' images).
    pub fn forward_passes(&self) -> usize {
        self.batcher.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).as_ref().map_or(0, |b| b.forward_passes())
    }

    pub fn class_names(&self) -> &[String] {
        self.predictor.class_names()
    }

    /// The loaded model and decision rule, for callers that want full predictions
    /// (probabilities, top-k).
    pub fn predictor(&self) -> &Predictor {
        &self.predictor
    }

    /// Predicts every path; never fails as a whole because of one bad image.
    pub fn predict<S: AsRef<str>>(&self, image_paths: &[S]) -> Vec<ApiPrediction> {
        let started = Instant::now();
        let keys: Vec<String> = image_paths.iter().map(|p| p.as_ref().to_string()).collect();
        let mut results = Vec::with_capacity(keys.len());
        for (key, outcome) in keys.iter().zip(self.predict_full(&keys)) {
            results.push(match outcome {
                Ok(p) => ApiPrediction {
                    image_path: key.clone(),
                    predicted_class: p.predicted_class,
                    low_confidence: p.low_confidence,
                    confidence: p.confidence,
                    error: None,
                },
                Err(reason) => {
                    tracing::warn!("prediction failed for {}: {reason}", imgtype_base::keys::shown(key));
                    ApiPrediction {
                        image_path: key.clone(),
                        predicted_class: ERROR_CLASS.into(),
                        confidence: 0.0,
                        low_confidence: false,
                        error: Some(reason),
                    }
                }
            });
        }
        let failed = results.iter().filter(|r| r.predicted_class == ERROR_CLASS).count();
        let mut distribution: BTreeMap<&str, usize> = BTreeMap::new();
        for r in results.iter().filter(|r| r.predicted_class != ERROR_CLASS) {
            *distribution.entry(&r.predicted_class).or_default() += 1;
        }
        let distribution: Vec<String> = distribution.iter().map(|(c, n)| format!("{c}={n}")).collect();
        tracing::info!(
            "predicted {} image(s) in {:.1} ms ({}): {} succeeded, {failed} failed; classes: {}",
            results.len(),
            started.elapsed().as_secs_f64() * 1000.0,
            self.predictor.engine_description(),
            results.len() - failed,
            if distribution.is_empty() { "none".to_string() } else { distribution.join(", ") }
        );
        results
    }
}
