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
        // A libtorch failure on one batch (out of memory, say) costs that batch only.
        let scored = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            tch::no_grad(|| -> Result<(f64, Vec<f32>)> {
                let logits = fused.forward(&batch);
                let loss = loss_fn.compute(&logits, Targets::Hard(&targets)).f_double_value(&[])?;
                let probs = logits.f_softmax(-1, Kind::Float)?.f_to_device(Device::Cpu)?;
                Ok((loss, Vec::<f32>::try_from(probs.flatten(0, -1))?))
            })
        }));
        let (loss, flat) = match scored {
            Ok(Ok(scored)) => scored,
            Ok(Err(error)) => {
                tracing::warn!("{label}: leaving out a batch of {} images: {error:#}", images.len());
                unreadable += images.len();
                continue;
            }
            Err(panic) => {
                let reason = crate::data::decode::panic_message(&panic);
                tracing::warn!("{label}: leaving out a batch of {} images: the model failed: {reason}", images.len());
                unreadable += images.len();
                continue;
            }
        };
        total_loss += loss * images.len() as f64;
        probabilities.extend(flat.chunks(class_names.len()).map(|r| r.iter().map(|&v| v as f64).collect::<Vec<_>>()));
        y_true.extend(image_labels.iter().map(|&l| l as usize));
    }
    progress.finish();
    if y_true.is_empty() && !records.is_empty() {
        bail!("{label}: none of its {} images could be read and scored", records.len());
    }
    Ok(SplitEvaluation { loss: total_loss / y_true.len().max(1) as f64, y_true, probabilities, unreadable })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Backbone;

    /// A loss that libtorch refuses (class weights of the wrong length) fails every batch: the
    /// guard turns that into warnings and one error for the split, not a panic.
    #[test]
    fn a_libtorch_failure_while_scoring_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.augmentation.image_size = 32;
        config.model.backbone = Backbone::MobileNetV3Small;
        config.inference.batch_size = 2;
        let records: Vec<ImageRecord> = (0..4)
            .map(|i| {
                let name = format!("{i}.png");
                image::RgbImage::from_pixel(40, 40, image::Rgb([i * 50, 90, 20])).save(dir.path().join(&name)).unwrap();
                ImageRecord {
                    product_id: i.to_string(),
                    image_path: name,
                    image_type: config.data.class_names[0].clone(),
                }
            })
            .collect();
        let model = ImageTypeClassifier::new(&config, Device::Cpu);
        let source = ImageSource::local(Some(dir.path().to_path_buf()));
        let good = Loss::CrossEntropy { weights: None, label_smoothing: 0.0 };
        let scored = evaluate_records(&model, &records, &good, &config, &source, "validation").unwrap();
        assert_eq!((scored.y_true.len(), scored.unreadable), (4, 0));
        let bad =
            Loss::CrossEntropy { weights: Some(Tensor::ones([3], (Kind::Float, Device::Cpu))), label_smoothing: 0.0 };
        let err = evaluate_records(&model, &records, &bad, &config, &source, "validation").err().unwrap();
        assert!(err.to_string().contains("none of its 4 images could be read and scored"), "{err}");
    }
}
