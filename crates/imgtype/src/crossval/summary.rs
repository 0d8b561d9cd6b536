//! A cross-validation's results from whatever folds have finished: `cv_results.csv` and
//! `.json` (each fold's held-out figures, mean ± std), `oof_predictions.csv` (every image
//! with the probabilities of the one model that did not train on it), and from those
//! `label_issues.csv` (confident learning, most suspect first), `label_issues.png` (their
//! thumbnails) and the class pairs most often confused in the labels.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde::Serialize;

pub use super::label_review::Confusion;
use super::label_review::{confusions, contact_sheet, IssueRow, OutOfFold};
use super::layout::{fold_name, read_images, read_plan};
use crate::eval::label_issues::{find_label_issues, LabelQuality};
use crate::sweep::{observed_state, Observed};
use crate::train::{PredictionRow, RunLayout, TestPredictions};

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
