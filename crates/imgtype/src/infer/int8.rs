//! Measuring a model's INT8 ranges on images and storing them in its model file: at the end
//! of `train` (on training images) and by `test --model-path M --int8-calibrate CSV
//! --output-path NEW` for a model file without them (an older one, or the Python system's);
//! and, at the end of `train`, how often INT8 then decides as the run's evaluation did.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::config::Precision;
use crate::data::csv_records::Table;
use crate::data::{ImageRecord, ImageSource};
use crate::eval::{evaluate_records, SplitEvaluation};
use crate::model::input::to_normalized_batch;
use crate::model::quantize;
use crate::model::ImageTypeClassifier;
use crate::score::{BatchScorer, DecisionRule, OpenVinoEngine, ScoringSettings};

/// At most this many images are measured: NNCF's default subset size, and more moves no range
/// much (the ranges are the extremes seen, so they only grow).
pub const CALIBRATION_IMAGES: usize = 300;

/// Fewer images than this are warned about.
const FEW_IMAGES: usize = 32;

/// Images per forward pass while measuring.
const BATCH: usize = 32;

#[derive(Debug, Serialize)]
pub struct Int8Calibration {
    pub output_path: PathBuf,
    /// Images measured.
    pub images: usize,
    /// Images that could not be read, each with why (first few).
    pub unreadable: Vec<String>,
    pub convolutions: usize,
}

/// Measures `model` (on the CPU) on up to [`CALIBRATION_IMAGES`] of `records`' images, spread
/// evenly over them, and writes it with the ranges to `output` (which may be the file it was
/// loaded from: written to a temporary file, then renamed).
pub fn calibrate_model(
    model: &mut ImageTypeClassifier,
    records: &[ImageRecord],
    source: &ImageSource,
    workers: usize,
    output: &Path,
) -> Result<Int8Calibration> {
    let chosen = spread(records, CALIBRATION_IMAGES);
    let loaded = crate::data::batch::load_images(&chosen, source, model.input_size(), workers);
    let mut images = Vec::with_capacity(loaded.len());
    let mut unreadable = Vec::new();
    for (record, result) in chosen.iter().zip(loaded) {
        match result {
            Ok(image) => images.push(image),
            Err(reason) => unreadable.push(format!("{}: {reason}", record.image_path)),
        }
    }
    if images.is_empty() {
        let first = unreadable.first().map_or(String::new(), |reason| format!(" (first: {reason})"));
        bail!("none of the {} images chosen to measure INT8 ranges on could be read{first}", chosen.len());
    }
    if !unreadable.is_empty() {
        tracing::warn!("{} of {} calibration images unreadable, skipped", unreadable.len(), chosen.len());
    }
    if images.len() < FEW_IMAGES {
        tracing::warn!(
            "INT8 ranges from {} images only: a range is the extremes seen, so rarer values will be clipped; \
             {CALIBRATION_IMAGES} are measured where there are as many",
            images.len()
        );
    }
    let batches: Vec<&[image::RgbImage]> = images.chunks(BATCH).collect();
    let normalized = |i: usize| crate::model::input::to_device(&to_normalized_batch(batches[i]), model.device());
    let ranges = quantize::measure(model, batches.len(), normalized)?;
    let convolutions = ranges.convolutions.len();
    let measured = ranges.images;
    model.set_int8_ranges(ranges)?;
    // Checked again: a file put there while the ranges were measured is not replaced either.
    crate::fsutil::check_replaceable(output, crate::fsutil::Replaceable::Safetensors)?;
    model
        .save(output)
        .with_context(|| format!("cannot write the model with its INT8 ranges to {}", output.display()))?;
    tracing::info!("INT8 ranges of {convolutions} convolutions measured on {measured} images: {}", output.display());
    unreadable.truncate(5);
    Ok(Int8Calibration { output_path: output.to_path_buf(), images: measured, unreadable, convolutions })
}

/// The image paths of `csv_path`'s `image_column`, as records for [`calibrate_model_file`].
pub fn calibration_records(csv_path: &Path, image_column: &str) -> Result<Vec<ImageRecord>> {
    let mut table = Table::read(csv_path, "calibration CSV")?;
    let Some(column) = table.column(image_column)? else {
        bail!("{}: no `{image_column}` column (its columns: {})", csv_path.display(), table.header.join(", "));
    };
    let records: Vec<ImageRecord> = table
        .rows_with(&[column])
        .into_iter()
        .map(|(_, fields)| fields[column].trim().to_string())
        .filter(|path| !path.is_empty())
        .map(|image_path| ImageRecord { product_id: String::new(), image_path, image_type: String::new() })
        .collect();
    if records.is_empty() {
        bail!("{}: no image paths in the `{image_column}` column", csv_path.display());
    }
    Ok(records)
}

/// How often INT8 decides as another precision did on the same images.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Int8Agreement {
    /// Images both scored.
    pub images: usize,
    /// Of them, those INT8 gives the class the other precision gave.
    pub same_class: usize,
}

impl Int8Agreement {
    pub fn share(&self) -> f64 {
        self.same_class as f64 / self.images.max(1) as f64
    }

    /// More than 2% of the images (and more than one) decided otherwise: on some trainings INT8
    /// loses several points (README, "Agreement with fp32"), and a user should learn it of
    /// theirs when the run ends; one image of a small split is noise.
    pub fn loses_decisions(&self) -> bool {
        let tolerated = (self.images as f64 * 0.02).floor().max(1.0) as usize;
        self.images - self.same_class > tolerated
    }
}

/// INT8 (OpenVINO, with `model`'s stored ranges, on `threads` threads, logits divided by
/// `temperature`) over `records`, against `reference`, another engine's or precision's
/// evaluation of the same records, each image's class chosen by `rule` as `test` chooses it.
pub fn int8_agreement(
    model: &ImageTypeClassifier,
    records: &[ImageRecord],
    reference: &SplitEvaluation,
    rule: &DecisionRule,
    (source, settings, threads, temperature): (&ImageSource, ScoringSettings, usize, f64),
) -> Result<Int8Agreement> {
    let ranges = model.int8_ranges().context("no INT8 ranges")?;
    let kind = crate::model::device::inference_kind(Precision::Int8, tch::Device::Cpu);
    let engine = OpenVinoEngine::int8(model, ranges, kind, threads.max(1))?;
    let scorer = BatchScorer::new(Box::new(engine), source.clone(), settings, model.class_names().len())
        .with_temperature(temperature);
    let int8 = evaluate_records(&scorer, model.class_names(), records, None, "INT8 check of the test images")?;
    Ok(decisions_agreement(reference, &int8, rule))
}

/// Of the images both evaluations scored, how many `rule` gives the same class in each.
fn decisions_agreement(reference: &SplitEvaluation, other: &SplitEvaluation, rule: &DecisionRule) -> Int8Agreement {
    let reference: HashMap<usize, usize> =
        reference.scored.iter().zip(&reference.probabilities).map(|(&i, p)| (i, rule.decide(p))).collect();
    let both: Vec<(usize, usize)> = (other.scored.iter().zip(&other.probabilities))
        .filter_map(|(i, p)| reference.get(i).map(|&r| (r, rule.decide(p))))
        .collect();
    Int8Agreement { images: both.len(), same_class: both.iter().filter(|(r, q)| r == q).count() }
}

/// At most `count` of `records`, evenly spaced, in order (every class of a split sorted by
/// product, not only the first products).
fn spread(records: &[ImageRecord], count: usize) -> Vec<&ImageRecord> {
    if records.len() <= count {
        return records.iter().collect();
    }
    (0..count).map(|i| &records[i * records.len() / count]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(n: usize) -> Vec<ImageRecord> {
        (0..n)
            .map(|i| ImageRecord {
                product_id: i.to_string(),
                image_path: format!("{i}.jpg"),
                image_type: String::new(),
            })
            .collect()
    }

    #[test]
    fn spread_takes_evenly_spaced_records_and_all_of_few() {
        let many = records(1000);
        let chosen: Vec<&str> = spread(&many, 4).iter().map(|r| r.product_id.as_str()).collect();
        assert_eq!(chosen, ["0", "250", "500", "750"]);
        assert_eq!(spread(&records(3), 300).len(), 3);
    }

    /// The check decides as `test` does: a class threshold between two evaluations' probabilities
    /// separates decisions their argmaxes share; images only one side scored are not counted.
    #[test]
    fn agreement_is_of_the_rule_s_decisions_on_images_both_scored() {
        let evaluation = |scored: Vec<usize>, probabilities: Vec<Vec<f64>>| SplitEvaluation {
            loss: 0.0,
            y_true: vec![0; scored.len()],
            logits: Vec::new(),
            unreadable: 0,
            scored,
            probabilities,
        };
        let bf16 = evaluation(vec![0, 1, 2], vec![vec![0.61, 0.39], vec![0.2, 0.8], vec![0.9, 0.1]]);
        let int8 = evaluation(vec![0, 1, 3], vec![vec![0.59, 0.41], vec![0.3, 0.7], vec![0.5, 0.5]]);
        let argmax = DecisionRule::from_thresholds(vec![0.0, 0.0]);
        assert_eq!(decisions_agreement(&bf16, &int8, &argmax), Int8Agreement { images: 2, same_class: 2 });
        let thresholded = DecisionRule::from_thresholds(vec![0.6, 0.0]);
        assert_eq!(decisions_agreement(&bf16, &int8, &thresholded), Int8Agreement { images: 2, same_class: 1 });
    }

    #[test]
    fn int8_loses_decisions_beyond_two_percent_and_one_image() {
        let agreement = |images, same_class| Int8Agreement { images, same_class };
        assert!(!agreement(33, 33).loses_decisions() && !agreement(33, 32).loses_decisions());
        assert!(agreement(33, 31).loses_decisions(), "2 of 33");
        assert!(!agreement(376, 369).loses_decisions(), "7 of 376: 1.9%");
        assert!(agreement(376, 368).loses_decisions() && agreement(376, 357).loses_decisions());
        assert!(!agreement(0, 0).loses_decisions());
    }
}
