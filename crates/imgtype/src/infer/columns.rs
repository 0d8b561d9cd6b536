//! The columns every `test` output row shares: predicted class, confidence,
//! `low_confidence`, one probability per class, top-k (or `ERROR` and blanks), then
//! `correct` where the true class is known, `inference_ms` and `error`.

use super::{Prediction, Predictor};

pub(super) fn prediction_header(class_names: &[String]) -> Vec<String> {
    let mut columns = vec!["predicted_class".to_string(), "confidence".to_string(), "low_confidence".to_string()];
    columns.extend(class_names.iter().map(|c| format!("prob_{c}")));
    columns.push("top_k".into());
    columns
}

/// `low_confidence` is true when the confidence is under `inference.confidence_threshold`.
pub(super) fn prediction_values(outcome: &Result<Prediction, String>, predictor: &Predictor) -> Vec<String> {
    let threshold = predictor.confidence_threshold();
    let classes = predictor.class_names().len();
    match outcome {
        Ok(p) => {
            let mut values =
                vec![p.predicted_class.clone(), format!("{:.6}", p.confidence), (p.confidence < threshold).to_string()];
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

/// `correct`: whether the prediction is `true_class`; blank for an image that failed.
pub(super) fn correct_value(outcome: &Result<Prediction, String>, true_class: &str) -> String {
    match outcome {
        Ok(p) => (p.predicted_class == true_class).to_string(),
        Err(_) => String::new(),
    }
}

/// `inference_ms` and `error`, the last columns of every row.
pub(super) fn timing_and_error(outcome: &Result<Prediction, String>, ms: f64) -> [String; 2] {
    [format!("{ms:.3}"), outcome.as_ref().err().cloned().unwrap_or_default()]
}
