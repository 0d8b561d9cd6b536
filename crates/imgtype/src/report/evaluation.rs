//! Pictures of a split's evaluation: confusion matrices, the classification report, and
//! the confidence of right and wrong predictions.

use std::path::Path;

use anyhow::Result;
use plotters::prelude::*;

use super::chart::{draw_legend, heat_table, line_chart, plot_error, render_png, Area, Series, FONT};
use crate::eval::calibration::ReliabilityBin;
use crate::eval::{Metrics, SplitEvaluation};

/// Counts and row-normalised rates, true classes as rows.
pub fn confusion_matrix(path: &Path, metrics: &Metrics) -> Result<()> {
    let names = &metrics.class_names;
    let matrix = &metrics.confusion_matrix;
    let max = matrix.iter().flatten().copied().max().unwrap_or(0).max(1) as f64;
    let counts: Vec<Vec<String>> = matrix.iter().map(|r| r.iter().map(|v| v.to_string()).collect()).collect();
    let count_shade: Vec<Vec<f64>> = matrix.iter().map(|r| r.iter().map(|&v| v as f64 / max).collect()).collect();
    let rates: Vec<Vec<f64>> = matrix
        .iter()
        .map(|r| {
            let total = r.iter().sum::<usize>().max(1) as f64;
            r.iter().map(|&v| v as f64 / total).collect()
        })
        .collect();
    let rate_labels: Vec<Vec<String>> = rates.iter().map(|r| r.iter().map(|v| format!("{v:.2}")).collect()).collect();
    let width = 340 + 150 * names.len() as u32;
    render_png(path, (width * 2, 200 + 80 * names.len() as u32), |root| {
        let (left, right) = root.split_horizontally(width);
        let axes = ("true ↓", "predicted →");
        heat_table(&left, "Confusion matrix (counts), test split", names, names, &counts, &count_shade, axes)?;
        heat_table(&right, "Confusion matrix (row-normalised)", names, names, &rate_labels, &rates, axes)
    })
}

/// Precision, recall, F1 and support per class, with macro and weighted averages.
pub fn classification_report(path: &Path, metrics: &Metrics) -> Result<()> {
    let mut rows = metrics.class_names.clone();
    rows.extend(["macro avg".to_string(), "weighted avg".to_string()]);
    let cols: Vec<String> = ["precision", "recall", "f1-score", "support"].map(String::from).to_vec();
    let mut labels = Vec::new();
    let mut shade = Vec::new();
    let mut add_row = |precision: f64, recall: f64, f1: f64, support: usize| {
        labels.push(vec![format!("{precision:.3}"), format!("{recall:.3}"), format!("{f1:.3}"), support.to_string()]);
        shade.push(vec![precision, recall, f1, 0.0]);
    };
    for name in &metrics.class_names {
        let r = &metrics.per_class[name];
        add_row(r.precision, r.recall, r.f1_score, r.support);
    }
    for avg in [&metrics.macro_avg, &metrics.weighted_avg] {
        add_row(avg.precision, avg.recall, avg.f1, metrics.num_samples);
    }
    let title = format!("Classification report, test split (accuracy {:.3})", metrics.accuracy);
    render_png(path, (900, 200 + 70 * rows.len() as u32), |root| {
        heat_table(root, &title, &rows, &cols, &labels, &shade, ("class", ""))
    })
}

/// Confidence histograms of right and wrong predictions, and the mean probability given
/// to the true class, per class. Fixed bins: nearly constant predictions still plot.
pub fn probability_analysis(path: &Path, metrics: &Metrics, evaluation: &SplitEvaluation) -> Result<()> {
    let k = metrics.class_names.len();
    let mut histograms = ConfidenceHistograms { right: [0; BINS], wrong: [0; BINS] };
    let mut true_prob_sum = vec![0.0; k];
    let mut true_count = vec![0usize; k];
    for (probs, &t) in evaluation.probabilities.iter().zip(&evaluation.y_true) {
        let (pred, confidence) =
            probs.iter().enumerate().fold((0, f64::MIN), |best, (i, &p)| if p > best.1 { (i, p) } else { best });
        let bin = ((confidence * BINS as f64) as usize).min(BINS - 1);
        if pred == t {
            histograms.right[bin] += 1;
        } else {
            histograms.wrong[bin] += 1;
        }
        true_prob_sum[t] += probs[t];
        true_count[t] += 1;
    }
    let mean_true_probability: Vec<f64> =
        (0..k).map(|c| if true_count[c] > 0 { true_prob_sum[c] / true_count[c] as f64 } else { 0.0 }).collect();
    render_png(path, (1400, 560), |root| {
        let (left, right) = root.split_horizontally(760);
        confidence_histograms(&left, &histograms)?;
        true_class_bars(&right, &metrics.class_names, &mean_true_probability)
    })
}

const BINS: usize = 20;

struct ConfidenceHistograms {
    right: [usize; BINS],
    wrong: [usize; BINS],
}

fn confidence_histograms(area: &Area, h: &ConfidenceHistograms) -> Result<()> {
    let max_count = h.right.iter().chain(&h.wrong).copied().max().unwrap_or(0).max(1);
    let mut chart = ChartBuilder::on(area)
        .caption("Confidence of test predictions", (FONT, 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..1f64, 0usize..max_count + 1)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("confidence (probability of the predicted class)")
        .y_desc("images")
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .draw()
        .map_err(plot_error)?;
    let width = 1.0 / BINS as f64;
    for (counts, color, label, offset) in [(&h.right, GREEN, "correct", 0.0), (&h.wrong, RED, "wrong", 0.5)] {
        chart
            .draw_series(counts.iter().enumerate().filter(|(_, &c)| c > 0).map(move |(i, &c)| {
                let x0 = i as f64 * width + offset * width;
                Rectangle::new([(x0, 0), (x0 + width / 2.0, c)], color.mix(0.75).filled())
            }))
            .map_err(plot_error)?
            .label(label)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.filled()));
    }
    draw_legend(&mut chart)
}

fn true_class_bars(area: &Area, class_names: &[String], mean_true_probability: &[f64]) -> Result<()> {
    let k = class_names.len();
    let mut bars = ChartBuilder::on(area)
        .caption("Mean probability of the true class", (FONT, 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d((0..k).into_segmented(), 0f64..1f64)
        .map_err(plot_error)?;
    bars.configure_mesh()
        .x_desc("true class")
        .y_desc("mean probability")
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => class_names.get(*i).cloned().unwrap_or_default(),
            SegmentValue::Last => String::new(),
        })
        .draw()
        .map_err(plot_error)?;
    bars.draw_series((0..k).map(|c| {
        Rectangle::new(
            [(SegmentValue::Exact(c), 0.0), (SegmentValue::Exact(c + 1), mean_true_probability[c])],
            BLUE.mix(0.6).filled(),
        )
    }))
    .map_err(plot_error)?;
    Ok(())
}

/// Accuracy against confidence per bin (`eval::calibration`), before and after the
/// temperature, with the diagonal a calibrated model lies on.
pub fn reliability_diagram(
    path: &Path,
    before: &[ReliabilityBin],
    after: &[ReliabilityBin],
    (temperature, ece_before, ece_after): (f64, f64, f64),
) -> Result<()> {
    let points = |bins: &[ReliabilityBin]| -> Vec<(f64, f64)> {
        bins.iter().filter(|b| b.count > 0).map(|b| (b.mean_confidence, b.accuracy)).collect()
    };
    let before_label = format!("T = 1 (ECE {ece_before:.3})");
    let after_label = format!("T = {temperature:.2} (ECE {ece_after:.3})");
    let series = [
        Series { label: "calibrated", color: RGBColor(150, 150, 150), points: vec![(0.0, 0.0), (1.0, 1.0)] },
        Series { label: &before_label, color: RGBColor(200, 60, 50), points: points(before) },
        Series { label: &after_label, color: RGBColor(40, 100, 200), points: points(after) },
    ];
    render_png(path, (720, 600), |area| {
        line_chart(area, "Reliability (test split, 15 bins)", "confidence", "accuracy", &series)
    })
}
