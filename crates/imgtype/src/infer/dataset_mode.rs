//! `test --model-path M`: every image of the train, validation and test splits. Writes
//! `inference_results.csv`, `wrong_{train,valid,test}.csv` and `.png`, `metrics.json` and
//! `timing.json` (with `.shard-K-of-N` in the names when sharded) into a new
//! `test_result/run_…/` that appears only when complete.

use std::fs::File;
use std::io::BufWriter;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;

use super::columns::DatasetColumns;
use super::prefetch::prefetched;
use super::shards::{shard_file_name, Shard};
use super::timing::TimingSummary;
use super::wrong_predictions::write_split_reports;
use super::LoadedBatch;
use super::Predictor;
use crate::data::{read_split_csv, ImageRecord, SplitName};
use crate::stop::{Outcome, StopFlag, Stopped};

#[derive(Debug, Serialize)]
pub struct DatasetReport {
    pub output_dir: PathBuf,
    pub accuracy_by_split: Vec<(String, f64)>,
    pub failed: usize,
    pub timing: TimingSummary,
}

/// Predicts every split; a raised `stop` ends it between batches, and nothing is left
/// behind (the results folder appears only when complete).
pub fn run_dataset(
    predictor: &Predictor,
    data_dir: &Path,
    output_root: &Path,
    shard: Option<Shard>,
    stop: &StopFlag,
) -> Result<Outcome<DatasetReport>> {
    let class_names = predictor.class_names().to_vec();
    let mut splits = Vec::new();
    for split in SplitName::ALL {
        splits.push((split, read_split_csv(&data_dir.join(split.file_name()), &class_names)?));
    }
    // Taken before predicting: a record names what was read, not what lies there afterwards.
    let made_from = match shard {
        Some(_) => {
            let files: Vec<PathBuf> = SplitName::ALL.iter().map(|split| data_dir.join(split.file_name())).collect();
            let inputs: Vec<String> =
                files.iter().map(|f| super::shards::file_fingerprint(f)).collect::<Result<_>>()?;
            Some(super::csv_mode::shard_made_from(predictor, &inputs.join(" "), "the split files")?)
        }
        None => None,
    };
    let staged = with_staged_run_dir(output_root, |dir| {
        let results_path = shard_file_name(&dir.join("inference_results.csv"), shard);
        let Some(timing) = predict_splits(predictor, &splits, &results_path, shard, stop)? else {
            return Ok(None);
        };
        timing.log();
        if let (Some(shard), Some(made_from)) = (shard, made_from.clone()) {
            let settings = super::csv_mode::shard_settings(predictor);
            shard.write_record(
                &results_path,
                made_from,
                settings,
                splits.iter().map(|(_, records)| records.len()).sum(),
            )?;
        }
        crate::fsutil::write_json_atomic(&shard_file_name(&dir.join("timing.json"), shard), &timing)?;
        let (accuracy, failed) = write_split_reports(dir, &results_path, shard, predictor.source())?;
        Ok(Some((accuracy, failed, timing)))
    })?;
    let Some((output_dir, (accuracy_by_split, failed, timing))) = staged else {
        let message = "interrupted; no results written (run it again from the start)";
        return Ok(Outcome::Stopped(Stopped::interrupted(None, message)));
    };
    tracing::info!("results in {}", output_dir.display());
    Ok(Outcome::Finished(DatasetReport { output_dir, accuracy_by_split, failed, timing }))
}

/// Creates `root/run_…` only when `fill` completes: it writes into a hidden staging folder
/// that is renamed at the end, or removed on error or when `fill` stops early (`None`).
/// The staging folder is locked while it fills, so the next run can tell one a killed `test`
/// left (and removes it) from one at work.
fn with_staged_run_dir<T>(root: &Path, fill: impl FnOnce(&Path) -> Result<Option<T>>) -> Result<Option<(PathBuf, T)>> {
    remove_abandoned_staging(root);
    let name = crate::rundir::run_name();
    let staging = root.join(format!(".{name}.partial"));
    let _lock = crate::fsutil::FolderLock::acquire(&staging, "predicting into it")?;
    match fill(&staging) {
        Ok(Some(value)) => {
            // Not part of the results; the folder is renamed at once (and just modified, so
            // no other `test` takes it for abandoned meanwhile).
            let _ = std::fs::remove_file(staging.join(crate::fsutil::LOCK_FILE));
            let final_dir = root.join(&name);
            std::fs::rename(&staging, &final_dir)
                .with_context(|| format!("cannot move results to {}", final_dir.display()))?;
            Ok(Some((final_dir, value)))
        }
        outcome => {
            let _ = std::fs::remove_dir_all(&staging);
            outcome.map(|_| None)
        }
    }
}

/// Removes the staging folders in `root` that no `test` holds (killed, or stopped by a second
/// signal) and that are over a minute old (not one being created, before its lock is taken):
/// only a folder named as `test` names them (`.run_YYYYMMDD_HHMMSS_<8 hex>.partial`) that holds
/// files alone, as `test` writes them; anything else is a user's.
fn remove_abandoned_staging(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let old = entry.metadata().ok().and_then(|m| m.modified().ok()).and_then(|t| t.elapsed().ok());
        let files_only = || {
            let mut inside = std::fs::read_dir(entry.path()).into_iter().flatten().flatten();
            inside.all(|f| f.file_type().is_ok_and(|t| t.is_file()))
        };
        let abandoned = name.strip_prefix('.').and_then(|n| n.strip_suffix(".partial")).is_some_and(is_run_name)
            && entry.file_type().is_ok_and(|t| t.is_dir())
            && old.is_some_and(|age| age.as_secs() > 60)
            && files_only();
        let Some(_lock) =
            abandoned.then(|| crate::fsutil::FolderLock::acquire(&entry.path(), "removing it").ok()).flatten()
        else {
            continue;
        };
        if std::fs::remove_dir_all(entry.path()).is_ok() {
            tracing::info!("removed {}, left by an interrupted `test`", entry.path().display());
        }
    }
}

/// `run_YYYYMMDD_HHMMSS_<8 hex>`, as [`crate::rundir::run_name`] names a folder.
fn is_run_name(name: &str) -> bool {
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    let parts: Vec<&str> = name.split('_').collect();
    matches!(parts.as_slice(), ["run", date, time, id]
        if digits(date, 8) && digits(time, 6) && id.len() == 8 && id.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Predicts this shard's rows of every split into `results_path`, batch by batch; the next
/// batch is decoded while the model works on this one. `None` when `stop` was raised.
fn predict_splits(
    predictor: &Predictor,
    splits: &[(SplitName, Vec<ImageRecord>)],
    results_path: &Path,
    shard: Option<Shard>,
    stop: &StopFlag,
) -> Result<Option<TimingSummary>> {
    let header = DatasetColumns::new(predictor.class_names()).header();
    let file = File::create(results_path).with_context(|| format!("cannot create {}", results_path.display()))?;
    let mut writer = csv::Writer::from_writer(BufWriter::new(file));
    writer.write_record(&header)?;
    let mut row_number = 0;
    let mine: Vec<(SplitName, Vec<&ImageRecord>)> = splits
        .iter()
        .map(|(split, records)| {
            let keep = |_: &&ImageRecord| {
                let keep = shard.is_none_or(|s| s.includes(row_number));
                row_number += 1;
                keep
            };
            (*split, records.iter().filter(keep).collect())
        })
        .collect();
    let started = Instant::now();
    let mut per_image_ms = Vec::new();
    let mut progress: Option<(SplitName, crate::progress::Progress)> = None;
    let produce = |send: &dyn Fn((SplitName, Vec<ImageRecord>, LoadedBatch)) -> bool| {
        for (split, records) in &mine {
            for chunk in records.chunks(predictor.batch_size()) {
                let owned = chunk.iter().map(|r| (*r).clone()).collect();
                if !send((*split, owned, predictor.load_batch(chunk))) {
                    return;
                }
            }
        }
    };
    let flow = prefetched(produce, |(split, chunk, loaded)| {
        if stop.is_raised() {
            return Ok(ControlFlow::Break(()));
        }
        if progress.as_ref().is_none_or(|(current, _)| *current != split) {
            if let Some((_, done)) = progress.take() {
                done.finish();
            }
            let total = mine.iter().find(|(s, _)| *s == split).map_or(0, |(_, r)| r.len());
            let bar =
                crate::progress::Progress::new(split.as_str(), total as u64, (predictor.batch_size() * 10) as u64);
            progress = Some((split, bar));
        }
        let outcomes = predictor.predict_loaded_timed(loaded);
        for (record, (outcome, ms)) in chunk.iter().zip(&outcomes) {
            if let Err(reason) = outcome {
                tracing::warn!("cannot predict {}: {reason}", record.image_path);
            }
            writer.write_record(DatasetColumns::row(predictor, split, record, outcome, *ms))?;
            per_image_ms.push(*ms);
        }
        progress.as_mut().expect("a bar per split").1.advance(chunk.len() as u64, "");
        Ok(ControlFlow::Continue(()))
    })?;
    if flow.is_break() {
        return Ok(None);
    }
    if let Some((_, done)) = progress {
        done.finish();
    }
    writer.flush()?;
    Ok(Some(TimingSummary::new(
        per_image_ms,
        started.elapsed().as_secs_f64(),
        predictor.load_seconds,
        predictor.engine_description(),
    )))
}
