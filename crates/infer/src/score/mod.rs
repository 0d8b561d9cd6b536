//! The one batch scorer under evaluation and inference: a batch's images loaded (fetched,
//! decoded and resized on several threads), one guarded forward pass through an
//! [`InferenceEngine`], probabilities, and the [`DecisionRule`]. Validation, the final test
//! evaluation, every `test` mode, the API and `--fit-thresholds` score through it, so they
//! share one set of numbers and one way of failing: a bad image costs its own slot, a
//! libtorch failure its own batch.

mod decision;
mod engine;
mod factory;
mod openvino;

use std::time::Instant;

use anyhow::Result;
use image::RgbImage;
use tch::{Kind, Tensor};

pub use decision::DecisionRule;
pub use engine::{InferenceEngine, LibtorchEngine};
pub use factory::build_engine;
pub use openvino::OpenVinoEngine;

use imgtype_base::config::Config;
use imgtype_images::batch::load_images_timed;
use imgtype_images::decode::panic_message;
use imgtype_images::{ImageRecord, ImageSource};

/// What loading and batching need, built once from a config: the model's input size (the
/// model file's, not the training augmentation's), images per forward pass, decoding threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScoringSettings {
    pub input_size: u32,
    pub batch_size: usize,
    pub workers: usize,
}

impl ScoringSettings {
    /// `inference.batch_size` (at least 1) and `system.num_workers`' decode threads at `input_size`.
    pub fn new(config: &Config, input_size: u32) -> Self {
        Self { input_size, batch_size: config.inference.batch_size.max(1), workers: config.system.decode_threads() }
    }
}

/// One image's scores: the logits and their softmax, in class order.
#[derive(Debug, Clone)]
pub struct ImageScores {
    pub logits: Vec<f32>,
    pub probabilities: Vec<f64>,
}

impl ImageScores {
    /// Itself, or why it is no prediction: a logit or probability that is NaN or infinite.
    pub fn check_finite(self) -> Result<Self, String> {
        let finite = self.logits.iter().all(|l| l.is_finite()) && self.probabilities.iter().all(|p| p.is_finite());
        if finite {
            Ok(self)
        } else {
            Err(format!(
                "the model's output is not a number (logits {:?}, probabilities {:?})",
                self.logits, self.probabilities
            ))
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

impl LoadedBatch {
    /// The decoded images, for a forward pass run elsewhere (batching across callers).
    pub fn take_images(&mut self) -> Vec<RgbImage> {
        std::mem::take(&mut self.images)
    }

    /// Each record's outcome, given the scores of its taken images (one row per image, in
    /// order) or the reason the forward pass failed.
    pub fn with_scores(self, scores: Result<Vec<ImageScores>, String>) -> Vec<Result<ImageScores, String>> {
        match scores {
            Ok(scores) => {
                let mut scores = scores.into_iter();
                self.slots
                    .into_iter()
                    .map(|slot| slot.map(|()| scores.next().expect("one row of scores per good image")))
                    .collect()
            }
            Err(reason) => self.slots.into_iter().map(|slot| slot.and(Err(reason.clone()))).collect(),
        }
    }
}

/// An engine plus where its images come from and how they are batched.
pub struct BatchScorer {
    engine: Box<dyn InferenceEngine>,
    source: ImageSource,
    settings: ScoringSettings,
    classes: usize,
    /// Logits are divided by it before the softmax (`inference.temperature`).
    temperature: f64,
}

impl BatchScorer {
    pub fn new(
        engine: Box<dyn InferenceEngine>,
        source: ImageSource,
        settings: ScoringSettings,
        classes: usize,
    ) -> Self {
        Self { engine, source, settings, classes, temperature: 1.0 }
    }

    /// With probabilities from `softmax(logits / temperature)`; the logits stay as they are.
    pub fn with_temperature(mut self, temperature: f64) -> Self {
        self.temperature = temperature;
        self
    }

    pub fn temperature(&self) -> f64 {
        self.temperature
    }

    pub fn settings(&self) -> ScoringSettings {
        self.settings
    }

    pub fn engine(&self) -> &dyn InferenceEngine {
        self.engine.as_ref()
    }

    pub fn source(&self) -> &ImageSource {
        &self.source
    }

    pub fn source_mut(&mut self) -> &mut ImageSource {
        &mut self.source
    }

    /// Decodes and resizes records' images on the configured threads: the half of scoring
    /// that a `test` run does for the next batch while the engine works on this one.
    pub fn load(&self, records: &[&ImageRecord]) -> LoadedBatch {
        let loaded = load_images_timed(records, &self.source, self.settings.input_size, self.settings.workers);
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

    /// Scores for decoded, resized images (one forward pass). A failure of the engine (a
    /// libtorch error or panic, out of memory, say) is an error for this batch only.
    pub fn score_images(&self, images: &[RgbImage]) -> Result<Vec<ImageScores>, String> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        self.scores_from(|| self.engine.logits_for_images(images))
    }

    /// As [`Self::score_images`] for a normalised batch `[N, 3, S, S]` on the CPU.
    pub fn score_batch(&self, batch: &Tensor) -> Result<Vec<ImageScores>, String> {
        self.scores_from(|| self.engine.logits(batch))
    }

    fn scores_from(&self, forward: impl FnOnce() -> Result<Tensor>) -> Result<Vec<ImageScores>, String> {
        let classes = self.classes;
        guarded(|| {
            let logits = forward()?;
            let probabilities = if self.temperature == 1.0 {
                logits.f_softmax(-1, Kind::Float)?
            } else {
                logits.f_div_scalar(self.temperature)?.f_softmax(-1, Kind::Float)?
            };
            let logits = Vec::<f32>::try_from(logits.f_flatten(0, -1)?)?;
            let probabilities = Vec::<f32>::try_from(probabilities.f_flatten(0, -1)?)?;
            anyhow::ensure!(logits.len() % classes.max(1) == 0, "{} outputs for {classes} classes", logits.len());
            Ok(logits
                .chunks(classes)
                .zip(probabilities.chunks(classes))
                .map(|(logits, probs)| ImageScores {
                    logits: logits.to_vec(),
                    probabilities: probs.iter().map(|&p| p as f64).collect(),
                })
                .collect())
        })
        .map_err(|reason| format!("the model failed on this batch: {reason}"))
    }

    /// The forward pass over a loaded batch: each record's scores or the reason it has none
    /// (its own, or the batch's when the engine failed), in order.
    pub fn score_loaded(&self, mut batch: LoadedBatch) -> Vec<Result<ImageScores, String>> {
        let scores = self.score_images(&batch.take_images());
        batch.with_scores(scores)
    }

    /// As [`Self::score_loaded`], each outcome with the image's own time in milliseconds:
    /// its fetching, decoding and resizing plus an equal share of its batch's forward pass.
    pub fn score_loaded_timed(&self, mut batch: LoadedBatch) -> Vec<(Result<ImageScores, String>, f64)> {
        let load_ms = std::mem::take(&mut batch.load_ms);
        let images = batch.images.len().max(1) as f64;
        let started = Instant::now();
        let outcomes = self.score_loaded(batch);
        let forward_share_ms = started.elapsed().as_secs_f64() * 1000.0 / images;
        outcomes.into_iter().zip(load_ms).map(|(outcome, ms)| (outcome, ms + forward_share_ms)).collect()
    }
}

/// Runs libtorch work that may fail or panic (tch panics on a libtorch error); either way
/// the caller gets the reason, and the process and the model stay usable.
pub fn guarded<T>(work: impl FnOnce() -> Result<T>) -> Result<T, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| tch::no_grad(work))) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(format!("{error:#}")),
        Err(panic) => Err(panic_message(&panic)),
    }
}
