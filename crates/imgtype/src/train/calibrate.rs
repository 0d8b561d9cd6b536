//! Calibrated confidence: at the end of training, the temperature that minimises the
//! validation split's NLL is fitted on the best weights, stored in the best model file (so
//! `test`, the API and the Python module apply it) and reported with the test split's
//! figures in `evaluation_results.json`.

use std::path::Path;

use anyhow::Result;

use super::run_files::CalibrationReport;
use super::session::Session;
use crate::eval::calibration::{fit_temperature, CalibrationFigures};
use crate::eval::{evaluate_records, SplitEvaluation};
use crate::score::BatchScorer;

/// The temperature fitted on the validation split and its figures there; `None` when
/// `training.calibrate` is off or the run has no validation images.
pub(super) fn fit_on_validation(session: &Session, scorer: &BatchScorer) -> Result<Option<(f64, CalibrationFigures)>> {
    if !session.config.training.calibrate || session.val_records.is_empty() {
        return Ok(None);
    }
    let names = session.model.class_names();
    let scored = evaluate_records(scorer, names, &session.val_records, None, "calibration")?;
    let temperature = fit_temperature(&scored.logits, &scored.y_true);
    let figures = CalibrationFigures::measure(&scored.logits, &scored.y_true, temperature);
    tracing::info!(
        "calibration: temperature {temperature:.3} fitted on {} validation images; ECE {:.4} -> {:.4}, NLL {:.4} -> {:.4}",
        figures.images,
        figures.ece_before,
        figures.ece_after,
        figures.nll_before,
        figures.nll_after
    );
    Ok(Some((temperature, figures)))
}

/// The report for `evaluation_results.json`, with the test split scored at `temperature`
/// (its logits are the same at any temperature).
pub(super) fn report(temperature: f64, validation: CalibrationFigures, test: &SplitEvaluation) -> CalibrationReport {
    let test = CalibrationFigures::measure(&test.logits, &test.y_true, temperature);
    tracing::info!(
        "calibration on the test split: ECE {:.4} -> {:.4}, NLL {:.4} -> {:.4}",
        test.ece_before,
        test.ece_after,
        test.nll_before,
        test.nll_after
    );
    CalibrationReport { temperature, validation, test }
}

/// Stores the temperature in the model file at `path`, when there is one.
pub(super) fn store(path: &Path, temperature: f64) -> Result<()> {
    if path.exists() {
        crate::model::file::store_temperature(path, temperature)?;
    }
    Ok(())
}
