//! Evaluation: metrics from predictions, and a model scored over every image of a split
//! (validation during training, the test split at its end).

mod decision;
mod metrics;
mod split;

pub use decision::DecisionRule;
pub use metrics::{compute_metrics, roc_auc, Averages, ClassReport, Metrics};
pub use split::{evaluate_records, SplitEvaluation};
