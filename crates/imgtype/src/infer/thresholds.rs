//! `test --fit-thresholds`: per-class thresholds chosen on the validation split to maximise
//! the model's validation metric, written into a copy of the model file. The Python system's
//! users set them by hand. The test split is only ever scored, never fitted on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde::Serialize;

use super::Predictor;
use crate::config::Metric;
use crate::data::records::{read_split_csv, SplitName};
use crate::eval::{compute_metrics, evaluate_records, metric_score, Metrics, SplitEvaluation};
use crate::model::ImageTypeClassifier;
use crate::score::DecisionRule;

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

/// A split scored with the predictor's engine (unreadable images left out, with a warning).
fn score_split(predictor: &Predictor, data_dir: &Path, split: SplitName) -> Result<SplitEvaluation> {
    let records = read_split_csv(&data_dir.join(split.file_name()), predictor.class_names())?;
    let scored = evaluate_records(predictor.scorer(), predictor.class_names(), &records, None, split.as_str())?;
    if scored.y_true.is_empty() {
        bail!("{}: no image could be scored", split.as_str());
    }
    Ok(scored)
}

fn metrics_with(scored: &SplitEvaluation, class_names: &[String], thresholds: &[f64]) -> Metrics {
    let rule = DecisionRule::from_thresholds(thresholds.to_vec());
    let y_pred: Vec<usize> = scored.probabilities.iter().map(|p| rule.decide(p)).collect();
    compute_metrics(class_names, &scored.y_true, &y_pred, None)
}

/// Fits thresholds on `data_dir`'s validation split, reports validation and test figures
/// before and after, and writes the model with them to `output`.
pub fn fit_thresholds(
    predictor: &Predictor,
    model_path: &Path,
    data_dir: &Path,
    output: &Path,
) -> Result<ThresholdFit> {
    let split_files = SplitName::ALL.map(|split| data_dir.join(split.file_name()));
    let inputs: Vec<&Path> = [model_path].into_iter().chain(split_files.iter().map(PathBuf::as_path)).collect();
    let output = &crate::fsutil::check_output_file(output, &inputs)?;
    crate::fsutil::check_replaceable(output, crate::fsutil::Replaceable::Safetensors)?;
    let class_names = predictor.class_names().to_vec();
    // The model's `validation.metric`; F1 weighted for `val_loss`, which thresholds do not change.
    let metric = match predictor.trained_with().validation.metric {
        Metric::ValLoss => Metric::F1Weighted,
        other => other,
    };
    let metric_value = |metrics: &Metrics| metric_score(metric, 0.0, metrics);
    let validation = score_split(predictor, data_dir, SplitName::Validation)?;
    let test = score_split(predictor, data_dir, SplitName::Test)?;
    let current = predictor.rule().thresholds().to_vec();
    let objective = |thresholds: &[f64]| metric_value(&metrics_with(&validation, &class_names, thresholds));
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
    model.set_class_thresholds(fitted.clone());
    // Checked again: a file put there while the splits were scored is not replaced either.
    crate::fsutil::check_replaceable(output, crate::fsutil::Replaceable::Safetensors)?;
    model.save(output)?;
    Ok(ThresholdFit {
        metric: serde_json::to_value(metric).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
        thresholds: fitted,
        validation_before: before,
        validation_after: best,
        test_before: metric_value(&test_before),
        test_after: metric_value(&test_after),
        test_accuracy_before: test_before.accuracy,
        test_accuracy_after: test_after.accuracy,
        model_file: output.to_path_buf(),
    })
}
