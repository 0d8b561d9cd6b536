//! `test --fit-thresholds`: per-class thresholds chosen on the validation split to maximise
//! the model's validation metric, written into a copy of the model file. The Python system's
//! users set them by hand. The test split is only ever scored, never fitted on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde::Serialize;

use super::Predictor;
use crate::config::Metric;
use crate::data::records::{class_indices, read_split_csv, SplitName};
use crate::data::ImageRecord;
use crate::eval::{compute_metrics, DecisionRule, Metrics};
use crate::model::ImageTypeClassifier;

/// Thresholds tried for each class: 0 (no threshold) and 0.05 … 0.95.
const CANDIDATES: usize = 20;

#[derive(Debug, Serialize)]
pub struct ThresholdFit {
    pub metric: String,
    pub thresholds: BTreeMap<String, f64>,
    pub validation_before: f64,
    pub validation_after: f64,
    pub test_before: f64,
    pub test_after: f64,
    pub test_accuracy_before: f64,
    pub test_accuracy_after: f64,
    pub model_file: PathBuf,
}

/// A split's probabilities and true classes (unreadable images left out, with a warning).
struct Scored {
    probabilities: Vec<Vec<f64>>,
    y_true: Vec<usize>,
}

fn score_split(predictor: &Predictor, records: &[ImageRecord], split: &str) -> Result<Scored> {
    let labels = class_indices(records, predictor.class_names())?;
    let mut scored = Scored { probabilities: Vec::new(), y_true: Vec::new() };
    let refs: Vec<&ImageRecord> = records.iter().collect();
    for (chunk, chunk_labels) in refs.chunks(predictor.batch_size).zip(labels.chunks(predictor.batch_size)) {
        for ((record, &label), outcome) in chunk.iter().zip(chunk_labels).zip(predictor.predict_records(chunk)) {
            match outcome {
                Ok(prediction) => {
                    scored.probabilities.push(prediction.probabilities);
                    scored.y_true.push(label as usize);
                }
                Err(reason) => tracing::warn!("{split}: leaving out {}: {reason}", record.image_path),
            }
        }
    }
    if scored.y_true.is_empty() {
        bail!("{split}: no image could be scored");
    }
    Ok(scored)
}

fn metrics_with(scored: &Scored, class_names: &[String], thresholds: &[f64]) -> Metrics {
    let rule = DecisionRule::from_thresholds(thresholds.to_vec());
    let y_pred: Vec<usize> = scored.probabilities.iter().map(|p| rule.decide(p)).collect();
    compute_metrics(class_names, &scored.y_true, &y_pred, None)
}

/// The figure thresholds are fitted for: the model's `validation.metric` (F1 weighted for
/// `val_loss`, which thresholds do not change).
fn metric_value(metric: Metric, metrics: &Metrics) -> f64 {
    match metric {
        Metric::Accuracy => metrics.accuracy,
        Metric::F1Macro => metrics.macro_avg.f1,
        _ => metrics.weighted_avg.f1,
    }
}

/// Fits thresholds on `data_dir`'s validation split, reports validation and test figures
/// before and after, and writes the model with them to `output`.
pub fn fit_thresholds(
    predictor: &Predictor,
    model_path: &Path,
    data_dir: &Path,
    output: &Path,
) -> Result<ThresholdFit> {
    let output = &crate::fsutil::check_output_file(output, &[model_path])?;
    let class_names = predictor.class_names().to_vec();
    let metric = match predictor.config().validation.metric {
        Metric::ValLoss => Metric::F1Weighted,
        other => other,
    };
    let validation = score_split(
        predictor,
        &read_split_csv(&data_dir.join(SplitName::Validation.file_name()), &class_names)?,
        "validation",
    )?;
    let test =
        score_split(predictor, &read_split_csv(&data_dir.join(SplitName::Test.file_name()), &class_names)?, "test")?;
    let current = DecisionRule::new(predictor.config(), &class_names).thresholds().to_vec();
    let objective = |thresholds: &[f64]| metric_value(metric, &metrics_with(&validation, &class_names, thresholds));
    let before = objective(&current);
    let (mut thresholds, mut best) = (current.clone(), before);
    // Coordinate ascent, two passes: a class's threshold changes only when the validation
    // figure strictly improves, so it can never end below where it started.
    for _ in 0..2 {
        for class in 0..class_names.len() {
            for step in 0..CANDIDATES {
                let mut trial = thresholds.clone();
                trial[class] = step as f64 * 0.05;
                let value = objective(&trial);
                if value > best + 1e-12 {
                    (thresholds, best) = (trial, value);
                }
            }
        }
    }
    let test_metrics = |t: &[f64]| metrics_with(&test, &class_names, t);
    let (test_before, test_after) = (test_metrics(&current), test_metrics(&thresholds));
    let mut model = ImageTypeClassifier::load(model_path, tch::Device::Cpu)?;
    let fitted: BTreeMap<String, f64> =
        class_names.iter().zip(&thresholds).filter(|(_, &t)| t > 0.0).map(|(name, &t)| (name.clone(), t)).collect();
    model.config_mut().inference.class_thresholds = fitted.clone();
    model.save(output)?;
    Ok(ThresholdFit {
        metric: serde_json::to_value(metric).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
        thresholds: fitted,
        validation_before: before,
        validation_after: best,
        test_before: metric_value(metric, &test_before),
        test_after: metric_value(metric, &test_after),
        test_accuracy_before: test_before.accuracy,
        test_accuracy_after: test_after.accuracy,
        model_file: output.to_path_buf(),
    })
}
