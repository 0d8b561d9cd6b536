//! A model scored over every image of a split: the loss, and the probabilities from which
//! the metrics follow. Unlike the Python system, the last partial batch is scored too.

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

use super::{compute_metrics, Metrics};
use crate::config::Config;
use crate::data::batch::load_images;
use crate::data::image::{to_device, to_normalized_batch};
use crate::data::records::class_indices;
use crate::data::{ImageRecord, ImageSource};
use crate::device::inference_kind;
use crate::loss::{Loss, Targets};
use crate::model::fused::FusedClassifier;
use crate::model::ImageTypeClassifier;

/// Loss, probabilities and true labels of a model over records, every readable image scored.
pub struct SplitEvaluation {
    pub loss: f64,
    pub y_true: Vec<usize>,
    pub probabilities: Vec<Vec<f64>>,
    /// Images that could not be read this time (a download that failed, a file gone).
    pub unreadable: usize,
}

impl SplitEvaluation {
    /// Metrics with the classes chosen by `config`'s decision rule, as `test` chooses them.
    pub fn metrics(&self, config: &Config) -> Metrics {
        let class_names = &config.data.class_names;
        let rule = super::DecisionRule::new(config, class_names);
        let y_pred: Vec<usize> = self.probabilities.iter().map(|p| rule.decide(p)).collect();
        compute_metrics(class_names, &self.y_true, &y_pred, Some(&self.probabilities))
    }
}

/// Scores `model` on `records` in batches of `inference.batch_size`, with the inference model
/// (BatchNorm folded, `system.precision`) that `test` and the API use. Training screens out
/// unreadable images before it starts, so one that fails now (a download, a file removed
/// meanwhile) is left out with a warning rather than stopping the run; a split with no
/// readable image at all is an error.
pub fn evaluate_records(
    model: &ImageTypeClassifier,
    records: &[ImageRecord],
    loss_fn: &Loss,
    config: &Config,
    source: &ImageSource,
    label: &str,
) -> Result<SplitEvaluation> {
    let class_names = model.class_names().to_vec();
    let labels = class_indices(records, &class_names)?;
    // The same inference model and number format as `test` and the API: one set of numbers.
    let fused = FusedClassifier::new(model, inference_kind(config.system.precision, model.device()));
    let batch_size = config.inference.batch_size.max(1);
    let mut total_loss = 0.0;
    let mut y_true = Vec::new();
    let mut probabilities = Vec::new();
    let mut unreadable = 0;
    let mut progress = crate::progress::Progress::new(label, records.len() as u64, u64::MAX);
    for (chunk, chunk_labels) in records.chunks(batch_size).zip(labels.chunks(batch_size)) {
        let refs: Vec<&ImageRecord> = chunk.iter().collect();
        let mut images = Vec::with_capacity(chunk.len());
        let mut image_labels = Vec::with_capacity(chunk.len());
        let loaded = load_images(&refs, source, config.augmentation.image_size, config.system.num_workers.max(1));
        for ((result, record), &class) in loaded.into_iter().zip(chunk).zip(chunk_labels) {
            match result {
                Ok(image) => {
                    images.push(image);
                    image_labels.push(class);
                }
                Err(reason) => {
                    tracing::warn!("{label}: leaving out {}: {reason}", record.image_path);
                    unreadable += 1;
                }
            }
        }
        progress.advance(chunk.len() as u64, "");
        if images.is_empty() {
            continue;
        }
        let batch = to_device(&to_normalized_batch(&images), model.device());
        let targets = Tensor::from_slice(&image_labels).to_device(model.device());
        let (loss, probs) = tch::no_grad(|| {
            let logits = fused.forward(&batch);
            (loss_fn.compute(&logits, Targets::Hard(&targets)).double_value(&[]), logits.softmax(-1, Kind::Float))
        });
        total_loss += loss * images.len() as f64;
        let flat = Vec::<f32>::try_from(probs.to_device(Device::Cpu).flatten(0, -1))?;
        probabilities.extend(flat.chunks(class_names.len()).map(|r| r.iter().map(|&v| v as f64).collect::<Vec<_>>()));
        y_true.extend(image_labels.iter().map(|&l| l as usize));
    }
    progress.finish();
    if y_true.is_empty() && !records.is_empty() {
        bail!("{label}: none of its {} images could be read", records.len());
    }
    Ok(SplitEvaluation { loss: total_loss / y_true.len().max(1) as f64, y_true, probabilities, unreadable })
}
