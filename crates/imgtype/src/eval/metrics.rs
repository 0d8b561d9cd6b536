//! Classification metrics: accuracy, precision / recall / F1 (macro, micro, weighted),
//! one-vs-rest ROC AUC, per-class report and the confusion matrix.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClassReport {
    pub precision: f64,
    pub recall: f64,
    pub f1_score: f64,
    pub support: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Averages {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Metrics {
    pub num_samples: usize,
    pub accuracy: f64,
    pub macro_avg: Averages,
    pub micro_avg: Averages,
    pub weighted_avg: Averages,
    /// One-vs-rest ROC AUC; None when a class has no positive or no negative sample.
    pub roc_auc_macro: Option<f64>,
    pub roc_auc_weighted: Option<f64>,
    pub per_class: BTreeMap<String, ClassReport>,
    pub class_names: Vec<String>,
    /// Rows are true classes, columns predicted classes, in `class_names` order.
    pub confusion_matrix: Vec<Vec<usize>>,
}

fn ratio(num: f64, den: f64) -> f64 {
    if den > 0.0 {
        num / den
    } else {
        0.0
    }
}

fn f1(p: f64, r: f64) -> f64 {
    ratio(2.0 * p * r, p + r)
}

/// Area under the ROC curve by the rank statistic (ties get half credit).
pub fn roc_auc(scores: &[f64], positive: &[bool]) -> Option<f64> {
    let n_pos = positive.iter().filter(|&&p| p).count();
    let n_neg = positive.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut ranks = vec![0.0; scores.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for k in i..=j {
            ranks[order[k]] = rank;
        }
        i = j + 1;
    }
    let rank_sum: f64 = ranks.iter().zip(positive).filter(|(_, &p)| p).map(|(r, _)| r).sum();
    Some((rank_sum - (n_pos * (n_pos + 1)) as f64 / 2.0) / (n_pos * n_neg) as f64)
}

/// Metrics for true and predicted class indices; `probabilities` (one row per sample) enables AUC.
impl Metrics {
    /// As JSON: see [`MetricsRecord`].
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(MetricsRecord::from(self.clone())).expect("metrics serialise")
    }
}

/// Metrics as the result files hold them: our nested fields plus the Python system's flat
/// keys with the same values (`precision_macro`, `recall_weighted`, `f1_micro`,
/// `auc_macro`, …), so scripts written for its `evaluation_results.json` keep working.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MetricsRecord {
    #[serde(flatten)]
    pub metrics: Metrics,
    precision_macro: f64,
    recall_macro: f64,
    f1_macro: f64,
    precision_micro: f64,
    recall_micro: f64,
    f1_micro: f64,
    precision_weighted: f64,
    recall_weighted: f64,
    f1_weighted: f64,
    auc_macro: Option<f64>,
    auc_weighted: Option<f64>,
}

impl From<Metrics> for MetricsRecord {
    fn from(metrics: Metrics) -> Self {
        let (m, u, w) = (&metrics.macro_avg, &metrics.micro_avg, &metrics.weighted_avg);
        Self {
            precision_macro: m.precision,
            recall_macro: m.recall,
            f1_macro: m.f1,
            precision_micro: u.precision,
            recall_micro: u.recall,
            f1_micro: u.f1,
            precision_weighted: w.precision,
            recall_weighted: w.recall,
            f1_weighted: w.f1,
            auc_macro: metrics.roc_auc_macro,
            auc_weighted: metrics.roc_auc_weighted,
            metrics,
        }
    }
}

pub fn compute_metrics(
    class_names: &[String],
    y_true: &[usize],
    y_pred: &[usize],
    probabilities: Option<&[Vec<f64>]>,
) -> Metrics {
    let k = class_names.len();
    let mut confusion = vec![vec![0usize; k]; k];
    for (&t, &p) in y_true.iter().zip(y_pred) {
        confusion[t][p] += 1;
    }
    let n = y_true.len();
    let correct: usize = (0..k).map(|c| confusion[c][c]).sum();
    let mut per_class = BTreeMap::new();
    let (mut macro_p, mut macro_r, mut macro_f) = (0.0, 0.0, 0.0);
    let (mut weighted_p, mut weighted_r, mut weighted_f) = (0.0, 0.0, 0.0);
    for c in 0..k {
        let tp = confusion[c][c] as f64;
        let predicted: usize = (0..k).map(|t| confusion[t][c]).sum();
        let support: usize = confusion[c].iter().sum();
        let precision = ratio(tp, predicted as f64);
        let recall = ratio(tp, support as f64);
        let f = f1(precision, recall);
        macro_p += precision / k as f64;
        macro_r += recall / k as f64;
        macro_f += f / k as f64;
        let w = ratio(support as f64, n as f64);
        weighted_p += precision * w;
        weighted_r += recall * w;
        weighted_f += f * w;
        per_class.insert(class_names[c].clone(), ClassReport { precision, recall, f1_score: f, support });
    }
    let accuracy = ratio(correct as f64, n as f64);
    let (auc_macro, auc_weighted) = match probabilities {
        Some(probs) if probs.len() == n => {
            let mut aucs = Vec::new();
            for c in 0..k {
                let scores: Vec<f64> = probs.iter().map(|row| row[c]).collect();
                let positive: Vec<bool> = y_true.iter().map(|&t| t == c).collect();
                aucs.push(roc_auc(&scores, &positive));
            }
            if aucs.iter().all(Option::is_some) {
                let aucs: Vec<f64> = aucs.into_iter().map(Option::unwrap).collect();
                let macro_auc = aucs.iter().sum::<f64>() / k as f64;
                let weighted_auc =
                    (0..k).map(|c| aucs[c] * ratio(confusion[c].iter().sum::<usize>() as f64, n as f64)).sum();
                (Some(macro_auc), Some(weighted_auc))
            } else {
                (None, None)
            }
        }
        _ => (None, None),
    };
    Metrics {
        num_samples: n,
        accuracy,
        macro_avg: Averages { precision: macro_p, recall: macro_r, f1: macro_f },
        // Single-label: micro precision = micro recall = micro F1 = accuracy.
        micro_avg: Averages { precision: accuracy, recall: accuracy, f1: accuracy },
        weighted_avg: Averages { precision: weighted_p, recall: weighted_r, f1: weighted_f },
        roc_auc_macro: auc_macro,
        roc_auc_weighted: auc_weighted,
        per_class,
        class_names: class_names.to_vec(),
        confusion_matrix: confusion,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec!["a".into(), "b".into(), "c".into()]
    }

    #[test]
    fn metrics_match_hand_computed_values() {
        // sklearn: precision_recall_fscore_support([0,0,1,1,2,2],[0,1,1,1,2,0])
        let m = compute_metrics(&names(), &[0, 0, 1, 1, 2, 2], &[0, 1, 1, 1, 2, 0], None);
        assert!((m.accuracy - 4.0 / 6.0).abs() < 1e-12);
        assert_eq!(m.confusion_matrix, vec![vec![1, 1, 0], vec![0, 2, 0], vec![1, 0, 1]]);
        let b = &m.per_class["b"];
        assert!((b.precision - 2.0 / 3.0).abs() < 1e-12 && (b.recall - 1.0).abs() < 1e-12);
        assert!((b.f1_score - 0.8).abs() < 1e-12);
        // macro F1 = (0.5 + 0.8 + 0.6667) / 3
        assert!((m.macro_avg.f1 - (0.5 + 0.8 + 2.0 / 3.0) / 3.0).abs() < 1e-12);
    }

    #[test]
    fn auc_of_perfect_and_reversed_scores() {
        assert_eq!(roc_auc(&[0.1, 0.2, 0.8, 0.9], &[false, false, true, true]), Some(1.0));
        assert_eq!(roc_auc(&[0.9, 0.8, 0.2, 0.1], &[false, false, true, true]), Some(0.0));
        assert_eq!(roc_auc(&[0.5, 0.5], &[false, true]), Some(0.5));
        assert_eq!(roc_auc(&[0.5, 0.5], &[true, true]), None);
    }
}
