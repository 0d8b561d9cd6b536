//! What a run writes besides models and checkpoints: the per-epoch history
//! (`logs/metrics.csv`, `logs/training_results.json`, TensorBoard scalars), the list of
//! skipped images, and at the end the test evaluation (`evaluation_results.json`,
//! `class_performance_summary.csv`, pictures) and `final_results.json`.

use std::path::Path;

use anyhow::{Context, Result};

use super::run_files::{
    CalibrationReport, EvaluationResults, FinalResults, FinishedRun, RunLayout, RunStatus, TrainingResults,
    METRICS_CSV_HEADER,
};
use super::state::{EpochRecord, TrainingState};
use super::tensorboard::EventWriter;
use super::test_predictions::{PredictionRow, TestPredictions};
use super::RunFolder;
use crate::data::batch::SkippedImage;
use crate::data::{ImageRecord, SplitName};
use crate::eval::calibration::{probabilities_at, reliability_bins};
use crate::eval::{Metrics, SplitEvaluation};
use crate::infer::Int8Agreement;
use crate::score::DecisionRule;

/// `logs/training_results.json` and `logs/metrics.csv`, rewritten whole after every epoch.
pub(super) fn write_history(folder: &RunFolder, state: &TrainingState) -> Result<()> {
    let layout = folder.layout();
    crate::fsutil::write_json_atomic(
        &layout.training_results(),
        &TrainingResults {
            history: state.history.clone(),
            best_epoch: state.best_epoch,
            best_score: state.best_score,
            metric: folder.config().validation.metric,
            stopped_early: state.stopped_early,
        },
    )?;
    crate::fsutil::write_csv_atomic(&layout.metrics_csv(), &METRICS_CSV_HEADER, &state.history)
        .context("logs/metrics.csv")
}

pub(super) fn log_epoch_scalars(events: Option<&mut EventWriter>, r: &EpochRecord) {
    let mut values = vec![
        ("train/loss", r.train_loss),
        ("train/accuracy", r.train_accuracy),
        ("lr/head", r.lr_head),
        ("lr/backbone", r.lr_backbone),
        ("train/images_per_second", r.images_per_second),
    ];
    for (tag, value) in [
        ("val/loss", r.val_loss),
        ("val/accuracy", r.val_accuracy),
        ("val/f1_macro", r.val_f1_macro),
        ("val/f1_weighted", r.val_f1_weighted),
    ] {
        if let Some(v) = value {
            values.push((tag, v));
        }
    }
    log_scalars(events, r.epoch as i64, &values);
}

pub(super) fn log_test_scalars(events: Option<&mut EventWriter>, step: i64, evaluation: &SplitEvaluation, m: &Metrics) {
    let mut values = vec![
        ("test/loss", evaluation.loss),
        ("test/accuracy", m.accuracy),
        ("test/f1_macro", m.macro_avg.f1),
        ("test/f1_weighted", m.weighted_avg.f1),
    ];
    if let Some(auc) = m.roc_auc_macro {
        values.push(("test/roc_auc_macro", auc));
    }
    log_scalars(events, step, &values);
}

fn log_scalars(events: Option<&mut EventWriter>, step: i64, values: &[(&str, f64)]) {
    let Some(events) = events else { return };
    if let Err(e) = events.scalars(step, values) {
        tracing::warn!("TensorBoard event file: {e:#}");
    }
}

/// The images a run's first start left out, from its `logs/skipped_images.csv`; `None`
/// when the file is missing or unreadable (the splits are then screened again).
pub(super) fn read_skipped(path: &Path) -> Option<Vec<(SplitName, SkippedImage)>> {
    let mut reader = crate::fsutil::csv_reader(path, &path.display().to_string()).ok()?;
    let mut skipped = Vec::new();
    for row in reader.records() {
        let row = row.ok()?;
        let split = SplitName::ALL.into_iter().find(|s| Some(s.as_str()) == row.get(0))?;
        let image = SkippedImage { image_path: row.get(1)?.to_string(), reason: row.get(2)?.to_string() };
        skipped.push((split, image));
    }
    Some(skipped)
}

/// `logs/skipped_images.csv`: images that could not be read, never trained on.
pub(super) fn write_skipped(path: &Path, skipped: &[(SplitName, SkippedImage)]) -> Result<()> {
    crate::fsutil::write_atomic_with(path, |w| {
        let mut csv = csv::Writer::from_writer(w);
        csv.write_record(["split", "image_path", "reason"])?;
        for (split, s) in skipped {
            csv.write_record([split.as_str(), &s.image_path, &s.reason])?;
        }
        csv.flush()?;
        Ok(())
    })
}

/// `evaluation_results.json`, `class_performance_summary.csv` and the evaluation pictures
/// of the test split; `logs/training_curves.png` from the history.
pub(super) fn write_test_evaluation(
    folder: &RunFolder,
    history: &[EpochRecord],
    evaluation: &SplitEvaluation,
    metrics: &Metrics,
    calibration: Option<&CalibrationReport>,
) -> Result<()> {
    let dir = folder.dir();
    crate::fsutil::write_json_atomic(
        &folder.layout().evaluation_results(),
        &EvaluationResults {
            split: "test".into(),
            loss: evaluation.loss,
            unreadable_images: evaluation.unreadable,
            metrics: metrics.clone().into(),
            calibration: calibration.copied(),
        },
    )?;
    write_class_summary(&dir.join("class_performance_summary.csv"), metrics)?;
    use crate::report::{draw, evaluation as pictures};
    let logs = folder.logs_dir();
    draw("training_curves.png", || super::curves::training_curves(&logs.join("training_curves.png"), history));
    if let Some(report) = calibration {
        let bins = |t: f64| reliability_bins(&probabilities_at(&evaluation.logits, t), &evaluation.y_true);
        let figures = (report.temperature, report.test.ece_before, report.test.ece_after);
        draw("reliability_diagram.png", || {
            pictures::reliability_diagram(
                &dir.join("reliability_diagram.png"),
                &bins(1.0),
                &bins(report.temperature),
                figures,
            )
        });
    }
    draw("confusion_matrix.png", || pictures::confusion_matrix(&dir.join("confusion_matrix.png"), metrics));
    draw("classification_report.png", || {
        pictures::classification_report(&dir.join("classification_report.png"), metrics)
    });
    draw("probability_analysis.png", || {
        pictures::probability_analysis(&dir.join("probability_analysis.png"), metrics, evaluation)
    });
    Ok(())
}

/// `test_predictions.csv`: each scored test image with its probabilities and the class
/// `rule` chooses.
pub(super) fn write_test_predictions(
    folder: &RunFolder,
    records: &[ImageRecord],
    evaluation: &SplitEvaluation,
    class_names: &[String],
    rule: &DecisionRule,
) -> Result<()> {
    let rows = evaluation
        .scored
        .iter()
        .zip(&evaluation.probabilities)
        .map(|(&index, probabilities)| PredictionRow {
            record: records[index].clone(),
            predicted_class: class_names[rule.decide(probabilities)].clone(),
            probabilities: probabilities.clone(),
        })
        .collect();
    TestPredictions { class_names: class_names.to_vec(), rows }.write(&folder.layout().test_predictions())
}

fn write_class_summary(path: &Path, metrics: &Metrics) -> Result<()> {
    crate::fsutil::write_atomic_with(path, |w| {
        let mut csv = csv::Writer::from_writer(w);
        csv.write_record(["class", "precision", "recall", "f1_score", "support"])?;
        for name in &metrics.class_names {
            let r = &metrics.per_class[name];
            csv.write_record([
                name.clone(),
                format!("{:.4}", r.precision),
                format!("{:.4}", r.recall),
                format!("{:.4}", r.f1_score),
                r.support.to_string(),
            ])?;
        }
        csv.flush()?;
        Ok(())
    })
}

/// Where a run leaves a copy of its best model: `paths.model_dir/best_model.safetensors`.
pub(super) fn shared_best_model(config: &crate::config::Config) -> std::path::PathBuf {
    config.paths.model_dir.join("best_model.safetensors")
}

/// As the Python system's `models/best_model.pth`: the latest best model also in
/// `paths.model_dir`. A failure here only warns: the run's own copy is what counts.
pub(super) fn share_best_model(best: &Path, config: &crate::config::Config) {
    let shared = shared_best_model(config);
    if let Some(weights) = config.model.pretrained_weights.as_deref().filter(|_| config.model.pretrained) {
        if let Err(e) = crate::fsutil::check_output_file(&shared, &[weights]) {
            tracing::warn!("the best model is not copied to {}: {e:#}", shared.display());
            return;
        }
    }
    let label = format!("best model {}", best.display());
    match crate::fsutil::read_capped(best, &label, crate::model::torch_file::MODEL_FILE_CAP)
        .and_then(|bytes| crate::fsutil::write_atomic(&shared, &bytes))
    {
        Ok(()) => tracing::info!("best model also copied to {}", shared.display()),
        Err(e) => tracing::warn!("could not copy the best model to {}: {e:#}", shared.display()),
    }
}

/// `final_results.json` of a run that stopped on an error: the error, for whoever finds the folder.
pub(super) fn write_failed_results(layout: &RunLayout, run_id: &str, error: &anyhow::Error) {
    let path = layout.final_results();
    // A finished run keeps its results whatever a later command (say, a --resume) runs into.
    if layout.read_final_results().is_ok_and(|results| results.status == RunStatus::Finished) {
        return;
    }
    let failed = FinalResults {
        run_id: run_id.to_string(),
        status: RunStatus::Failed,
        error: Some(format!("{error:#}")),
        finished: None,
    };
    if let Err(e) = crate::fsutil::write_json_atomic(&path, &failed) {
        tracing::warn!("could not record the failure in {}: {e:#}", path.display());
    }
}

/// `final_results.json`: the run in one place.
pub(super) fn write_final_results(
    folder: &RunFolder,
    state: &TrainingState,
    best_model: Option<&Path>,
    test: &Metrics,
    skipped_images: usize,
    int8_test_agreement: Option<Int8Agreement>,
) -> Result<()> {
    let finished = FinishedRun {
        best_epoch: state.best_epoch,
        validation_metric: folder.config().validation.metric,
        best_validation_score: state.best_score,
        epochs_run: state.history.len(),
        stopped_early: state.stopped_early,
        best_model: best_model.map(|p| p.display().to_string()),
        test_accuracy: test.accuracy,
        test_f1_macro: test.macro_avg.f1,
        test_f1_weighted: test.weighted_avg.f1,
        test_roc_auc_macro: test.roc_auc_macro,
        skipped_images,
        int8_test_agreement,
    };
    crate::fsutil::write_json_atomic(
        &folder.layout().final_results(),
        &FinalResults { run_id: folder.run_id(), status: RunStatus::Finished, error: None, finished: Some(finished) },
    )
}
