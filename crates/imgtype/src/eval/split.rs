//! A model scored over every image of a split: the loss, and the probabilities from which
//! the metrics follow. Unlike the Python system, the last partial batch is scored too.

use anyhow::{bail, Result};
use tch::Tensor;

use super::{compute_metrics, Metrics};
use crate::data::records::class_indices;
use crate::data::ImageRecord;
use crate::loss::{Loss, Targets};
use crate::score::{guarded, BatchScorer, DecisionRule};

/// Loss, probabilities and true labels of a model over records, every readable image scored.
pub struct SplitEvaluation {
    /// The mean loss over the scored images; 0 when no loss was asked for.
    pub loss: f64,
    pub y_true: Vec<usize>,
    pub probabilities: Vec<Vec<f64>>,
    /// Each scored image's logits, in the order of `y_true` (for calibration).
    pub logits: Vec<Vec<f32>>,
    /// Each scored image's index in the records, in the order of `y_true`.
    pub scored: Vec<usize>,
    /// Images that could not be read or scored this time (a download that failed, a file
    /// gone, a batch the model failed on).
    pub unreadable: usize,
}

impl SplitEvaluation {
    /// Metrics with the classes `rule` chooses, as `test` chooses them.
    pub fn metrics(&self, class_names: &[String], rule: &DecisionRule) -> Metrics {
        let y_pred: Vec<usize> = self.probabilities.iter().map(|p| rule.decide(p)).collect();
        compute_metrics(class_names, &self.y_true, &y_pred, Some(&self.probabilities))
    }
}

/// Scores `records` through `scorer` in its batches, with `loss` where one is given.
/// Training screens out unreadable images before it starts, so one that fails now (a
/// download, a file removed meanwhile) is left out with a warning rather than stopping the
/// run; a split with no readable image at all is an error.
pub fn evaluate_records(
    scorer: &BatchScorer,
    class_names: &[String],
    records: &[ImageRecord],
    loss: Option<&Loss>,
    label: &str,
) -> Result<SplitEvaluation> {
    let labels = class_indices(records, class_names)?;
    let batch_size = scorer.settings().batch_size;
    let mut evaluation = SplitEvaluation {
        loss: 0.0,
        y_true: Vec::new(),
        probabilities: Vec::new(),
        logits: Vec::new(),
        scored: Vec::new(),
        unreadable: 0,
    };
    let mut total_loss = 0.0;
    let mut progress = crate::progress::Progress::new(label, records.len() as u64, u64::MAX);
    for (start, (chunk, chunk_labels)) in
        (0..).step_by(batch_size).zip(records.chunks(batch_size).zip(labels.chunks(batch_size)))
    {
        let refs: Vec<&ImageRecord> = chunk.iter().collect();
        let mut logits = Vec::new();
        let mut image_logits = Vec::new();
        let mut probabilities = Vec::new();
        let mut image_labels = Vec::new();
        let mut scored = Vec::new();
        for (offset, ((outcome, record), &class)) in
            scorer.score_loaded(scorer.load(&refs)).into_iter().zip(chunk).zip(chunk_labels).enumerate()
        {
            match outcome {
                Ok(scores) => {
                    logits.extend_from_slice(&scores.logits);
                    image_logits.push(scores.logits);
                    probabilities.push(scores.probabilities);
                    image_labels.push(class);
                    scored.push(start + offset);
                }
                Err(reason) => {
                    tracing::warn!("{label}: leaving out {}: {reason}", record.image_path);
                    evaluation.unreadable += 1;
                }
            }
        }
        progress.advance(chunk.len() as u64, "");
        if image_labels.is_empty() {
            continue;
        }
        if let Some(loss) = loss {
            match batch_loss(loss, &logits, &image_labels) {
                Ok(value) => total_loss += value * image_labels.len() as f64,
                Err(reason) => {
                    tracing::warn!("{label}: leaving out a batch of {} images: {reason}", image_labels.len());
                    evaluation.unreadable += image_labels.len();
                    continue;
                }
            }
        }
        evaluation.probabilities.extend(probabilities);
        evaluation.logits.extend(image_logits);
        evaluation.scored.extend(scored);
        evaluation.y_true.extend(image_labels.iter().map(|&l| l as usize));
    }
    progress.finish();
    if evaluation.y_true.is_empty() && !records.is_empty() {
        bail!("{label}: none of its {} images could be read and scored", records.len());
    }
    evaluation.loss = total_loss / evaluation.y_true.len().max(1) as f64;
    Ok(evaluation)
}

/// The mean loss of one batch's logits (row-major, one row per label).
fn batch_loss(loss: &Loss, logits: &[f32], labels: &[i64]) -> Result<f64, String> {
    guarded(|| {
        let rows = labels.len() as i64;
        let logits = Tensor::from_slice(logits).f_view([rows, -1])?.f_to_device(loss.device())?;
        let targets = Tensor::from_slice(labels).f_to_device(loss.device())?;
        Ok(loss.compute(&logits, Targets::Hard(&targets)).f_double_value(&[])?)
    })
    .map_err(|reason| format!("the loss failed: {reason}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Backbone, Config};
    use crate::data::ImageSource;
    use crate::model::ImageTypeClassifier;
    use crate::score::{LibtorchEngine, ScoringSettings};
    use tch::{Device, Kind};

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
        let scorer = BatchScorer::new(
            Box::new(LibtorchEngine::new(&model, Kind::Float)),
            ImageSource::local(Some(dir.path().to_path_buf())),
            ScoringSettings::new(&config, 32),
            4,
        );
        let names = &config.data.class_names;
        let good = Loss::CrossEntropy { weights: None, label_smoothing: 0.0 };
        let scored = evaluate_records(&scorer, names, &records, Some(&good), "validation").unwrap();
        assert_eq!((scored.y_true.len(), scored.unreadable), (4, 0));
        let bad =
            Loss::CrossEntropy { weights: Some(Tensor::ones([3], (Kind::Float, Device::Cpu))), label_smoothing: 0.0 };
        let err = evaluate_records(&scorer, names, &records, Some(&bad), "validation").err().unwrap();
        assert!(err.to_string().contains("none of its 4 images could be read and scored"), "{err}");
    }
}
