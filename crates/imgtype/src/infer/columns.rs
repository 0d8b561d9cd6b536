//! The columns every `test` output row shares: predicted class, confidence,
//! `low_confidence`, one probability per class, top-k (or `ERROR` and blanks), then
//! `correct` where the true class is known, `inference_ms` and `error`.

use std::path::Path;

use anyhow::{bail, Result};

use super::{Prediction, Predictor};
use crate::data::{ImageRecord, SplitName};

/// The whole-dataset results CSV (`inference_results.csv`, and merged shards): its columns
/// defined once, for the writer (`dataset_mode`) and the reports read from it
/// (`wrong_predictions`).
pub(super) struct DatasetColumns {
    pub class_names: Vec<String>,
    width: usize,
}

impl DatasetColumns {
    pub const IMAGE_PATH: usize = 0;
    pub const SPLIT: usize = 1;
    pub const TRUE_CLASS: usize = 3;
    pub const PREDICTED_CLASS: usize = 4;
    pub const CONFIDENCE: usize = 5;
    const FIRST_PROBABILITY: usize = 7;

    pub fn new(class_names: &[String]) -> Self {
        let mut columns = Self { class_names: class_names.to_vec(), width: 0 };
        columns.width = columns.header().len();
        columns
    }

    pub fn header(&self) -> Vec<String> {
        let mut header: Vec<String> = ["image_path", "split", "product_id", "true_class"].map(String::from).to_vec();
        header.extend(prediction_header(&self.class_names));
        header.extend(["correct", "inference_ms", "error"].map(String::from));
        header
    }

    /// The columns of the results file at `path` with `header`: its classes from the
    /// `prob_` columns, every other column where [`Self::header`] puts it.
    pub fn from_header(header: &[String], path: &Path) -> Result<Self> {
        let class_names: Vec<String> =
            header.iter().filter_map(|h| h.strip_prefix("prob_").map(String::from)).collect();
        let columns = Self::new(&class_names);
        if columns.header() != header {
            bail!("{}: not a results file of `test` (expected the columns {:?})", path.display(), columns.header());
        }
        Ok(columns)
    }

    pub fn probability(&self, class: usize) -> usize {
        Self::FIRST_PROBABILITY + class
    }

    pub fn error(&self) -> usize {
        self.width - 1
    }

    /// One image's row.
    pub fn row(
        predictor: &Predictor,
        split: SplitName,
        record: &ImageRecord,
        outcome: &Result<Prediction, String>,
        ms: f64,
    ) -> Vec<String> {
        let mut values = vec![
            record.image_path.clone(),
            split.as_str().to_string(),
            record.product_id.clone(),
            record.image_type.clone(),
        ];
        values.extend(prediction_values(outcome, predictor));
        values.push(correct_value(outcome, &record.image_type, predictor.class_names()));
        values.extend(timing_and_error(outcome, ms));
        values
    }
}

pub(super) fn prediction_header(class_names: &[String]) -> Vec<String> {
    let mut columns = vec!["predicted_class".to_string(), "confidence".to_string(), "low_confidence".to_string()];
    columns.extend(class_names.iter().map(|c| format!("prob_{c}")));
    columns.push("top_k".into());
    columns
}

/// `low_confidence` is true when the confidence is under `inference.confidence_threshold`.
pub(super) fn prediction_values(outcome: &Result<Prediction, String>, predictor: &Predictor) -> Vec<String> {
    let classes = predictor.class_names().len();
    match outcome {
        Ok(p) => {
            let mut values =
                vec![p.predicted_class.clone(), format!("{:.6}", p.confidence), p.low_confidence.to_string()];
            values.extend(p.probabilities.iter().map(|v| format!("{v:.6}")));
            values.push(p.top_k.iter().map(|(c, v)| format!("{c}:{v:.4}")).collect::<Vec<_>>().join("|"));
            values
        }
        Err(_) => {
            let mut values = vec![super::api::ERROR_CLASS.to_string(), format!("{:.6}", 0.0), String::new()];
            values.extend(std::iter::repeat_n(String::new(), classes + 1));
            values
        }
    }
}

/// `correct`: whether the prediction is `true_class`; blank for an image that failed, and for
/// a label that is not one of `class_names` (empty, `ERROR`, a typo): unknown, not wrong.
pub(super) fn correct_value(outcome: &Result<Prediction, String>, true_class: &str, class_names: &[String]) -> String {
    match outcome {
        Ok(p) if class_names.iter().any(|c| c == true_class) => (p.predicted_class == true_class).to_string(),
        _ => String::new(),
    }
}

/// `inference_ms` and `error`, the last columns of every row.
pub(super) fn timing_and_error(outcome: &Result<Prediction, String>, ms: f64) -> [String; 2] {
    // Cut: a reason naming a path of near a mebibyte would make a row longer than any CSV reader
    // here (a merge of the shards) reads back.
    const MOST: usize = 4096;
    let mut error = outcome.as_ref().err().cloned().unwrap_or_default();
    if error.len() > MOST {
        let cut = (0..=MOST).rev().find(|&i| error.is_char_boundary(i)).unwrap_or(0);
        error.truncate(cut);
        error.push_str("… (cut)");
    }
    [format!("{ms:.3}"), error]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_reason_is_cut_on_a_character_boundary() {
        let reason = format!("cannot open image {}: No such file", "é".repeat(300_000));
        let [_, error] = timing_and_error(&Err(reason.clone()), 1.0);
        assert!(error.len() <= 4096 + "… (cut)".len() && error.ends_with("… (cut)"), "{}", error.len());
        assert!(reason.starts_with(error.trim_end_matches("… (cut)")));
        let [_, short] = timing_and_error(&Err("gone".into()), 1.0);
        assert_eq!(short, "gone");
    }
}
