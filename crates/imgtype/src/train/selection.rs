//! Model selection after an epoch (timm's `validate` and checkpoint saver): every
//! `validation.val_frequency` epochs (and the last) the validation split is scored, the
//! best model by `validation.metric` is kept (weights in memory, `model/best_model.safetensors`
//! on disk), and early stopping is decided.

use anyhow::Result;
use tch::Tensor;

use super::schedule::LrSchedule;
use super::session::Session;
use super::state::EpochRecord;
use super::state::TrainingState;
use crate::eval::{evaluate_records, metric_score};

/// The best weights so far, by name (restored for the final test evaluation).
pub(super) type BestWeights = Option<Vec<(String, Tensor)>>;

/// Validates after the epoch of `record` when it is due, filling its validation figures and
/// updating the best model, early stopping and the plateau schedule; logs the epoch line.
pub(super) fn validate_epoch(
    session: &Session,
    state: &mut TrainingState,
    best_weights: &mut BestWeights,
    schedule: &mut LrSchedule,
    record: &mut EpochRecord,
) -> Result<()> {
    let config = &session.config;
    let t = &config.training;
    let epoch = record.epoch; // 1-based: the epochs done
    if epoch % config.validation.val_frequency != 0 && epoch != t.epochs {
        tracing::info!(
            "epoch {epoch}/{}: train loss {:.4} acc {:.4} | lr {:.2e}",
            t.epochs,
            record.train_loss,
            record.train_accuracy,
            record.lr_head
        );
        return Ok(());
    }
    let eval_model = session.eval_model();
    let class_names = eval_model.class_names();
    let scorer = session.scorer(eval_model);
    let evaluation =
        evaluate_records(&scorer, class_names, &session.val_records, Some(&session.loss_fn), "validation")?;
    let metrics = evaluation.metrics(class_names, &session.decision_rule());
    record.val_loss = Some(evaluation.loss);
    record.val_accuracy = Some(metrics.accuracy);
    record.val_f1_macro = Some(metrics.macro_avg.f1);
    record.val_f1_weighted = Some(metrics.weighted_avg.f1);
    schedule.observe_val_loss(evaluation.loss);
    let current = metric_score(config.validation.metric, evaluation.loss, &metrics);
    let improved = state.best_score.is_none_or(|best| current > best + t.min_delta);
    if improved {
        state.best_score = Some(current);
        state.best_epoch = Some(epoch);
        state.epochs_without_improvement = 0;
        *best_weights = Some(eval_model.snapshot());
        if config.validation.save_best_model {
            eval_model.save(&session.folder.best_model())?;
        }
    } else {
        state.epochs_without_improvement += 1;
    }
    tracing::info!(
        "epoch {epoch}/{}: train loss {:.4} acc {:.4} | val loss {:.4} acc {:.4} f1_w {:.4}{} | lr {:.2e} | {:.1} img/s, {:.1} s",
        t.epochs,
        record.train_loss,
        record.train_accuracy,
        evaluation.loss,
        metrics.accuracy,
        metrics.weighted_avg.f1,
        if improved { " (best)" } else { "" },
        record.lr_head,
        record.images_per_second,
        record.seconds
    );
    if t.early_stopping && state.epochs_without_improvement >= t.patience {
        tracing::info!("early stopping: no {} improvement for {} validations", config.validation.metric, t.patience);
        state.stopped_early = true;
    }
    Ok(())
}
