//! The out-of-fold predictions a summary judges: each repeat's finished folds read (their
//! figures, their held-out images' predictions, the neighbours' shares when asked for), then
//! averaged over the repeats per image.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde::Serialize;

use super::label_review::OutOfFold;
use super::layout::{check_folds_data, fold_config, fold_name, read_images, CvPlan, FoldId, CV_PLAN_FILE, IMAGES_FILE};
use super::neighbour_opinion::neighbour_shares;
use crate::data::folds::FoldImage;
use crate::sweep::{observed_state, runs_not_as_planned, Observed};
use crate::train::{PredictionRow, RunLayout, TestPredictions};

#[derive(Debug, Clone, Serialize)]
pub struct FoldResult {
    pub fold: usize,
    /// 1, or which repeat of the cross-validation (`--repeats`).
    pub repeat: usize,
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

impl FoldResult {
    pub fn id(&self) -> FoldId {
        FoldId { repeat: self.repeat, fold: self.fold }
    }
}

/// One repeat's folds and, per image of its `images.csv`, its out-of-fold prediction.
pub(super) struct RepeatResults {
    /// Which repeat of the cross-validation this is.
    pub repeat: usize,
    pub folds: Vec<FoldResult>,
    pub images: Vec<FoldImage>,
    pub predictions: Vec<Option<PredictionRow>>,
    /// Aligned with `predictions`; `None` when not asked for or some image could not be embedded.
    pub neighbours: Option<Vec<Option<Vec<f64>>>>,
}

/// Which repeat a summary reads, of how many.
#[derive(Debug, Clone, Copy)]
pub(super) struct RepeatOf {
    pub repeat: usize,
    pub repeats: usize,
}

/// Reads the folds of the cross-validation folder `dir` (repeat `of.repeat` of its summary).
pub(super) fn read_repeat(dir: &Path, plan: &CvPlan, of: RepeatOf, neighbours: usize) -> Result<RepeatResults> {
    let RepeatOf { repeat, repeats } = of;
    let images = read_images(dir, plan)?;
    check_folds_data(dir, plan, &images, false)?;
    let class_names = &plan.base_config.data.class_names;
    let named = |fold: usize| FoldId { repeat, fold }.label(repeats);
    let mut folds = Vec::new();
    let mut by_key: RowsByImage = HashMap::new();
    let mut tested = Vec::new();
    for fold in 1..=plan.folds {
        let held_out = plan.fold_images[fold - 1];
        // A fold whose files cannot be read (copied, edited, damaged) is one the summary cannot
        // count; the others still are.
        let read = read_fold(&dir.join(fold_name(fold)), fold, held_out);
        let (result, fold_predictions) = read.unwrap_or_else(|e| {
            tracing::warn!("{}: {e:#}; counted as damaged", named(fold));
            (FoldResult { status: "damaged".into(), ..empty_fold_result(fold, held_out) }, None)
        });
        if result.status == "finished" {
            // Every run of the fold, as a resume would check them, not only the one counted.
            let planned = fold_config(&plan.base_config, dir, fold);
            let refused = runs_not_as_planned(&dir.join(fold_name(fold)), &planned, &dir.join(CV_PLAN_FILE), dir);
            if let Some((_, error)) = refused.into_iter().next() {
                return Err(error);
            }
        }
        if let Some(fold_predictions) = fold_predictions {
            if fold_predictions.class_names != *class_names {
                bail!(
                    "{}: its predictions are for classes {:?}, not {class_names:?}",
                    named(fold),
                    fold_predictions.class_names
                );
            }
            tested.push(fold);
            let mut listed_again = 0;
            for row in fold_predictions.rows {
                let key = (fold, row.record.image_path.clone(), row.record.product_id.clone());
                listed_again += usize::from(by_key.insert(key, row).is_some());
            }
            if listed_again > 0 {
                let file = predictions_file(&result);
                tracing::warn!(
                    "{}: {listed_again} row(s) of {} repeat an image listed before (the file was edited?); each \
                     image's last row is used",
                    named(fold),
                    file.display()
                );
            }
        }
        folds.push(FoldResult { repeat, ..result });
    }
    // A row listed twice gets the one prediction of its image twice.
    let mut predictions: Vec<Option<PredictionRow>> =
        images.iter().map(|i| by_key.get(&(i.fold, i.image_path.clone(), i.product_id.clone())).cloned()).collect();
    check_same_labels(dir, &images, &predictions, &folds, &named)?;
    let damaged_folds = check_rows_per_fold(&images, &predictions, &folds, (&tested, &by_key), &named);
    for fold in folds.iter_mut().filter(|f| damaged_folds.contains(&f.fold)) {
        *fold = FoldResult { repeat, status: "damaged".into(), ..empty_fold_result(fold.fold, fold.held_out_images) };
    }
    // Nor are its predictions: what its model trained on is not known.
    images.iter().zip(&mut predictions).filter(|(i, _)| damaged_folds.contains(&i.fold)).for_each(|(_, p)| *p = None);
    let which = if repeats == 1 { String::new() } else { format!(" (repeat {repeat})") };
    let unfinished: Vec<usize> = folds.iter().filter(|f| f.status != "finished").map(|f| f.fold).collect();
    if !unfinished.is_empty() {
        tracing::warn!("folds not finished yet{which}: {unfinished:?}; their images have no out-of-fold prediction");
    }
    let neighbours = (neighbours > 0).then(|| repeat_neighbours(&images, &predictions, &folds, plan, neighbours, of));
    Ok(RepeatResults { repeat, folds, images, predictions, neighbours: neighbours.flatten() })
}

/// The folds' prediction rows by fold, image path and product.
type RowsByImage = HashMap<(usize, String, String), PredictionRow>;

/// Warns of the tested folds' held-out images without a prediction row; returns the folds that
/// are not counted: with rows for images they did not hold out (tested on others), or with none
/// of their own (their file another fold's, or emptied).
fn check_rows_per_fold(
    images: &[FoldImage],
    predictions: &[Option<PredictionRow>],
    folds: &[FoldResult],
    (tested, listed): (&[usize], &RowsByImage),
    named: &dyn Fn(usize) -> String,
) -> Vec<usize> {
    let mut damaged_folds = Vec::new();
    for fold in folds.iter().filter(|f| tested.contains(&f.fold)) {
        let held_out = (0..images.len()).filter(|&i| images[i].fold == fold.fold);
        let mut missing = held_out.filter(|&i| predictions[i].is_none());
        let missing_count = missing.clone().count();
        let rows = listed.keys().filter(|(f, _, _)| *f == fold.fold).count();
        let others = rows.saturating_sub(fold.held_out_images - missing_count);
        if others > 0 {
            // Its figures come from a test split of other images than it held out.
            tracing::warn!(
                "{}: {others} row(s) of {} are not its held-out images: it was tested on other images (its test split \
                 edited?); counted as damaged",
                named(fold.fold),
                predictions_file(fold).display()
            );
            damaged_folds.push(fold.fold);
        } else if missing_count > 0 && missing_count == fold.held_out_images {
            tracing::warn!(
                "{}: none of its {} held-out images has a row in {}: the file is another fold's or was emptied; \
                 counted as damaged",
                named(fold.fold),
                fold.held_out_images,
                predictions_file(fold).display()
            );
            damaged_folds.push(fold.fold);
        } else if let Some(first) = missing.next() {
            tracing::warn!(
                "{}: {} of its {} held-out images have no row in {} (the first: {}): unreadable when the fold was \
                 tested, or the file is another fold's; they have no out-of-fold prediction",
                named(fold.fold),
                missing_count,
                fold.held_out_images,
                predictions_file(fold).display(),
                images[first].image_path
            );
        }
    }
    damaged_folds
}

/// Each predicted image's label in `images.csv` is the one its fold was tested with: one or the
/// other edited would judge labels no model saw.
fn check_same_labels(
    dir: &Path,
    images: &[FoldImage],
    predictions: &[Option<PredictionRow>],
    folds: &[FoldResult],
    named: &dyn Fn(usize) -> String,
) -> Result<()> {
    for (row, (image, prediction)) in images.iter().zip(predictions).enumerate() {
        if let Some(tested) = prediction.as_ref().filter(|p| p.record.image_type != image.image_type) {
            let file = folds.iter().find(|f| f.fold == image.fold).map(predictions_file).unwrap_or_default();
            bail!(
                "{} tested {} as {} ({}), but row {} of {} labels it {}: one of the two files was changed since; \
                 start a new cross-validation",
                file.display(),
                image.image_path,
                tested.record.image_type,
                named(image.fold),
                row + 2,
                dir.join(IMAGES_FILE).display(),
                image.image_type
            );
        }
    }
    Ok(())
}

/// The fold's `test_predictions.csv`, in the run folder it was read from.
fn predictions_file(fold: &FoldResult) -> PathBuf {
    fold.run_dir.as_ref().map(|run| run.join("test_predictions.csv")).unwrap_or_default()
}

fn repeat_neighbours(
    images: &[FoldImage],
    predictions: &[Option<PredictionRow>],
    folds: &[FoldResult],
    plan: &CvPlan,
    k: usize,
    of: RepeatOf,
) -> Option<Vec<Option<Vec<f64>>>> {
    let named = |fold: usize| FoldId { repeat: of.repeat, fold }.label(of.repeats);
    let class_names = &plan.base_config.data.class_names;
    let scored: Vec<usize> = (0..images.len()).filter(|&i| predictions[i].is_some()).collect();
    let oof: Vec<OutOfFold> = scored
        .iter()
        .map(|&i| OutOfFold {
            image: &images[i],
            prediction: predictions[i].clone().expect("scored"),
            judges: vec![FoldId { repeat: of.repeat, fold: images[i].fold }],
        })
        .collect();
    let labels: Vec<usize> =
        oof.iter().map(|o| class_names.iter().position(|c| *c == o.image.image_type).unwrap_or(0)).collect();
    let run_dirs: HashMap<usize, &Path> =
        folds.iter().filter(|f| f.status == "finished").filter_map(|f| Some((f.fold, f.run_dir.as_deref()?))).collect();
    let shares = neighbour_shares(&oof, &run_dirs, &labels, &plan.base_config, k, &named)?;
    let mut aligned = vec![None; images.len()];
    scored.iter().zip(shares).for_each(|(&i, s)| aligned[i] = Some(s));
    Some(aligned)
}

/// Per image of the first repeat with a prediction in any repeat: its probabilities (and the
/// neighbours' shares, when every repeat has them) averaged over the repeats that scored it.
/// One repeat's rows are its own, unchanged.
pub(super) fn average_repeats<'a>(
    repeats: &'a [RepeatResults],
    class_names: &[String],
) -> (Vec<OutOfFold<'a>>, Option<Vec<Vec<f64>>>) {
    let base = &repeats[0];
    let with_neighbours = repeats.iter().all(|r| r.neighbours.is_some());
    let positions: Vec<HashMap<(&str, &str), usize>> = repeats
        .iter()
        .map(|r| {
            let mut first = HashMap::new();
            for (i, image) in r.images.iter().enumerate() {
                first.entry((image.image_path.as_str(), image.product_id.as_str())).or_insert(i);
            }
            first
        })
        .collect();
    let mut oof = Vec::new();
    let mut neighbours = Vec::new();
    for image in &base.images {
        let key = (image.image_path.as_str(), image.product_id.as_str());
        let found: Vec<(&PredictionRow, Option<&Vec<f64>>, FoldId)> = repeats
            .iter()
            .zip(&positions)
            .filter_map(|(r, at)| {
                let i = *at.get(&key)?;
                let shares = r.neighbours.as_ref().and_then(|n| n[i].as_ref());
                Some((r.predictions[i].as_ref()?, shares, FoldId { repeat: r.repeat, fold: r.images[i].fold }))
            })
            .collect();
        let Some(&(first, _, _)) = found.first() else { continue };
        let mut prediction = first.clone();
        if found.len() > 1 {
            prediction.probabilities = mean(found.iter().map(|(p, _, _)| &p.probabilities));
            let best = (0..prediction.probabilities.len())
                .max_by(|&a, &b| prediction.probabilities[a].total_cmp(&prediction.probabilities[b]).then(b.cmp(&a)))
                .unwrap_or(0);
            prediction.predicted_class = class_names[best].clone();
        }
        if with_neighbours {
            neighbours.push(mean(found.iter().filter_map(|(_, n, _)| *n)));
        }
        oof.push(OutOfFold { image, prediction, judges: found.iter().map(|&(_, _, judge)| judge).collect() });
    }
    (oof, with_neighbours.then_some(neighbours))
}

fn mean<'a>(rows: impl Iterator<Item = &'a Vec<f64>>) -> Vec<f64> {
    let mut total: Vec<f64> = Vec::new();
    let mut count = 0.0;
    for row in rows {
        if total.is_empty() {
            total = vec![0.0; row.len()];
        }
        total.iter_mut().zip(row).for_each(|(t, v)| *t += v);
        count += 1.0;
    }
    total.iter().map(|t| t / count).collect()
}

/// A fold's figures, and its test predictions when it has finished.
fn empty_fold_result(fold: usize, held_out: usize) -> FoldResult {
    FoldResult {
        fold,
        repeat: 1,
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

/// `label`: how warnings name it ("fold 2", "repeat 2 fold 2").
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
    // Unreadable (removed, a diverged model's NaN probabilities): the fold is damaged, its
    // figures not counted without the predictions they come from; the other folds still count.
    let predictions = layout.read_test_predictions()?;
    result.run_dir = Some(run);
    Ok((result, Some(predictions)))
}
