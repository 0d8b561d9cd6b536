//! Everything a run needs once its folder exists: the device, the screened splits, the
//! model (with ImageNet weights when asked) and its EMA copy, the loss, the TensorBoard
//! writer. The same set-up serves a new run and a resumed one.

use std::sync::Arc;

use anyhow::Result;
use tch::{Device, Kind};

use super::splits::load_splits;
use super::tensorboard::EventWriter;
use super::RunFolder;
use crate::config::Config;
use crate::data::records::class_indices;
use crate::data::{ImageRecord, ImageSource};
use crate::loss::Loss;
use crate::model::ImageTypeClassifier;
use crate::score::{BatchScorer, DecisionRule, LibtorchEngine, ScoringSettings};

pub(super) struct Session {
    pub config: Arc<Config>,
    pub folder: RunFolder,
    pub device: Device,
    pub source: ImageSource,
    pub model: ImageTypeClassifier,
    /// The exponential moving average of the weights (`training.use_ema`): what is validated and saved.
    pub ema: Option<super::Ema>,
    pub loss_fn: Loss,
    /// How training batches are made (seed, batch size, input size, augmentations).
    pub batch_recipe: Arc<super::pipeline::BatchRecipe>,
    pub train_records: Arc<Vec<ImageRecord>>,
    pub train_labels: Arc<Vec<i64>>,
    pub val_records: Vec<ImageRecord>,
    pub test_records: Vec<ImageRecord>,
    /// Images left out because they could not be read (listed in `logs/skipped_images.csv`).
    pub skipped: usize,
    /// TensorBoard scalars in the logs folder; a run goes on without them if the file fails.
    pub events: Option<EventWriter>,
}

impl Session {
    pub fn open(folder: RunFolder) -> Result<Self> {
        let config = folder.config().clone();
        warn_about_ignored_settings(&config);
        let device = crate::device::resolve_device(config.system.device)?;
        tracing::info!("device: {}", crate::device::describe_device(device));
        crate::device::configure_cuda(&config.system, device);
        tch::manual_seed(config.system.seed as i64);
        let source = ImageSource::from_config(&config.data);
        let skipped_csv = folder.layout().skipped_images();
        let earlier = if folder.is_resumed() { super::artifacts::read_skipped(&skipped_csv) } else { None };
        if let Some(earlier) = &earlier {
            tracing::info!("reusing the first start's screening ({} image(s) left out)", earlier.len());
        }
        let recorded = super::run_folder::recorded_split_files(folder.dir())?;
        let splits = load_splits(&config, &source, earlier, recorded.as_deref())?;
        super::artifacts::write_skipped(&skipped_csv, &splits.skipped)?;
        let model = build_model(&config, device, folder.is_resumed())?;
        let t = &config.training;
        let ema = t.use_ema.then(|| super::Ema::new(&model, t.ema_decay, t.ema_warmup));
        let loss_fn = Loss::from_config(&config, &splits.train_counts, device)?;
        let train_labels = Arc::new(class_indices(&splits.train, &config.data.class_names)?);
        let batch_recipe = Arc::new(super::pipeline::BatchRecipe::new(&config));
        let events = match EventWriter::create(&folder.logs_dir()) {
            Ok(writer) => Some(writer),
            Err(e) => {
                tracing::warn!("no TensorBoard event file: {e:#}");
                None
            }
        };
        Ok(Session {
            config: Arc::new(config),
            folder,
            device,
            source,
            model,
            ema,
            loss_fn,
            batch_recipe,
            train_records: Arc::new(splits.train),
            train_labels,
            val_records: splits.validation,
            test_records: splits.test,
            skipped: splits.skipped.len(),
            events,
        })
    }

    /// The model that is validated and saved: the EMA when there is one.
    pub fn eval_model(&self) -> &ImageTypeClassifier {
        self.ema.as_ref().map(|ema| &ema.model).unwrap_or(&self.model)
    }

    /// `model`'s current weights as the inference model `test` and the API run (BatchNorm
    /// folded, `system.precision`): validation and the test evaluation give their numbers.
    pub fn scorer(&self, model: &ImageTypeClassifier) -> BatchScorer {
        let kind = crate::device::inference_kind(self.config.system.precision, model.device());
        BatchScorer::new(
            Box::new(LibtorchEngine::new(model, kind)),
            self.source.clone(),
            ScoringSettings::new(&self.config, model.input_size()),
            model.class_names().len(),
        )
    }

    /// The decision rule of the run's config, as `test` will apply it to the saved model.
    pub fn decision_rule(&self) -> DecisionRule {
        DecisionRule::new(&self.config.inference.class_thresholds, self.model.class_names())
    }
}

/// A fresh model; unless resuming (the checkpoint has every weight), its backbone starts
/// from ImageNet weights when `model.pretrained`.
fn build_model(config: &Config, device: Device, resuming: bool) -> Result<ImageTypeClassifier> {
    let mut model = ImageTypeClassifier::new(config, device);
    if !resuming {
        if let Some(weights) = crate::model::pretrained::resolve_weights_file(&config.model)? {
            crate::model::load_backbone_weights(&mut model, &weights)?;
        }
    }
    let pretrained_loaded = config.model.pretrained;
    let freeze_epochs = config.frozen_epochs();
    if !pretrained_loaded && freeze_epochs > 0 {
        tracing::warn!(
            "model.freeze_backbone_epochs = {freeze_epochs} with a randomly initialised backbone: frozen random \
             features only waste epochs; set it to 0 when training from scratch (see configs/demo.json)"
        );
    }
    let kind = crate::device::training_kind(&config.system, device);
    let native = crate::device::has_native_bf16(device);
    if config.system.mixed_precision && kind == Kind::Float {
        tracing::warn!(
            "system.mixed_precision: {} has no native bf16 arithmetic; training in fp32",
            crate::device::describe_device(device)
        );
    } else if kind == Kind::BFloat16 {
        tracing::info!(
            "training in bf16 (weights and optimiser in fp32){}",
            if native { "" } else { "; this device emulates bf16, which is slow" }
        );
    }
    model.set_compute_kind(kind);
    Ok(model)
}

fn warn_about_ignored_settings(config: &Config) {
    if config.logging.use_wandb {
        tracing::warn!(
            "logging.use_wandb: Weights & Biases is not called from here; every run writes logs/metrics.csv and \
             logs/training_results.json instead"
        );
    }
}
