//! Temperature scaling: one number `T` dividing the logits so that the softmax's confidence
//! matches how often the model is right (Guo et al., 2017). Fitted on the validation split at
//! the end of training by minimising the cross-entropy; judged by the expected calibration
//! error over 15 equal-width confidence bins.
//!
//! A small validation split that the model gets entirely right would drive the plain NLL's
//! minimum to `T → 0` (certainty), which the next, unseen image does not bear out (the demo:
//! 39 of 39 right, `T` = 0.05, test NLL ten times worse). So the targets are smoothed by
//! Laplace's rule of succession: after `n` images the true class gets `(n + 1) / (n + 2)`,
//! the rest shared by the other classes. With thousands of images this is the plain NLL fit.

use serde::{Deserialize, Serialize};

/// Confidence bins of the expected calibration error (and of the reliability diagram).
pub const ECE_BINS: usize = 15;

/// The range searched for `T`: beyond it a model is either nearly a constant or a hard argmax.
const TEMPERATURE_RANGE: (f64, f64) = (0.05, 20.0);

/// Softmax of `logits / temperature`, in f64.
pub fn softmax_with_temperature(logits: &[f32], temperature: f64) -> Vec<f64> {
    let scaled: Vec<f64> = logits.iter().map(|&z| z as f64 / temperature).collect();
    let max = scaled.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = scaled.iter().map(|z| (z - max).exp()).collect();
    let total: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / total).collect()
}

/// Each row of `logits` through [`softmax_with_temperature`].
pub fn probabilities_at(logits: &[Vec<f32>], temperature: f64) -> Vec<Vec<f64>> {
    logits.iter().map(|row| softmax_with_temperature(row, temperature)).collect()
}

/// Mean negative log-likelihood of the true classes under `softmax(logits / temperature)`.
pub fn negative_log_likelihood(logits: &[Vec<f32>], labels: &[usize], temperature: f64) -> f64 {
    smoothed_cross_entropy(logits, labels, temperature, 0.0)
}

/// Cross-entropy of `softmax(logits / temperature)` against targets giving the true class
/// `1 − smoothing + smoothing / K` and each other class `smoothing / K` (the NLL at 0).
fn smoothed_cross_entropy(logits: &[Vec<f32>], labels: &[usize], temperature: f64, smoothing: f64) -> f64 {
    let total: f64 = logits
        .iter()
        .zip(labels)
        .map(|(row, &label)| {
            let scaled: Vec<f64> = row.iter().map(|&z| z as f64 / temperature).collect();
            let max = scaled.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let log_total = max + scaled.iter().map(|z| (z - max).exp()).sum::<f64>().ln();
            let mean_scaled = scaled.iter().sum::<f64>() / scaled.len() as f64;
            log_total - (1.0 - smoothing) * scaled[label] - smoothing * mean_scaled
        })
        .sum();
    total / labels.len().max(1) as f64
}

/// The temperature minimising the cross-entropy of `labels` with targets smoothed by the rule
/// of succession (see the module's note); 1.0 for no images. The objective is convex in
/// `1 / T`, so a golden-section search over it finds the minimum.
pub fn fit_temperature(logits: &[Vec<f32>], labels: &[usize]) -> f64 {
    let classes = logits.first().map_or(0, Vec::len);
    if labels.is_empty() || classes < 2 {
        return 1.0;
    }
    // The true class's target (n + 1) / (n + 2) = 1 − smoothing · (K − 1) / K.
    let smoothing = classes as f64 / ((classes - 1) as f64 * (labels.len() + 2) as f64);
    let objective = |inverse: f64| smoothed_cross_entropy(logits, labels, 1.0 / inverse, smoothing);
    let ratio = (5f64.sqrt() - 1.0) / 2.0;
    let (mut low, mut high) = (1.0 / TEMPERATURE_RANGE.1, 1.0 / TEMPERATURE_RANGE.0);
    let (mut a, mut b) = (high - ratio * (high - low), low + ratio * (high - low));
    let (mut fa, mut fb) = (objective(a), objective(b));
    for _ in 0..80 {
        if fa < fb {
            high = b;
            (b, fb) = (a, fa);
            a = high - ratio * (high - low);
            fa = objective(a);
        } else {
            low = a;
            (a, fa) = (b, fb);
            b = low + ratio * (high - low);
            fb = objective(b);
        }
    }
    1.0 / ((low + high) / 2.0)
}

/// One confidence bin: how many predictions fell in it, their mean confidence and accuracy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ReliabilityBin {
    pub lower: f64,
    pub upper: f64,
    pub count: usize,
    pub mean_confidence: f64,
    pub accuracy: f64,
}

/// The predictions (argmax and its probability) sorted into [`ECE_BINS`] equal-width bins.
pub fn reliability_bins(probabilities: &[Vec<f64>], labels: &[usize]) -> Vec<ReliabilityBin> {
    let mut sums = vec![(0usize, 0.0f64, 0usize); ECE_BINS];
    for (row, &label) in probabilities.iter().zip(labels) {
        let (predicted, confidence) =
            row.iter().cloned().enumerate().fold((0, f64::MIN), |best, (i, p)| if p > best.1 { (i, p) } else { best });
        let bin = ((confidence * ECE_BINS as f64).ceil() as usize).clamp(1, ECE_BINS) - 1;
        sums[bin].0 += 1;
        sums[bin].1 += confidence;
        sums[bin].2 += usize::from(predicted == label);
    }
    sums.into_iter()
        .enumerate()
        .map(|(i, (count, confidence, correct))| ReliabilityBin {
            lower: i as f64 / ECE_BINS as f64,
            upper: (i + 1) as f64 / ECE_BINS as f64,
            count,
            mean_confidence: if count > 0 { confidence / count as f64 } else { 0.0 },
            accuracy: if count > 0 { correct as f64 / count as f64 } else { 0.0 },
        })
        .collect()
}

/// Expected calibration error: the count-weighted mean gap between confidence and accuracy
/// over the bins.
pub fn expected_calibration_error(probabilities: &[Vec<f64>], labels: &[usize]) -> f64 {
    let total = labels.len().max(1) as f64;
    reliability_bins(probabilities, labels)
        .iter()
        .map(|bin| bin.count as f64 / total * (bin.mean_confidence - bin.accuracy).abs())
        .sum()
}

/// NLL and ECE of one split without and with the fitted temperature.
/// JSON has no NaN (a diverged model's figures): serde_json writes `null`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CalibrationFigures {
    pub images: usize,
    #[serde(deserialize_with = "null_as_nan")]
    pub nll_before: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub nll_after: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub ece_before: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub ece_after: f64,
}

/// Reads the `null` serde_json writes for NaN back as NaN.
pub(crate) fn null_as_nan<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(deserializer)?.unwrap_or(f64::NAN))
}

impl CalibrationFigures {
    /// The figures of `logits` against `labels` at temperature 1 and at `temperature`.
    pub fn measure(logits: &[Vec<f32>], labels: &[usize], temperature: f64) -> Self {
        Self {
            images: labels.len(),
            nll_before: negative_log_likelihood(logits, labels, 1.0),
            nll_after: negative_log_likelihood(logits, labels, temperature),
            ece_before: expected_calibration_error(&probabilities_at(logits, 1.0), labels),
            ece_after: expected_calibration_error(&probabilities_at(logits, temperature), labels),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Labels drawn from `softmax(z / true_t)`, logits `z`: the fit finds `true_t` back.
    fn drawn(true_t: f64, images: usize, seed: u64) -> (Vec<Vec<f32>>, Vec<usize>) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut logits = Vec::new();
        let mut labels = Vec::new();
        for _ in 0..images {
            let row: Vec<f32> = (0..4).map(|_| rng.gen_range(-4.0..4.0f32)).collect();
            let p = softmax_with_temperature(&row, true_t);
            let u: f64 = rng.gen();
            let mut acc = 0.0;
            let label = p.iter().position(|&q| {
                acc += q;
                u < acc
            });
            labels.push(label.unwrap_or(3));
            logits.push(row);
        }
        (logits, labels)
    }

    #[test]
    fn the_fit_recovers_the_temperature_the_labels_were_drawn_with() {
        for (true_t, seed) in [(0.5, 1), (1.0, 2), (2.5, 3)] {
            let (logits, labels) = drawn(true_t, 20_000, seed);
            let fitted = fit_temperature(&logits, &labels);
            assert!((fitted / true_t - 1.0).abs() < 0.06, "true {true_t}, fitted {fitted}");
            let figures = CalibrationFigures::measure(&logits, &labels, fitted);
            assert!(figures.nll_after <= figures.nll_before + 1e-12);
            assert!(figures.ece_after < 0.02, "{figures:?}");
        }
    }

    #[test]
    fn an_overconfident_model_is_cooled_and_its_error_drops() {
        // Drawn at T = 3 but read at T = 1: confidences far above the accuracy.
        let (logits, labels) = drawn(3.0, 5_000, 9);
        let fitted = fit_temperature(&logits, &labels);
        let figures = CalibrationFigures::measure(&logits, &labels, fitted);
        assert!(fitted > 2.5, "{fitted}");
        assert!(figures.ece_after * 2.0 <= figures.ece_before, "{figures:?}");
    }

    /// 40 images all classified right, margins from 2 to 6: the plain NLL would want T → 0;
    /// the fit raises the mean confidence (0.90 at T = 1) towards the 41 / 42 the rule of
    /// succession expects, not to certainty.
    #[test]
    fn a_validation_split_without_errors_is_not_taken_for_certainty() {
        let logits: Vec<Vec<f32>> = (0..40).map(|i| vec![2.0 + (i % 5) as f32, 0.0, 0.0, 0.0]).collect();
        let labels = vec![0; 40];
        let fitted = fit_temperature(&logits, &labels);
        let confidence = |t: f64| -> f64 {
            logits.iter().map(|row| softmax_with_temperature(row, t)[0]).sum::<f64>() / logits.len() as f64
        };
        let (before, after) = (confidence(1.0), confidence(fitted));
        assert!(fitted < 1.0 && fitted > 0.5, "T {fitted}");
        assert!(before < 0.91 && after > 0.94 && after < 0.99, "mean confidence {before} -> {after} at T {fitted}");
    }

    #[test]
    fn ece_of_hand_made_predictions() {
        // Two at 0.9 (one right), two at 0.6 (both right): |0.9 − 0.5| · ½ + |0.6 − 1| · ½.
        let probabilities = vec![vec![0.9, 0.1], vec![0.9, 0.1], vec![0.6, 0.4], vec![0.4, 0.6]];
        let labels = [0, 1, 0, 1];
        let ece = expected_calibration_error(&probabilities, &labels);
        assert!((ece - 0.4).abs() < 1e-12, "{ece}");
        let bins = reliability_bins(&probabilities, &labels);
        assert_eq!(bins.iter().map(|b| b.count).sum::<usize>(), 4);
        assert_eq!(bins[13].count, 2, "0.9 lies in (13/15, 14/15]");
        assert_eq!(fit_temperature(&[], &[]), 1.0);
    }
}
