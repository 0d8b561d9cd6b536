//! PNG plots of a finished run: `logs/training_curves.png`, `confusion_matrix.png`,
//! `classification_report.png` and `probability_analysis.png`. Rendered in memory with
//! plotters and an embedded DejaVu font, written atomically. A plot can never fail a run:
//! any error (or panic) is logged as a warning and the run goes on.

use std::path::Path;
use std::sync::Once;

use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::eval::Metrics;
use crate::train::{EpochRecord, SplitEvaluation};

const FONT: &str = "sans-serif";
static REGISTER_FONT: Once = Once::new();

fn register_font() {
    REGISTER_FONT.call_once(|| {
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
        let _ = plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold());
    });
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// Renders `draw` on a white canvas and writes it as PNG.
fn render_png(path: &Path, (width, height): (u32, u32), draw: impl FnOnce(&Area) -> Result<()>) -> Result<()> {
    register_font();
    let mut buffer = vec![0u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
        draw(&root)?;
        root.present().map_err(|e| anyhow!("{e}"))?;
    }
    let image = image::RgbImage::from_raw(width, height, buffer).ok_or_else(|| anyhow!("plot buffer size"))?;
    let mut bytes = Vec::new();
    image.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)?;
    crate::fsutil::write_atomic(path, &bytes)
}

fn plot_error<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("{e}")
}

/// Writes every plot of a run; failures become warnings.
pub fn write_training_plots(
    run_dir: &Path,
    logs_dir: &Path,
    history: &[EpochRecord],
    test: &Metrics,
    evaluation: &SplitEvaluation,
) {
    let jobs: [(&str, Box<dyn FnOnce() -> Result<()> + '_>); 4] = [
        ("training_curves.png", Box::new(|| training_curves(&logs_dir.join("training_curves.png"), history))),
        ("confusion_matrix.png", Box::new(|| confusion_matrix(&run_dir.join("confusion_matrix.png"), test))),
        (
            "classification_report.png",
            Box::new(|| classification_report(&run_dir.join("classification_report.png"), test)),
        ),
        (
            "probability_analysis.png",
            Box::new(|| probability_analysis(&run_dir.join("probability_analysis.png"), test, evaluation)),
        ),
    ];
    for (name, job) in jobs {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("could not draw {name}: {e:#}"),
            Err(_) => tracing::warn!("could not draw {name}: the plotting library panicked"),
        }
    }
}

fn range_of(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) =
        values.filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(1e-3);
    (lo - pad, hi + pad)
}

struct Series<'a> {
    label: &'a str,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

fn line_chart(area: &Area, title: &str, x_desc: &str, y_desc: &str, series: &[Series]) -> Result<()> {
    let (x0, x1) = range_of(series.iter().flat_map(|s| s.points.iter().map(|p| p.0)));
    let (y0, y1) = range_of(series.iter().flat_map(|s| s.points.iter().map(|p| p.1)));
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .draw()
        .map_err(plot_error)?;
    for s in series.iter().filter(|s| !s.points.is_empty()) {
        let color = s.color;
        chart
            .draw_series(LineSeries::new(s.points.clone(), color.stroke_width(2)))
            .map_err(plot_error)?
            .label(s.label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(plot_error)?;
    }
    draw_legend(&mut chart)
}

fn draw_legend<'a, 'x: 'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, BitMapBackend<'x>, CT>,
) -> Result<()> {
    chart
        .configure_series_labels()
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(plot_error)
}

/// Loss, accuracy, learning rate per epoch, and validation loss against accuracy.
pub fn training_curves(path: &Path, history: &[EpochRecord]) -> Result<()> {
    let epoch_points = |f: &dyn Fn(&EpochRecord) -> Option<f64>| -> Vec<(f64, f64)> {
        history.iter().filter_map(|r| f(r).map(|v| (r.epoch as f64, v))).collect()
    };
    render_png(path, (1400, 1000), |root| {
        let areas = root.split_evenly((2, 2));
        line_chart(
            &areas[0],
            "Loss",
            "epoch",
            "loss",
            &[
                Series { label: "train", color: BLUE, points: epoch_points(&|r| Some(r.train_loss)) },
                Series { label: "validation", color: RED, points: epoch_points(&|r| r.val_loss) },
            ],
        )?;
        line_chart(
            &areas[1],
            "Accuracy",
            "epoch",
            "accuracy",
            &[
                Series { label: "train", color: BLUE, points: epoch_points(&|r| Some(r.train_accuracy)) },
                Series { label: "validation", color: RED, points: epoch_points(&|r| r.val_accuracy) },
                Series {
                    label: "validation F1 (weighted)",
                    color: GREEN,
                    points: epoch_points(&|r| r.val_f1_weighted),
                },
            ],
        )?;
        line_chart(
            &areas[2],
            "Learning rate",
            "epoch",
            "learning rate",
            &[
                Series { label: "head", color: MAGENTA, points: epoch_points(&|r| Some(r.lr_head)) },
                Series { label: "backbone", color: CYAN, points: epoch_points(&|r| Some(r.lr_backbone)) },
            ],
        )?;
        let val: Vec<(f64, f64)> = history.iter().filter_map(|r| Some((r.val_loss?, r.val_accuracy?))).collect();
        line_chart(
            &areas[3],
            "Validation loss vs accuracy",
            "validation loss",
            "validation accuracy",
            &[Series { label: "epochs in order", color: RGBColor(120, 60, 0), points: val }],
        )
    })
}

/// A heat-map cell colour from white (0) to deep blue (1).
fn heat(value: f64) -> RGBColor {
    let v = value.clamp(0.0, 1.0);
    RGBColor((255.0 - 215.0 * v) as u8, (255.0 - 160.0 * v) as u8, (255.0 - 60.0 * v) as u8)
}

fn text_color(value: f64) -> RGBColor {
    if value > 0.6 {
        WHITE
    } else {
        BLACK
    }
}

/// A table of cells: `values[row][col]` with the text in `labels`, coloured by `shade`.
fn heat_table(
    area: &Area,
    title: &str,
    row_names: &[String],
    col_names: &[String],
    labels: &[Vec<String>],
    shade: &[Vec<f64>],
    axis_names: (&str, &str),
) -> Result<()> {
    let (width, height) = area.dim_in_pixel();
    let (left, top) = (170i32, 96i32);
    let cell_w = ((width as i32 - left - 20) / col_names.len().max(1) as i32).max(10);
    let cell_h = ((height as i32 - top - 60) / row_names.len().max(1) as i32).clamp(10, 90);
    let title_style = TextStyle::from((FONT, 22).into_font()).color(&BLACK);
    area.draw(&Text::new(title.to_string(), (20, 15), title_style)).map_err(plot_error)?;
    let style = TextStyle::from((FONT, 15).into_font());
    area.draw(&Text::new(axis_names.1.to_string(), (left, 50), style.clone())).map_err(plot_error)?;
    area.draw(&Text::new(axis_names.0.to_string(), (10, 50), style.clone())).map_err(plot_error)?;
    for (c, name) in col_names.iter().enumerate() {
        let x = left + c as i32 * cell_w + 4;
        area.draw(&Text::new(name.clone(), (x, top - 18), style.clone())).map_err(plot_error)?;
    }
    for (r, name) in row_names.iter().enumerate() {
        let y = top + r as i32 * cell_h;
        area.draw(&Text::new(name.clone(), (10, y + cell_h / 2 - 8), style.clone())).map_err(plot_error)?;
        for c in 0..col_names.len() {
            let x = left + c as i32 * cell_w;
            let v = shade[r][c];
            area.draw(&Rectangle::new([(x, y), (x + cell_w - 2, y + cell_h - 2)], heat(v).filled()))
                .map_err(plot_error)?;
            let color = text_color(v);
            let cell_style = TextStyle::from((FONT, 16).into_font()).color(&color);
            area.draw(&Text::new(labels[r][c].clone(), (x + 8, y + cell_h / 2 - 9), cell_style)).map_err(plot_error)?;
        }
    }
    Ok(())
}

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
    for name in &metrics.class_names {
        let r = &metrics.per_class[name];
        labels.push(vec![
            format!("{:.3}", r.precision),
            format!("{:.3}", r.recall),
            format!("{:.3}", r.f1_score),
            r.support.to_string(),
        ]);
        shade.push(vec![r.precision, r.recall, r.f1_score, 0.0]);
    }
    for avg in [&metrics.macro_avg, &metrics.weighted_avg] {
        labels.push(vec![
            format!("{:.3}", avg.precision),
            format!("{:.3}", avg.recall),
            format!("{:.3}", avg.f1),
            metrics.num_samples.to_string(),
        ]);
        shade.push(vec![avg.precision, avg.recall, avg.f1, 0.0]);
    }
    let title = format!("Classification report, test split (accuracy {:.3})", metrics.accuracy);
    render_png(path, (900, 200 + 70 * rows.len() as u32), |root| {
        heat_table(root, &title, &rows, &cols, &labels, &shade, ("class", ""))
    })
}

/// Confidence histograms of right and wrong predictions, and the mean probability given
/// to the true class, per class. Fixed bins: nearly constant predictions still plot.
pub fn probability_analysis(path: &Path, metrics: &Metrics, evaluation: &SplitEvaluation) -> Result<()> {
    const BINS: usize = 20;
    let mut right = [0usize; BINS];
    let mut wrong = [0usize; BINS];
    let k = metrics.class_names.len();
    let mut true_prob_sum = vec![0.0; k];
    let mut true_count = vec![0usize; k];
    for (probs, &t) in evaluation.probabilities.iter().zip(&evaluation.y_true) {
        let (pred, confidence) =
            probs.iter().enumerate().fold((0, f64::MIN), |best, (i, &p)| if p > best.1 { (i, p) } else { best });
        let bin = ((confidence * BINS as f64) as usize).min(BINS - 1);
        if pred == t {
            right[bin] += 1;
        } else {
            wrong[bin] += 1;
        }
        true_prob_sum[t] += probs[t];
        true_count[t] += 1;
    }
    render_png(path, (1400, 560), |root| {
        let (left, right_area) = root.split_horizontally(760);
        let max_count = right.iter().chain(&wrong).copied().max().unwrap_or(0).max(1);
        let mut chart = ChartBuilder::on(&left)
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
        for (counts, color, label, offset) in [(&right, GREEN, "correct", 0.0), (&wrong, RED, "wrong", 0.5)] {
            chart
                .draw_series(counts.iter().enumerate().filter(|(_, &c)| c > 0).map(move |(i, &c)| {
                    let x0 = i as f64 * width + offset * width;
                    Rectangle::new([(x0, 0), (x0 + width / 2.0, c)], color.mix(0.75).filled())
                }))
                .map_err(plot_error)?
                .label(label)
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.filled()));
        }
        draw_legend(&mut chart)?;

        let mut bars = ChartBuilder::on(&right_area)
            .caption("Mean probability of the true class", (FONT, 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d((0..k).into_segmented(), 0f64..1f64)
            .map_err(plot_error)?;
        let names = metrics.class_names.clone();
        bars.configure_mesh()
            .x_desc("true class")
            .y_desc("mean probability")
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 15))
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => names.get(*i).cloned().unwrap_or_default(),
                SegmentValue::Last => String::new(),
            })
            .draw()
            .map_err(plot_error)?;
        bars.draw_series((0..k).map(|c| {
            let mean = if true_count[c] > 0 { true_prob_sum[c] / true_count[c] as f64 } else { 0.0 };
            Rectangle::new([(SegmentValue::Exact(c), 0.0), (SegmentValue::Exact(c + 1), mean)], BLUE.mix(0.6).filled())
        }))
        .map_err(plot_error)?;
        Ok(())
    })
}
