//! A cross-validation's results from whatever folds have finished: `cv_results.csv` and
//! `.json` (each fold's held-out figures, mean ± std), `oof_predictions.csv` (every image
//! with the probabilities of the one model that did not train on it), and from those
//! `label_issues.csv` (confident learning, most suspect first), `label_issues.png` (their
//! thumbnails) and the class pairs most often confused in the labels.

use std::path::Path;

use anyhow::Result;
use serde::Serialize;

pub use super::label_review::Confusion;
use super::label_review::{confusions, contact_sheet, IssueRow, Judgement, OutOfFold};
use super::layout::{check_plan_not_lost, is_cv_folder, read_plan, read_repeat_plan, repeat_dir, CvPlan, FoldId};
pub use super::out_of_fold::FoldResult;
use super::out_of_fold::{average_repeats, read_repeat, RepeatOf, RepeatResults};
use crate::eval::label_issues::{find_label_issues, LabelQuality};
use crate::eval::neighbours::{blend, neighbours_within, DEFAULT_NEIGHBOURS, NEIGHBOUR_WEIGHT};
use crate::stop::{Outcome, StopFlag, Stopped};

/// Mean and (population) standard deviation over the finished folds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Spread {
    pub mean: f64,
    pub std: f64,
}

/// How labels are judged from the out-of-fold predictions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Judging {
    /// The order of `label_issues.csv` (`--rank-by`).
    pub quality: LabelQuality,
    /// Nearest held-out neighbours whose labels are blended into each image's probabilities
    /// (`--neighbours`); 0: the models' probabilities alone.
    pub neighbours: usize,
}

impl Default for Judging {
    fn default() -> Self {
        Self { quality: LabelQuality::default(), neighbours: DEFAULT_NEIGHBOURS }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CvSummary {
    pub folds: Vec<FoldResult>,
    pub accuracy: Option<Spread>,
    pub f1_macro: Option<Spread>,
    pub f1_weighted: Option<Spread>,
    /// How many times the folds were dealt (`--repeats`).
    pub repeats: usize,
    /// Folds not finished: their images have no out-of-fold prediction yet.
    pub unfinished: Vec<FoldId>,
    pub images: usize,
    pub oof_images: usize,
    /// Rows of `label_issues.csv`: the confident-learning issues and the other images whose
    /// given label is not the most probable class.
    pub label_issues: usize,
    /// Of them, issues by confident learning (cleanlab's `find_label_issues`).
    pub confident_learning_issues: usize,
    pub ranked_by: LabelQuality,
    /// Neighbours blended into the probabilities confident learning judged (0: none, as
    /// asked or because some image could not be embedded) and their weight.
    pub neighbours: usize,
    /// Neighbours each image of the smallest finished fold had: `neighbours`, or all the other
    /// images of that fold where there are fewer.
    pub neighbours_in_smallest_fold: usize,
    pub neighbour_weight: f64,
    /// Per class, the threshold of confident learning (mean self-confidence).
    pub class_thresholds: Vec<(String, f64)>,
    /// Most frequent first.
    pub confusions: Vec<Confusion>,
}

/// What a summary writes into the cross-validation folder.
const SUMMARY_FILES: [&str; 5] =
    ["oof_predictions.csv", "label_issues.csv", "label_issues.png", "cv_results.json", "cv_results.csv"];

/// Reads every fold of the cross-validation in `dir` (of each repeat) and writes the results
/// files; when `stop` is raised before they are written, writes none of them (the folder keeps
/// the set it had, never half of a new one).
pub fn summarize(dir: &Path, judging: Judging, stop: &StopFlag) -> Result<Outcome<CvSummary>> {
    let quality = judging.quality;
    let plan = read_plan(dir)?;
    let class_names = &plan.base_config.data.class_names;
    let (repeats, not_set_up) = read_repeats(dir, &plan, judging.neighbours)?;
    let (oof, neighbours) = average_repeats(&repeats, class_names);
    let folds: Vec<FoldResult> = repeats.iter().flat_map(|r| r.folds.iter().cloned()).collect();
    let unfinished_folds = folds.iter().filter(|f| f.status != "finished").map(FoldResult::id);
    let mut unfinished: Vec<FoldId> = unfinished_folds.chain(not_set_up).collect();
    unfinished.sort_unstable();
    let images = &repeats[0].images;
    let labels: Vec<usize> = oof.iter().map(|o| class_index(class_names, &o.image.image_type)).collect();
    let probabilities: Vec<Vec<f64>> = oof.iter().map(|o| o.prediction.probabilities.clone()).collect();
    let judged = match &neighbours {
        Some(shares) => blend(&probabilities, shares, NEIGHBOUR_WEIGHT),
        None => probabilities.clone(),
    };
    let found = find_label_issues(&judged, &labels, class_names.len());
    let quality_of = |i: usize| quality.score(&judged[i], labels[i]);
    if stop.is_raised() {
        return Ok(stopped_before_writing(dir));
    }
    let _locks = crate::fsutil::lock_outputs(dir, &SUMMARY_FILES, "writing a summary into it")?;
    // A summary killed while it writes (the contact sheet takes seconds) leaves the set it had.
    let staged = crate::fsutil::StagedFiles::begin(dir, &SUMMARY_FILES)?;
    let oof_file = OofFile { class_names, oof: &oof, neighbours: neighbours.as_deref(), is_issue: &found.is_issue };
    oof_file.write(&staged.path("oof_predictions.csv"), quality_of)?;
    let issues: Vec<IssueRow> = found
        .for_review(&judged, &labels, quality)
        .iter()
        .map(|&i| {
            let judgement = Judgement {
                probabilities: &judged[i],
                neighbours: neighbours.as_ref().map(|n| n[i].as_slice()),
                label_quality: quality_of(i),
                confident_learning: found.is_issue[i],
            };
            IssueRow::new(&oof[i], labels[i], judgement, &found.thresholds, class_names, plan.repeats)
        })
        .collect();
    crate::fsutil::write_csv_atomic(&staged.path("label_issues.csv"), &IssueRow::HEADER, &issues)?;
    let label_issues_png = staged.path("label_issues.png");
    crate::report::draw("label_issues.png", || contact_sheet(&label_issues_png, &plan.base_config, &issues, oof.len()));
    let finished: Vec<&FoldResult> = folds.iter().filter(|f| f.status == "finished").collect();
    let spread = |figure: fn(&FoldResult) -> Option<f64>| spread(finished.iter().filter_map(|f| figure(f)));
    let used_neighbours = if neighbours.is_some() { judging.neighbours } else { 0 };
    let smallest_fold = finished.iter().map(|f| f.held_out_images).min().unwrap_or(0);
    let summary = CvSummary {
        accuracy: spread(|f| f.accuracy),
        f1_macro: spread(|f| f.f1_macro),
        f1_weighted: spread(|f| f.f1_weighted),
        folds: folds.clone(),
        repeats: plan.repeats,
        unfinished,
        images: images.len(),
        oof_images: oof.len(),
        label_issues: issues.len(),
        confident_learning_issues: found.is_issue.iter().filter(|&&f| f).count(),
        ranked_by: quality,
        neighbours: used_neighbours,
        neighbours_in_smallest_fold: neighbours_within(used_neighbours, smallest_fold),
        neighbour_weight: if neighbours.is_some() { NEIGHBOUR_WEIGHT } else { 0.0 },
        class_thresholds: class_names.iter().cloned().zip(found.thresholds.iter().copied()).collect(),
        confusions: confusions(&found, &issues, class_names),
    };
    crate::fsutil::write_json_atomic(&staged.path("cv_results.json"), &summary)?;
    write_cv_results_csv(&staged.path("cv_results.csv"), &summary)?;
    staged.move_in()?;
    Ok(Outcome::Finished(summary))
}

/// Each repeat's folds (`neighbours` > 0: with the neighbours' shares), and the folds of the
/// repeats not set up yet.
fn read_repeats(dir: &Path, plan: &CvPlan, neighbours: usize) -> Result<(Vec<RepeatResults>, Vec<FoldId>)> {
    let mut repeats = Vec::new();
    let mut not_set_up = Vec::new();
    if neighbours > 0 {
        tracing::info!("embedding the held-out images for their {neighbours} nearest neighbours' labels");
    }
    // Every repeat's plan is checked against the first's before any fold is read: an edited
    // plan is named as such, not by the first run that disagrees with it.
    let mut set_up: Vec<(usize, Option<CvPlan>)> = vec![(1, None)];
    for repeat in 2..=plan.repeats {
        let folder = repeat_dir(dir, repeat);
        if is_cv_folder(&folder) {
            set_up.push((repeat, Some(read_repeat_plan(dir, plan, repeat)?)));
            continue;
        }
        check_plan_not_lost(&folder)?;
        // Not set up yet (its member has not started): as folds not finished.
        tracing::warn!("repeat {repeat}: {} is not set up yet; its folds are not counted", folder.display());
        not_set_up.extend((1..=plan.folds).map(|fold| FoldId { repeat, fold }));
    }
    for (repeat, repeat_plan) in set_up {
        let of = RepeatOf { repeat, repeats: plan.repeats };
        repeats.push(read_repeat(&repeat_dir(dir, repeat), repeat_plan.as_ref().unwrap_or(plan), of, neighbours)?);
    }
    Ok((repeats, not_set_up))
}

fn stopped_before_writing(dir: &Path) -> Outcome<CvSummary> {
    let message = format!("interrupted before the results were written: `train --summarize {}`", dir.display());
    Outcome::Stopped(Stopped::interrupted(None, message))
}

fn class_index(class_names: &[String], name: &str) -> usize {
    class_names.iter().position(|c| c == name).expect("images.csv holds the config's classes (checked when read)")
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

/// `oof_predictions.csv`: each image's out-of-fold probabilities, with the neighbours' shares
/// (`neighbours_<class>`) when they were blended in.
struct OofFile<'a> {
    class_names: &'a [String],
    oof: &'a [OutOfFold<'a>],
    neighbours: Option<&'a [Vec<f64>]>,
    is_issue: &'a [bool],
}

impl OofFile<'_> {
    fn write(&self, path: &Path, quality: impl Fn(usize) -> f64) -> Result<()> {
        let classes = self.class_names;
        crate::fsutil::write_atomic_with(path, |w| {
            let mut csv = csv::Writer::from_writer(w);
            let fixed =
                ["image_path", "product_id", "split", "image_type", "fold", "predicted_class"].map(String::from);
            let mut header: Vec<String> =
                fixed.into_iter().chain(classes.iter().map(|c| format!("prob_{c}"))).collect();
            if self.neighbours.is_some() {
                header.extend(classes.iter().map(|c| format!("neighbours_{c}")));
            }
            header.extend(["label_quality", "confident_learning_issue"].map(String::from));
            csv.write_record(&header)?;
            for (row, o) in self.oof.iter().enumerate() {
                let i = o.image;
                let mut fields =
                    vec![i.image_path.clone(), i.product_id.clone(), i.split.clone(), i.image_type.clone()];
                fields.extend([i.fold.to_string(), o.prediction.predicted_class.clone()]);
                fields.extend(o.prediction.probabilities.iter().map(|p| p.to_string()));
                if let Some(shares) = self.neighbours {
                    fields.extend(shares[row].iter().map(|s| s.to_string()));
                }
                fields.extend([format!("{:.6}", quality(row)), self.is_issue[row].to_string()]);
                csv.write_record(&fields)?;
            }
            csv.flush()?;
            Ok(())
        })
    }
}

fn write_cv_results_csv(path: &Path, summary: &CvSummary) -> Result<()> {
    let optional = |v: Option<f64>| v.map(|x| format!("{x:.6}")).unwrap_or_default();
    let count = |v: Option<usize>| v.map(|x| x.to_string()).unwrap_or_default();
    crate::fsutil::write_atomic_with(path, |w| {
        let mut csv = csv::Writer::from_writer(w);
        let header = [
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
        ];
        // A repeated cross-validation's folds say which repeat they are of.
        let repeated = summary.repeats > 1;
        csv.write_record(header.iter().chain(repeated.then_some(&"repeat")))?;
        for f in &summary.folds {
            let repeat = repeated.then(|| f.repeat.to_string());
            let fields = [
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
            ];
            csv.write_record(fields.into_iter().chain(repeat))?;
        }
        let figures = [summary.accuracy, summary.f1_macro, summary.f1_weighted];
        for (name, pick) in [("mean", (|s: Spread| s.mean) as fn(Spread) -> f64), ("std", |s: Spread| s.std)] {
            let mut row = vec![name.to_string(), String::new(), String::new()];
            row.extend(figures.iter().map(|s| optional(s.map(pick))));
            row.extend(std::iter::repeat_n(String::new(), if repeated { 5 } else { 4 }));
            csv.write_record(&row)?;
        }
        csv.flush()?;
        Ok(())
    })
}
