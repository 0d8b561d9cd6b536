//! Evaluation: metrics from predictions, a model scored over every image of a split
//! (validation during training, the test split at its end, `--fit-thresholds`), and the one
//! rule that turns a validation metric into a score to maximise.

pub mod calibration;
mod metrics;
pub mod neighbours;
mod split;

pub use imgtype_dataset::label_issues;
pub use metrics::{compute_metrics, roc_auc, Averages, ClassReport, Metrics, MetricsRecord};
pub use split::{evaluate_records, SplitEvaluation};

use crate::config::Metric;

/// The validation figure `metric` names, oriented so that larger is better (model
/// selection, early stopping, the sweep's ranking, threshold fitting).
pub fn metric_score(metric: Metric, loss: f64, metrics: &Metrics) -> f64 {
    match metric {
        Metric::ValLoss => -loss,
        Metric::Accuracy => metrics.accuracy,
        Metric::F1Macro => metrics.macro_avg.f1,
        Metric::F1Weighted => metrics.weighted_avg.f1,
    }
}
