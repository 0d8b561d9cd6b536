//! Label issues by confident learning (Northcutt et al., 2021), as `cleanlab` 2.x's
//! `filter.find_label_issues` computes them with its defaults (`filter_by =
//! "prune_by_noise_rate"`, one example kept per class, every confident issue returned), so
//! that the same out-of-fold probabilities give the same images (`crates/imgtype/tests/label_issues.rs`
//! checks it against cleanlab itself):
//!
//! 1. a threshold per class: the mean probability of the class over the images labelled with it;
//! 2. the confident joint: an image counts as (given label, class) for the one class at or
//!    above its threshold, or the most probable of several; rescaled to the label counts and
//!    rounded keeping each row's total;
//! 3. for every off-diagonal count (given i, true j) of n, the n images labelled i with the
//!    largest p(j) − p(i) are issues, unless their given label is still the most probable.
//!
//! Issues are ranked by a label quality score, lowest (most suspect) first. Ties (equal
//! margins at a pruning cut, equal scores) go by row order; numpy's default sort may order
//! them otherwise, and on AVX-512 CPUs it does, so there cleanlab can pick another of two
//! equally suspect images.

use serde::{Deserialize, Serialize};

/// What cleanlab treats as equal (`FLOATING_POINT_COMPARISON`).
const TOLERANCE: f64 = 1e-6;

/// How issues are ordered (cleanlab's `rank_by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelQuality {
    /// p(given label)
    #[default]
    SelfConfidence,
    /// (p(given label) − the largest other probability + 1) / 2
    NormalizedMargin,
}

impl std::str::FromStr for LabelQuality {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<Self> {
        match text {
            "self_confidence" => Ok(Self::SelfConfidence),
            "normalized_margin" => Ok(Self::NormalizedMargin),
            _ => anyhow::bail!("`{text}`: expected self_confidence or normalized_margin"),
        }
    }
}

impl LabelQuality {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SelfConfidence => "self_confidence",
            Self::NormalizedMargin => "normalized_margin",
        }
    }

    pub fn score(self, probabilities: &[f64], label: usize) -> f64 {
        let given = probabilities[label];
        match self {
            LabelQuality::SelfConfidence => given,
            LabelQuality::NormalizedMargin => {
                let other = probabilities
                    .iter()
                    .enumerate()
                    .filter(|&(k, _)| k != label)
                    .map(|(_, &p)| p)
                    .fold(f64::NEG_INFINITY, f64::max);
                (given - other + 1.0) / 2.0
            }
        }
    }
}

/// Confident learning's findings over a set of labelled probability rows.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelIssues {
    /// Per class, the mean probability of the class over the images labelled with it.
    pub thresholds: Vec<f64>,
    /// `confident_joint[given][true]`: calibrated counts (rows sum to the label counts).
    pub confident_joint: Vec<Vec<usize>>,
    /// Whether each row's label is an issue.
    pub is_issue: Vec<bool>,
}

impl LabelIssues {
    /// The issues' row indices, most suspect first (ties by row order): cleanlab's
    /// `return_indices_ranked_by`.
    pub fn ranked(&self, probabilities: &[Vec<f64>], labels: &[usize], quality: LabelQuality) -> Vec<usize> {
        let issues: Vec<usize> = (0..labels.len()).filter(|&i| self.is_issue[i]).collect();
        by_quality(issues, probabilities, labels, quality)
    }

    /// What to show a reviewer, most suspect first: the issues and every other image whose
    /// given label is not the most probable class. Confident learning alone misses a wrong
    /// label the model doubts below the class's threshold: a network's thresholds sit near
    /// its (high) typical confidence, so a mislabelled photo it gives 0.86 for its true class
    /// is not counted, though its label's probability is among the lowest of all.
    pub fn for_review(&self, probabilities: &[Vec<f64>], labels: &[usize], quality: LabelQuality) -> Vec<usize> {
        let rows: Vec<usize> = (0..labels.len())
            .filter(|&i| self.is_issue[i] || argmax_favouring(&probabilities[i], labels[i]) != labels[i])
            .collect();
        by_quality(rows, probabilities, labels, quality)
    }
}

fn by_quality(mut rows: Vec<usize>, probabilities: &[Vec<f64>], labels: &[usize], quality: LabelQuality) -> Vec<usize> {
    rows.sort_by(|&a, &b| {
        quality.score(&probabilities[a], labels[a]).total_cmp(&quality.score(&probabilities[b], labels[b]))
    });
    rows
}

/// Finds the label issues among `labels` (class indices below `classes`) given out-of-sample
/// `probabilities` (one row of `classes` values per label).
pub fn find_label_issues(probabilities: &[Vec<f64>], labels: &[usize], classes: usize) -> LabelIssues {
    assert_eq!(probabilities.len(), labels.len(), "one probability row per label");
    let thresholds = confident_thresholds(probabilities, labels, classes);
    let joint = calibrate(&confident_counts(probabilities, labels, &thresholds), labels, classes);
    let prune = keep_one_per_class(&joint);
    let mut is_issue = vec![false; labels.len()];
    for given in 0..classes {
        let rows: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == given).collect();
        // cleanlab leaves a class alone when it has no more images than it must keep.
        if rows.len() <= 1 {
            continue;
        }
        for (truth, &count) in prune[given].iter().enumerate() {
            if truth == given || count == 0 {
                continue;
            }
            let mut by_margin = rows.clone();
            let margin = |i: usize| probabilities[i][truth] - probabilities[i][given];
            by_margin.sort_by(|&a, &b| margin(b).total_cmp(&margin(a)));
            by_margin.iter().take(count).for_each(|&i| is_issue[i] = true);
        }
    }
    // An image whose given label is (within the tolerance) the most probable is no issue.
    for (i, flagged) in is_issue.iter_mut().enumerate() {
        if *flagged && argmax_favouring(&probabilities[i], labels[i]) == labels[i] {
            *flagged = false;
        }
    }
    LabelIssues { thresholds, confident_joint: joint, is_issue }
}

fn confident_thresholds(probabilities: &[Vec<f64>], labels: &[usize], classes: usize) -> Vec<f64> {
    (0..classes)
        .map(|k| {
            let own: Vec<f64> = labels.iter().zip(probabilities).filter(|(&l, _)| l == k).map(|(_, p)| p[k]).collect();
            // A class nobody carries gets an unreachable threshold (cleanlab's BIG_VALUE).
            if own.is_empty() {
                2.0
            } else {
                (numpy_sum(own.iter().copied()) / own.len() as f64).max(2.0 * TOLERANCE)
            }
        })
        .collect()
}

/// The uncalibrated confident joint, its diagonal at least 1.
fn confident_counts(probabilities: &[Vec<f64>], labels: &[usize], thresholds: &[f64]) -> Vec<Vec<usize>> {
    let classes = thresholds.len();
    let mut joint = vec![vec![0usize; classes]; classes];
    for (row, &label) in probabilities.iter().zip(labels) {
        let confident: Vec<usize> = (0..classes).filter(|&k| row[k] >= thresholds[k] - TOLERANCE).collect();
        let guess = match confident.len() {
            0 => continue,
            1 => confident[0],
            _ => first_argmax(row),
        };
        joint[label][guess] += 1;
    }
    for (k, row) in joint.iter_mut().enumerate() {
        row[k] = row[k].max(1);
    }
    joint
}

/// Rows rescaled to the label counts, the whole to the number of labels, then rounded
/// keeping each row's total (cleanlab's `calibrate_confident_joint`).
fn calibrate(joint: &[Vec<usize>], labels: &[usize], classes: usize) -> Vec<Vec<usize>> {
    let mut label_counts = vec![0usize; classes];
    labels.iter().for_each(|&l| label_counts[l] += 1);
    let scaled: Vec<Vec<f64>> = joint
        .iter()
        .zip(&label_counts)
        .map(|(row, &count)| {
            let total = (row.iter().sum::<usize>() as f64).max(1e-100);
            row.iter().map(|&c| c as f64 / total * count as f64).collect()
        })
        .collect();
    // numpy sums the transposed (column-major) array in memory order: column by column.
    let sum: f64 = numpy_sum((0..classes).flat_map(|j| scaled.iter().map(move |row| row[j])));
    let n = labels.len() as f64;
    scaled
        .iter()
        .map(|row| {
            let row: Vec<f64> = row.iter().map(|&v| v / sum.max(1e-100) * n).collect();
            round_preserving_sum(&row).into_iter().map(|v| v.max(0) as usize).collect()
        })
        .collect()
}

/// `prune[given][true]`: the joint with each class keeping at least one image (cleanlab's
/// `_keep_at_least_n_per_class` with n = 1, on the transposed joint, indexed back here).
fn keep_one_per_class(joint: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let classes = joint.len();
    (0..classes)
        .map(|given| {
            let column = &joint[given];
            let diagonal = column[given];
            let raised = diagonal.max(1);
            let nonzero = column.iter().filter(|&&c| c > 0).count() as f64;
            let spread = (raised - diagonal) as f64 / (nonzero - 1.0).max(1.0);
            (0..classes)
                .map(|truth| {
                    if truth == given {
                        raised
                    } else {
                        // numpy's astype(int) truncates toward zero.
                        (column[truth] as f64 - spread).max(0.0).trunc() as usize
                    }
                })
                .collect()
        })
        .collect()
}

/// numpy's `round` (half to even) of each value, then adjusted so the integers sum to the
/// rounded total: the values furthest below (above) their rounding gain (lose) one.
fn round_preserving_sum(values: &[f64]) -> Vec<i64> {
    let mut ints: Vec<f64> = values.iter().map(|v| v.round_ties_even()).collect();
    let target = numpy_sum(values.iter().copied()).round_ties_even();
    loop {
        let current = numpy_sum(ints.iter().copied()).round_ties_even();
        if (current - target).abs() <= TOLERANCE {
            break;
        }
        let diff = (target - current).round_ties_even();
        let step = if diff < 0.0 { -1.0 } else { 1.0 };
        let changes = (diff.abs() as usize).min(values.len());
        // numpy's argsort of the residuals (stable for arrays this small), reversed when adding.
        let mut order: Vec<usize> = (0..values.len()).collect();
        order.sort_by(|&a, &b| (values[a] - ints[a]).total_cmp(&(values[b] - ints[b])));
        if step > 0.0 {
            order.reverse();
        }
        order.iter().take(changes).for_each(|&i| ints[i] += step);
    }
    ints.into_iter().map(|v| v as i64).collect()
}

/// Summation in numpy's order (pairwise, with 8 partial sums from 8 values on), so that
/// a rounding at a half or a comparison at the tolerance lands the same side.
fn numpy_sum(values: impl Iterator<Item = f64>) -> f64 {
    let values: Vec<f64> = values.collect();
    fn pairwise(v: &[f64]) -> f64 {
        if v.len() < 8 {
            return v.iter().fold(-0.0, |s, x| s + x);
        }
        if v.len() <= 128 {
            let mut r = [0.0f64; 8];
            r.copy_from_slice(&v[..8]);
            let mut i = 8;
            while i + 8 <= v.len() {
                for k in 0..8 {
                    r[k] += v[i + k];
                }
                i += 8;
            }
            let mut sum = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
            for x in &v[i..] {
                sum += x;
            }
            return sum;
        }
        let half = (v.len() / 2) / 8 * 8;
        pairwise(&v[..half]) + pairwise(&v[half..])
    }
    pairwise(&values)
}

fn first_argmax(row: &[f64]) -> usize {
    let mut best = 0;
    for (k, &p) in row.iter().enumerate() {
        if p > row[best] {
            best = k;
        }
    }
    best
}

/// The most probable class after giving `label` the benefit of the tolerance.
fn argmax_favouring(row: &[f64], label: usize) -> usize {
    let favoured: Vec<f64> = row.iter().enumerate().map(|(k, &p)| if k == label { p + TOLERANCE } else { p }).collect();
    first_argmax(&favoured)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn softmax(logits: &[f64]) -> Vec<f64> {
        let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let exp: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
        let total: f64 = exp.iter().sum();
        exp.iter().map(|e| e / total).collect()
    }

    /// Three well separated classes, two images filed under the wrong one: those two, and
    /// only they, are issues, suggested back to where the model puts them.
    #[test]
    fn confidently_misfiled_images_are_the_issues() {
        let mut probabilities = Vec::new();
        let mut labels = Vec::new();
        for class in 0..3 {
            for i in 0..20 {
                let mut logits = vec![0.0; 3];
                logits[class] = 3.0 + (i % 5) as f64 * 0.2;
                probabilities.push(softmax(&logits));
                labels.push(class);
            }
        }
        labels[3] = 1; // a class-0 image filed as 1
        labels[44] = 0; // a class-2 image filed as 0
        let found = find_label_issues(&probabilities, &labels, 3);
        let ranked = found.ranked(&probabilities, &labels, LabelQuality::SelfConfidence);
        let mut sorted = ranked.clone();
        sorted.sort();
        assert_eq!(sorted, vec![3, 44], "{found:?}");
        assert_eq!(found.confident_joint[1][0], 1, "{:?}", found.confident_joint);
        // A class-1 image the model puts in class 2 below that class's threshold: not counted
        // by the confident joint, but up for review, after the confident issues' lower scores.
        probabilities[25] = softmax(&[0.0, 0.5, 1.2]);
        let found = find_label_issues(&probabilities, &labels, 3);
        assert!(!found.is_issue[25]);
        assert_eq!(found.for_review(&probabilities, &labels, LabelQuality::SelfConfidence), vec![44, 3, 25]);
        assert_eq!(found.confident_joint[0][2], 1, "{:?}", found.confident_joint);
        for (row, count) in found.confident_joint.iter().zip([20, 21, 19]) {
            assert_eq!(row.iter().sum::<usize>(), count);
        }
    }

    #[test]
    fn rounding_keeps_the_total_and_rounds_halves_to_even() {
        assert_eq!(round_preserving_sum(&[0.5, 1.5, 2.5]), vec![0, 2, 2]);
        // Ties go as numpy's argsort leaves them: the later index gains, the earlier loses.
        assert_eq!(round_preserving_sum(&[0.4, 0.4, 0.2]), vec![0, 1, 0]);
        assert_eq!(round_preserving_sum(&[2.6, 2.6, 2.8]), vec![2, 3, 3]);
    }

    #[test]
    fn normalized_margin_is_half_way_between_given_and_runner_up() {
        let p = [0.2, 0.7, 0.1];
        assert!((LabelQuality::NormalizedMargin.score(&p, 0) - 0.25).abs() < 1e-12);
        assert!((LabelQuality::NormalizedMargin.score(&p, 1) - 0.75).abs() < 1e-12);
        assert_eq!(LabelQuality::SelfConfidence.score(&p, 2), 0.1);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
        /// Any rows and labels: the joint's rows sum to the label counts, an issue is never an
        /// image whose label the model prefers, and ranking returns each issue once.
        #[test]
        fn findings_are_consistent_for_any_input(
            rows in proptest::collection::vec((proptest::collection::vec(-4.0f64..4.0, 4), 0usize..4), 1..60)
        ) {
            let probabilities: Vec<Vec<f64>> = rows.iter().map(|(l, _)| softmax(l)).collect();
            let labels: Vec<usize> = rows.iter().map(|(_, c)| *c).collect();
            let found = find_label_issues(&probabilities, &labels, 4);
            for k in 0..4 {
                let count = labels.iter().filter(|&&l| l == k).count();
                prop_assert_eq!(found.confident_joint[k].iter().sum::<usize>(), count);
            }
            for (i, &flag) in found.is_issue.iter().enumerate() {
                if flag {
                    prop_assert_ne!(argmax_favouring(&probabilities[i], labels[i]), labels[i]);
                }
            }
            let ranked = found.ranked(&probabilities, &labels, LabelQuality::NormalizedMargin);
            prop_assert_eq!(ranked.len(), found.is_issue.iter().filter(|&&f| f).count());
        }
    }
}
