//! A model scored over every image of a split: the loss, and the probabilities from which
//! the metrics follow. Unlike the Python system, the last partial batch is scored too.

use anyhow::Result;
use tch::{Device, Kind, Tensor};

use super::{compute_metrics, Metrics};
use crate::config::Config;
use crate::data::batch::load_images;
use crate::data::image::to_normalized_batch;
use crate::data::records::class_indices;
use crate::data::{ImageRecord, ImageSource};
use crate::loss::{Loss, Targets};
use crate::model::ImageTypeClassifier;

/// Loss, probabilities and true labels of a model over records, every image scored.
pub struct SplitEvaluation {
    pub loss: f64,
    pub y_true: Vec<usize>,
    pub probabilities: Vec<Vec<f64>>,
}

impl SplitEvaluation {
    pub fn metrics(&self, class_names: &[String]) -> Metrics {
        let y_pred: Vec<usize> = self
            .probabilities
            .iter()
            .map(|p| (0..p.len()).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap_or(0))
            .collect();
        compute_metrics(class_names, &self.y_true, &y_pred, Some(&self.probabilities))
    }
}

/// Scores `model` on `records` in batches of `inference.batch_size`; an image that cannot
/// be read is an error (training screens them out before it starts).
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
    let batch_size = config.inference.batch_size.max(1);
    let mut total_loss = 0.0;
    let mut y_true = Vec::new();
    let mut probabilities = Vec::new();
    let mut progress = crate::progress::Progress::new(label, records.len() as u64, u64::MAX);
    for (chunk, chunk_labels) in records.chunks(batch_size).zip(labels.chunks(batch_size)) {
        let refs: Vec<&ImageRecord> = chunk.iter().collect();
        let images = load_images(&refs, source, config.augmentation.image_size, config.system.num_workers.max(1))
            .into_iter()
            .zip(chunk)
            .map(|(r, rec)| r.map_err(|e| anyhow::anyhow!("{}: {e}", rec.image_path)))
            .collect::<Result<Vec<_>>>()?;
        let batch = to_normalized_batch(&images).to_device(model.device());
        let targets = Tensor::from_slice(chunk_labels).to_device(model.device());
        let (loss, probs) = tch::no_grad(|| {
            let logits = model.forward_t(&batch, false);
            (loss_fn.compute(&logits, Targets::Hard(&targets)).double_value(&[]), logits.softmax(-1, Kind::Float))
        });
        total_loss += loss * chunk.len() as f64;
        let flat = Vec::<f32>::try_from(probs.to_device(Device::Cpu).flatten(0, -1))?;
        probabilities.extend(flat.chunks(class_names.len()).map(|r| r.iter().map(|&v| v as f64).collect::<Vec<_>>()));
        y_true.extend(chunk_labels.iter().map(|&l| l as usize));
        progress.advance(chunk.len() as u64, "");
    }
    progress.finish();
    Ok(SplitEvaluation { loss: total_loss / records.len().max(1) as f64, y_true, probabilities })
}
