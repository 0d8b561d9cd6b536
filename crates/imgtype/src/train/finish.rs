//! After the last epoch: the last model, the best weights restored, the test split
//! evaluated, the final files written, and the checkpoint marked finished.

use anyhow::Result;
use std::path::Path;

use super::artifacts::{
    log_test_scalars, share_best_model, write_final_results, write_test_evaluation, write_test_predictions,
};
use super::calibrate;
use super::checkpoint;
use super::selection::BestWeights;
use super::session::Session;
use super::state::TrainingState;
use super::{TrainEnd, TrainOutcome};
use crate::eval::{evaluate_records, SplitEvaluation};
use crate::infer::{int8_agreement, Int8Agreement};
use crate::score::ScoringSettings;
use crate::stop::{Outcome, StopFlag};

/// Stores the best model's INT8 ranges, measured on training images, in its file, then checks
/// INT8 against `test_eval` on the test images. INT8 is an extra: a failure is a warning, and
/// the model serves at every other precision.
fn measure_int8_ranges(
    session: &Session,
    best: &Path,
    test_eval: &SplitEvaluation,
    evaluated_by: &str,
) -> Option<Int8Agreement> {
    let workers = session.config.system.decode_threads();
    let measured = crate::ImageTypeClassifier::load(best, tch::Device::Cpu).and_then(|mut model| {
        crate::infer::calibrate_model(&mut model, &session.train_records, &session.source, workers, best)?;
        Ok(model)
    });
    let model = measured
        .map_err(|error| {
            tracing::warn!("INT8 ranges not measured ({error:#}): `test --int8-calibrate` can do it later")
        })
        .ok()?;
    let checked = {
        let settings = ScoringSettings::new(&session.config, model.input_size());
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = session.config.system.num_threads.unwrap_or(cores);
        // The model file's temperature: the one the test split was just evaluated with.
        let scoring = (&session.source, settings, threads, model.config().inference.temperature);
        int8_agreement(&model, &session.test_records, test_eval, &session.decision_rule(), scoring)
    };
    let agreement = checked
        .map_err(|e| {
            // One line: OpenVINO's own messages span several.
            let why = format!("{e:#}").split_whitespace().collect::<Vec<_>>().join(" ");
            tracing::warn!("INT8 not checked against the test images ({why})");
        })
        .ok()?;
    let (agree, images) = (agreement.same_class, agreement.images);
    let said = format!("INT8 decides as {evaluated_by} on {agree} of {images} test images");
    if agreement.loses_decisions() {
        tracing::warn!(
            "{said} ({:.1}%): on this model INT8 loses decisions; compare `test --precision int8` with fp32 on \
             your images before serving it in INT8",
            agreement.share() * 100.0
        );
    } else {
        tracing::info!("{said}");
    }
    Some(agreement)
}

pub(super) fn finish(
    session: &mut Session,
    mut state: TrainingState,
    best_weights: BestWeights,
    stop: &StopFlag,
) -> Result<TrainEnd> {
    let config = session.config.clone();
    let folder = &session.folder;
    if config.validation.save_last_model {
        session.eval_model().save(&folder.last_model())?;
    }
    if let Some(weights) = &best_weights {
        session.model.load_tensors(weights, Path::new("best weights"))?;
        tracing::info!("restored the best weights (epoch {})", state.best_epoch.unwrap_or(0));
    }
    // One inference model of the best weights scores the validation split (for the
    // temperature) and then the test split.
    let scorer = session.scorer(&session.model);
    let evaluated_by = scorer.engine().describe();
    let calibration = calibrate::fit_on_validation(session, &scorer)?;
    let temperature = calibration.map_or(config.inference.temperature, |(t, _)| t);
    session.model.set_temperature(temperature);
    let class_names = session.model.class_names();
    let test_eval = evaluate_records(
        &scorer.with_temperature(temperature),
        class_names,
        &session.test_records,
        Some(&session.loss_fn),
        "test",
    )?;
    let test_metrics = test_eval.metrics(class_names, &session.decision_rule());
    tracing::info!(
        "test: accuracy {:.4}, F1 macro {:.4}, F1 weighted {:.4} ({} images)",
        test_metrics.accuracy,
        test_metrics.macro_avg.f1,
        test_metrics.weighted_avg.f1,
        test_metrics.num_samples
    );
    let last_epoch = state.history.last().map(|r| r.epoch as i64).unwrap_or(0);
    log_test_scalars(session.events.as_mut(), last_epoch, &test_eval, &test_metrics);
    let report = calibration.map(|(t, validation)| calibrate::report(t, validation, &test_eval));
    write_test_evaluation(folder, &state.history, &test_eval, &test_metrics, report.as_ref())?;
    write_test_predictions(folder, &session.test_records, &test_eval, class_names, &session.decision_rule())?;
    if report.is_some() {
        calibrate::store(&folder.best_model(), temperature)?;
    }
    let best_model = Some(folder.best_model()).filter(|p| p.exists());
    let int8 = best_model.as_ref().and_then(|best| {
        // An interrupt after the last epoch finishes the run; the INT8 extras are what it skips.
        if stop.is_raised() {
            tracing::info!("interrupted: INT8 ranges not measured (`test --int8-calibrate` can do it later)");
            return None;
        }
        measure_int8_ranges(session, best, &test_eval, &evaluated_by)
    });
    if let Some(best) = best_model.as_ref().filter(|_| config.validation.save_best_model) {
        share_best_model(best, &config);
    }
    write_final_results(folder, &state, best_model.as_deref(), &test_metrics, session.skipped, int8)?;
    state.finished = true;
    checkpoint::mark_finished(&folder.latest_checkpoint(), &state)?;
    Ok(Outcome::Finished(TrainOutcome {
        run_dir: folder.dir().to_path_buf(),
        best_model,
        best_epoch: state.best_epoch,
        test_metrics,
        skipped_images: session.skipped,
    }))
}
