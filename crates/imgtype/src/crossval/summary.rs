//! A cross-validation's results from whatever folds have finished: `cv_results.csv` and
//! `.json` (each fold's held-out figures, mean ± std), `oof_predictions.csv` (every image
//! with the probabilities of the one model that did not train on it), and from those
//! `label_issues.csv` (confident learning, most suspect first), `label_issues.png` (their
//! thumbnails) and the class pairs most often confused in the labels.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde::Serialize;

use super::folds::FoldImage;
use super::layout::{fold_name, read_images, read_plan};
use crate::config::Config;
use crate::eval::label_issues::{find_label_issues, LabelIssues, LabelQuality};
use crate::sweep::{observed_state, Observed};
use crate::train::{PredictionRow, RunLayout, TestPredictions};

/// Thumbnails on `label_issues.png`, most suspect first.
const CONTACT_SHEET_SIZE: usize = 36;

#[derive(Debug, Clone, Serialize)]
pub struct FoldResult {
    pub fold: usize,
    /// `finished`, `running` (not finished: at work or interrupted), `failed` or `missing`.
    pub status: String,
    pub held_out_images: usize,
    pub accuracy: Option<f64>,
    pub f1_macro: Option<f64>,
    pub f1_weighted: Option<f64>,
    pub roc_auc_macro: Option<f64>,
    pub best_epoch: Option<usize>,
    pub epochs_run: Option<usize>,
    pub seconds: Option<f64>,
    pub run_dir: Option<PathBuf>,
}

/// Mean and (population) standard deviation over the finished folds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Spread {
    pub mean: f64,
    pub std: f64,
}

/// Given label → the class confident learning puts the image in.
#[derive(Debug, Clone, Serialize)]
pub struct Confusion {
    pub given: String,
    pub suggested: String,
    /// The calibrated confident joint's count: images estimated to carry this wrong label.
    pub estimated: usize,
    /// Of them, listed in `label_issues.csv`.
    pub listed: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct CvSummary {
    pub folds: Vec<FoldResult>,
    pub accuracy: Option<Spread>,
    pub f1_macro: Option<Spread>,
    pub f1_weighted: Option<Spread>,
    /// Folds not finished: their images have no out-of-fold prediction yet.
    pub unfinished: Vec<usize>,
    pub images: usize,
    pub oof_images: usize,
    /// Rows of `label_issues.csv`: the confident-learning issues and the other images whose
    /// given label is not the most probable class.
    pub label_issues: usize,
    /// Of them, issues by confident learning (cleanlab's `find_label_issues`).
    pub confident_learning_issues: usize,
    pub ranked_by: LabelQuality,
    /// Per class, the threshold of confident learning (mean self-confidence).
    pub class_thresholds: Vec<(String, f64)>,
    /// Most frequent first.
    pub confusions: Vec<Confusion>,
}

/// An image with its out-of-fold prediction.
struct OutOfFold<'a> {
    image: &'a FoldImage,
    prediction: PredictionRow,
}

/// Reads every fold of the cross-validation in `dir` and writes the results files.
pub fn summarize(dir: &Path, quality: LabelQuality) -> Result<CvSummary> {
    let plan = read_plan(dir)?;
    let images = read_images(dir, &plan)?;
    let class_names = &plan.base_config.data.class_names;
    let mut folds = Vec::new();
    let mut predictions: HashMap<(usize, String, String), PredictionRow> = HashMap::new();
    for fold in 1..=plan.folds {
        let held_out = plan.fold_images[fold - 1];
        // A fold whose files cannot be read (copied, edited, damaged) is one the summary cannot
        // count; the others still are.
        let (result, fold_predictions) = read_fold(&dir.join(fold_name(fold)), fold, held_out).unwrap_or_else(|e| {
            tracing::warn!("fold {fold}: {e:#}; counted as damaged");
            (FoldResult { status: "damaged".into(), ..empty_fold_result(fold, held_out) }, None)
        });
        if let Some(fold_predictions) = fold_predictions {
            if fold_predictions.class_names != *class_names {
                bail!(
                    "fold {fold}: its predictions are for classes {:?}, not {class_names:?}",
                    fold_predictions.class_names
                );
            }
            for row in fold_predictions.rows {
                predictions.insert((fold, row.record.image_path.clone(), row.record.product_id.clone()), row);
            }
        }
        folds.push(result);
    }
    let oof: Vec<OutOfFold> = images
        .iter()
        .filter_map(|image| {
            let key = (image.fold, image.image_path.clone(), image.product_id.clone());
            // A row listed twice gets the one prediction of its image twice.
            predictions.get(&key).map(|prediction| OutOfFold { image, prediction: prediction.clone() })
        })
        .collect();
    let finished: Vec<usize> = folds.iter().filter(|f| f.status == "finished").map(|f| f.fold).collect();
    let unscored = images.iter().filter(|i| finished.contains(&i.fold)).count() - oof.len();
    if unscored > 0 {
        tracing::warn!(
            "{unscored} held-out image(s) of finished folds could not be read and have no out-of-fold prediction"
        );
    }
    let unfinished: Vec<usize> = folds.iter().filter(|f| f.status != "finished").map(|f| f.fold).collect();
    if !unfinished.is_empty() {
        tracing::warn!("folds not finished yet: {unfinished:?}; their images have no out-of-fold prediction");
    }
    let labels: Vec<usize> = oof.iter().map(|o| class_index(class_names, &o.image.image_type)).collect();
    let probabilities: Vec<Vec<f64>> = oof.iter().map(|o| o.prediction.probabilities.clone()).collect();
    let found = find_label_issues(&probabilities, &labels, class_names.len());
    let quality_of = |i: usize| quality.score(&probabilities[i], labels[i]);
    write_oof_predictions(&dir.join("oof_predictions.csv"), class_names, &oof, &found.is_issue, quality_of)?;
    let issues: Vec<IssueRow> = found
        .for_review(&probabilities, &labels, quality)
        .iter()
        .map(|&i| IssueRow::new(&oof[i], labels[i], found.is_issue[i], &found.thresholds, class_names, quality_of(i)))
        .collect();
    crate::fsutil::write_csv_atomic(&dir.join("label_issues.csv"), &IssueRow::HEADER, &issues)?;
    let label_issues_png = dir.join("label_issues.png");
    crate::report::draw("label_issues.png", || contact_sheet(&label_issues_png, &plan.base_config, &issues, oof.len()));
    let finished: Vec<&FoldResult> = folds.iter().filter(|f| f.status == "finished").collect();
    let spread = |figure: fn(&FoldResult) -> Option<f64>| spread(finished.iter().filter_map(|f| figure(f)));
    let summary = CvSummary {
        accuracy: spread(|f| f.accuracy),
        f1_macro: spread(|f| f.f1_macro),
        f1_weighted: spread(|f| f.f1_weighted),
        folds: folds.clone(),
        unfinished,
        images: images.len(),
        oof_images: oof.len(),
        label_issues: issues.len(),
        confident_learning_issues: found.is_issue.iter().filter(|&&f| f).count(),
        ranked_by: quality,
        class_thresholds: class_names.iter().cloned().zip(found.thresholds.iter().copied()).collect(),
        confusions: confusions(&found, &issues, class_names),
    };
    crate::fsutil::write_json_atomic(&dir.join("cv_results.json"), &summary)?;
    write_cv_results_csv(&dir.join("cv_results.csv"), &summary)?;
    Ok(summary)
}

fn class_index(class_names: &[String], name: &str) -> usize {
    class_names.iter().position(|c| c == name).expect("images.csv holds the config's classes (checked when read)")
}

/// A fold's figures, and its test predictions when it has finished.
fn empty_fold_result(fold: usize, held_out: usize) -> FoldResult {
    FoldResult {
        fold,
        status: "missing".into(),
        held_out_images: held_out,
        accuracy: None,
        f1_macro: None,
        f1_weighted: None,
        roc_auc_macro: None,
        best_epoch: None,
        epochs_run: None,
        seconds: None,
        run_dir: None,
    }
}

fn read_fold(dir: &Path, fold: usize, held_out: usize) -> Result<(FoldResult, Option<TestPredictions>)> {
    let mut result = empty_fold_result(fold, held_out);
    let observed = observed_state(dir)?;
    result.status = observed.status().into();
    let run = match observed {
        Observed::Finished(run) => run,
        Observed::Running(run) => {
            result.run_dir = Some(run);
            return Ok((result, None));
        }
        Observed::Failed | Observed::Missing => return Ok((result, None)),
    };
    let layout = RunLayout::of(&run)?;
    let epochs = layout.read_metrics_csv()?;
    result.epochs_run = Some(epochs.len());
    result.seconds = Some(epochs.iter().map(|e| e.seconds).sum());
    result.best_epoch = layout.read_final_results()?.finished.and_then(|run| run.best_epoch);
    let metrics = layout.read_evaluation_results()?.metrics.metrics;
    result.accuracy = Some(metrics.accuracy);
    result.f1_macro = Some(metrics.macro_avg.f1);
    result.f1_weighted = Some(metrics.weighted_avg.f1);
    result.roc_auc_macro = metrics.roc_auc_macro;
    // A diverged model's NaN probabilities are refused when read: its images then get no
    // out-of-fold prediction, and the other folds still count.
    let predictions = match layout.read_test_predictions() {
        Ok(predictions) => Some(predictions),
        Err(e) => {
            tracing::warn!("fold {fold}: {e:#}; its images get no out-of-fold prediction");
            None
        }
    };
    result.run_dir = Some(run);
    Ok((result, predictions))
}

fn spread(values: impl Iterator<Item = f64>) -> Option<Spread> {
    let values: Vec<f64> = values.collect();
    if values.is_empty() {
        return None;
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64;
    Some(Spread { mean, std: variance.sqrt() })
}

fn write_oof_predictions(
    path: &Path,
    class_names: &[String],
    oof: &[OutOfFold],
    is_issue: &[bool],
    quality: impl Fn(usize) -> f64,
) -> Result<()> {
    crate::fsutil::write_atomic_with(path, |w| {
        let mut csv = csv::Writer::from_writer(w);
        let fixed = ["image_path", "product_id", "split", "image_type", "fold", "predicted_class"].map(String::from);
        let scores = ["label_quality", "confident_learning_issue"].map(String::from);
        csv.write_record(fixed.into_iter().chain(class_names.iter().map(|c| format!("prob_{c}"))).chain(scores))?;
        for (row, o) in oof.iter().enumerate() {
            let i = o.image;
            let fields = [&i.image_path, &i.product_id, &i.split, &i.image_type].map(|s| s.clone());
            csv.write_record(
                fields
                    .into_iter()
                    .chain([i.fold.to_string(), o.prediction.predicted_class.clone()])
                    .chain(o.prediction.probabilities.iter().map(|p| p.to_string()))
                    .chain([format!("{:.6}", quality(row)), is_issue[row].to_string()]),
            )?;
        }
        csv.flush()?;
        Ok(())
    })
}

/// A row of `label_issues.csv`.
#[derive(Debug, Clone, Serialize)]
struct IssueRow {
    image_path: String,
    product_id: String,
    split: String,
    fold: usize,
    image_type: String,
    suggested_class: String,
    label_quality: f64,
    given_probability: f64,
    suggested_probability: f64,
    /// Counted off the diagonal of the confident joint (else: only not the most probable class).
    confident_learning: bool,
    why: String,
}

impl IssueRow {
    const HEADER: [&'static str; 11] = [
        "image_path",
        "product_id",
        "split",
        "fold",
        "image_type",
        "suggested_class",
        "label_quality",
        "given_probability",
        "suggested_probability",
        "confident_learning",
        "why",
    ];

    fn new(
        o: &OutOfFold,
        label: usize,
        confident_learning: bool,
        thresholds: &[f64],
        class_names: &[String],
        label_quality: f64,
    ) -> Self {
        let p = &o.prediction.probabilities;
        let suggested = (0..p.len())
            .filter(|&k| k != label)
            .max_by(|&a, &b| p[a].total_cmp(&p[b]).then(b.cmp(&a)))
            .unwrap_or(label);
        let t = thresholds;
        let why = format!(
            "fold {}'s model: {} {:.3} (its class threshold {:.3}), {} {:.3} (threshold {:.3})",
            o.image.fold, class_names[label], p[label], t[label], class_names[suggested], p[suggested], t[suggested]
        );
        Self {
            image_path: o.image.image_path.clone(),
            product_id: o.image.product_id.clone(),
            split: o.image.split.clone(),
            fold: o.image.fold,
            image_type: o.image.image_type.clone(),
            suggested_class: class_names[suggested].clone(),
            label_quality,
            given_probability: p[label],
            suggested_probability: p[suggested],
            confident_learning,
            why,
        }
    }
}

fn confusions(found: &LabelIssues, issues: &[IssueRow], class_names: &[String]) -> Vec<Confusion> {
    let mut pairs = Vec::new();
    for (given, row) in found.confident_joint.iter().enumerate() {
        for (truth, &estimated) in row.iter().enumerate() {
            let (given, suggested) = (&class_names[given], &class_names[truth]);
            let listed = issues.iter().filter(|i| i.image_type == *given && i.suggested_class == *suggested).count();
            if given != suggested && (estimated > 0 || listed > 0) {
                pairs.push(Confusion { given: given.clone(), suggested: suggested.clone(), estimated, listed });
            }
        }
    }
    pairs.sort_by(|a, b| (b.estimated, b.listed).cmp(&(a.estimated, a.listed)));
    pairs
}

fn write_cv_results_csv(path: &Path, summary: &CvSummary) -> Result<()> {
    let optional = |v: Option<f64>| v.map(|x| format!("{x:.6}")).unwrap_or_default();
    let count = |v: Option<usize>| v.map(|x| x.to_string()).unwrap_or_default();
    crate::fsutil::write_atomic_with(path, |w| {
        let mut csv = csv::Writer::from_writer(w);
        csv.write_record([
            "fold",
            "status",
            "held_out_images",
            "accuracy",
            "f1_macro",
            "f1_weighted",
            "roc_auc_macro",
            "best_epoch",
            "epochs_run",
            "seconds",
        ])?;
        for f in &summary.folds {
            csv.write_record([
                f.fold.to_string(),
                f.status.clone(),
                f.held_out_images.to_string(),
                optional(f.accuracy),
                optional(f.f1_macro),
                optional(f.f1_weighted),
                optional(f.roc_auc_macro),
                count(f.best_epoch),
                count(f.epochs_run),
                f.seconds.map(|s| format!("{s:.1}")).unwrap_or_default(),
            ])?;
        }
        let figures = [summary.accuracy, summary.f1_macro, summary.f1_weighted];
        for (name, pick) in [("mean", (|s: Spread| s.mean) as fn(Spread) -> f64), ("std", |s: Spread| s.std)] {
            let mut row = vec![name.to_string(), String::new(), String::new()];
            row.extend(figures.iter().map(|s| optional(s.map(pick))));
            row.extend(std::iter::repeat_n(String::new(), 4));
            csv.write_record(&row)?;
        }
        csv.flush()?;
        Ok(())
    })
}

fn contact_sheet(path: &Path, config: &Config, issues: &[IssueRow], images: usize) -> Result<()> {
    use crate::report::contact_sheet::{write, SheetEntry};
    let source = crate::data::ImageSource::from_config(&config.data);
    let entries: Vec<SheetEntry> = issues
        .iter()
        .take(CONTACT_SHEET_SIZE)
        .enumerate()
        .map(|(rank, issue)| SheetEntry {
            image: crate::data::image::load_rgb(&source, &issue.image_path).ok(),
            lines: vec![
                format!("{}. {}", rank + 1, issue.image_type),
                format!("-> {}", issue.suggested_class),
                format!("quality {:.3}", issue.label_quality),
            ],
        })
        .collect();
    let title =
        format!("labels to review: {} of {images} images, most suspect first (given -> suggested)", issues.len());
    write(path, &title, &entries)
}
