//! `test --model-path M`: every image of the train, validation and test splits. Writes
//! `inference_results.csv`, `wrong_{train,valid,test}.csv` and `.png`, `metrics.json` and
//! `timing.json` (with `.shard-K-of-N` in the names when sharded) into a new
//! `test_result/run_…/` that appears only when complete.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::columns::{correct_value, prediction_header, prediction_values, timing_and_error};
use super::predictor::LoadedBatch;
use super::prefetch::prefetched;
use super::shards::{shard_file_name, Shard};
use super::timing::TimingSummary;
use super::wrong_predictions::write_split_reports;
use super::{Prediction, Predictor};
use crate::data::{read_split_csv, ImageRecord, SplitName};
use crate::stop::{Interrupted, StopFlag};

#[derive(Debug, Serialize)]
pub struct DatasetReport {
    pub output_dir: PathBuf,
    pub accuracy_by_split: Vec<(String, f64)>,
    pub failed: usize,
    pub timing: TimingSummary,
}

/// Predicts every split; a raised `stop` ends it between batches with an [`Interrupted`]
/// error, and nothing is left behind (the results folder appears only when complete).
pub fn run_dataset(
    predictor: &Predictor,
    data_dir: &Path,
    output_root: &Path,
    shard: Option<Shard>,
    stop: &StopFlag,
) -> Result<DatasetReport> {
    let class_names = predictor.class_names().to_vec();
    let mut splits = Vec::new();
    for split in SplitName::ALL {
        splits.push((split, read_split_csv(&data_dir.join(split.file_name()), &class_names)?));
    }
    let (output_dir, (accuracy_by_split, failed, timing)) = with_staged_run_dir(output_root, |dir| {
        let results_path = shard_file_name(&dir.join("inference_results.csv"), shard);
        let timing = predict_splits(predictor, &splits, &results_path, shard, stop)?;
        timing.log();
        crate::fsutil::write_json_atomic(&shard_file_name(&dir.join("timing.json"), shard), &timing)?;
        let (accuracy, failed) = write_split_reports(dir, &results_path, shard, predictor.source())?;
        Ok((accuracy, failed, timing))
    })?;
    tracing::info!("results in {}", output_dir.display());
    Ok(DatasetReport { output_dir, accuracy_by_split, failed, timing })
}

/// Creates `root/run_…` only when `fill` succeeds: it writes into a hidden staging
/// folder that is renamed at the end, or removed on error.
fn with_staged_run_dir<T>(root: &Path, fill: impl FnOnce(&Path) -> Result<T>) -> Result<(PathBuf, T)> {
    let name = crate::rundir::run_name();
    let staging = root.join(format!(".{name}.partial"));
    std::fs::create_dir_all(&staging).with_context(|| format!("cannot create {}", staging.display()))?;
    match fill(&staging) {
        Ok(value) => {
            let final_dir = root.join(&name);
            std::fs::rename(&staging, &final_dir)
                .with_context(|| format!("cannot move results to {}", final_dir.display()))?;
            Ok((final_dir, value))
        }
        Err(error) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(error)
        }
    }
}

/// Predicts this shard's rows of every split into `results_path`, batch by batch; the next
/// batch is decoded while the model works on this one.
fn predict_splits(
    predictor: &Predictor,
    splits: &[(SplitName, Vec<ImageRecord>)],
    results_path: &Path,
    shard: Option<Shard>,
    stop: &StopFlag,
) -> Result<TimingSummary> {
    let class_names = predictor.class_names();
    let mut header: Vec<String> = ["image_path", "split", "product_id", "true_class"].map(String::from).to_vec();
    header.extend(prediction_header(class_names));
    header.extend(["correct", "inference_ms", "error"].map(String::from));
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
    prefetched(produce, |(split, chunk, loaded)| {
        if stop.is_raised() {
            bail!(Interrupted("interrupted; no results written (run it again from the start)".into()));
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
            writer.write_record(dataset_row(predictor, split, record, outcome, *ms))?;
            per_image_ms.push(*ms);
        }
        progress.as_mut().expect("a bar per split").1.advance(chunk.len() as u64, "");
        Ok(())
    })?;
    if let Some((_, done)) = progress {
        done.finish();
    }
    writer.flush()?;
    Ok(TimingSummary::new(per_image_ms, started.elapsed().as_secs_f64(), predictor.load_seconds))
}

fn dataset_row(
    predictor: &Predictor,
    split: SplitName,
    record: &ImageRecord,
    outcome: &Result<Prediction, String>,
    ms: f64,
) -> Vec<String> {
    let mut values = vec![
        record.image_path.clone(),
        split.as_str().to_string(),
        record.product_id.clone(),
        record.image_type.clone(),
    ];
    values.extend(prediction_values(outcome, predictor));
    values.push(correct_value(outcome, &record.image_type));
    values.extend(timing_and_error(outcome, ms));
    values
}
