//! The `test` modes that write files: the whole dataset (three splits) and a CSV of
//! images. Results are streamed to CSV as they are made, so memory stays flat over
//! large inputs; every input row gives one output row (an unreadable image gives
//! `ERROR` and the reason in `error`). `--shard K/N` predicts rows i with i mod N = K
//! and names its outputs `*.shard-K-of-N.*`; `merge_shards` interleaves them back into
//! what one unsharded run writes.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use super::contact_sheet::{self, SheetEntry};
use super::{Prediction, Predictor};
use crate::data::{read_split_csv, ImageRecord, ImageSource, SplitName};
use crate::eval::compute_metrics;

/// Wrong predictions shown on a contact sheet, most confident first.
const CONTACT_SHEET_SIZE: usize = 24;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl FromStr for Shard {
    type Err = anyhow::Error;

    /// `K/N` with 0 ≤ K < N (K as Kubernetes' JOB_COMPLETION_INDEX or a Slurm array index).
    fn from_str(text: &str) -> Result<Self> {
        let (k, n) = text.split_once('/').ok_or_else(|| anyhow!("shard `{text}` is not K/N"))?;
        let index: usize = k.trim().parse().map_err(|_| anyhow!("shard `{text}`: K is not a number"))?;
        let count: usize = n.trim().parse().map_err(|_| anyhow!("shard `{text}`: N is not a number"))?;
        if count == 0 || index >= count {
            bail!("shard `{text}`: need 0 <= K < N");
        }
        Ok(Shard { index, count })
    }
}

impl Shard {
    pub fn includes(&self, row: usize) -> bool {
        row % self.count == self.index
    }

    pub fn tag(&self) -> String {
        format!("shard-{}-of-{}", self.index, self.count)
    }
}

/// `dir/results.csv` → `dir/results.shard-K-of-N.csv` (unchanged without a shard).
pub fn shard_file_name(path: &Path, shard: Option<Shard>) -> PathBuf {
    let Some(shard) = shard else { return path.to_path_buf() };
    let stem = path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem}.{}.{}", shard.tag(), ext.to_string_lossy()),
        None => format!("{stem}.{}", shard.tag()),
    };
    path.with_file_name(name)
}

/// The shard a file name says it holds (`*.shard-K-of-N.*`).
pub fn shard_of_file(path: &Path) -> Option<Shard> {
    let name = path.file_name()?.to_string_lossy().to_string();
    let start = name.find(".shard-")? + ".shard-".len();
    let rest = &name[start..];
    let (k, rest) = rest.split_once("-of-")?;
    let n: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    format!("{k}/{n}").parse().ok()
}

fn prediction_header(class_names: &[String]) -> Vec<String> {
    let mut columns = vec!["predicted_class".to_string(), "confidence".to_string(), "low_confidence".to_string()];
    columns.extend(class_names.iter().map(|c| format!("prob_{c}")));
    columns.push("top_k".into());
    columns
}

/// `low_confidence` is true when the confidence is under `inference.confidence_threshold`.
fn prediction_values(outcome: &Result<Prediction, String>, classes: usize, threshold: f64) -> Vec<String> {
    match outcome {
        Ok(p) => {
            let mut values =
                vec![p.predicted_class.clone(), format!("{:.6}", p.confidence), (p.confidence < threshold).to_string()];
            values.extend(p.probabilities.iter().map(|v| format!("{v:.6}")));
            values.push(p.top_k.iter().map(|(c, v)| format!("{c}:{v:.4}")).collect::<Vec<_>>().join("|"));
            values
        }
        Err(_) => {
            let mut values = vec![super::api::ERROR_CLASS.to_string(), format!("{:.6}", 0.0), String::new()];
            values.extend(std::iter::repeat_n(String::new(), classes + 1));
            values
        }
    }
}

/// Loads and predicts one chunk; returns outcomes in order and the wall time per image.
fn predict_chunk(predictor: &Predictor, chunk: &[ImageRecord]) -> (Vec<Result<Prediction, String>>, f64) {
    let started = Instant::now();
    let outcomes = predictor.predict_records(&chunk.iter().collect::<Vec<_>>());
    for (record, outcome) in chunk.iter().zip(&outcomes) {
        if let Err(reason) = outcome {
            tracing::warn!("cannot predict {}: {reason}", record.image_path);
        }
    }
    (outcomes, started.elapsed().as_secs_f64() * 1000.0 / chunk.len().max(1) as f64)
}

/// Images per second and per-image latency of a run.
#[derive(Debug, Clone, Serialize)]
pub struct TimingSummary {
    pub images: usize,
    pub seconds: f64,
    pub images_per_second: f64,
    pub mean_ms_per_image: f64,
    pub p50_ms_per_image: f64,
    pub p95_ms_per_image: f64,
    pub model_load_seconds: f64,
}

impl TimingSummary {
    fn new(mut per_image_ms: Vec<f64>, seconds: f64, model_load_seconds: f64) -> Self {
        per_image_ms.sort_by(f64::total_cmp);
        let n = per_image_ms.len();
        let quantile = |q: f64| if n == 0 { 0.0 } else { per_image_ms[((n - 1) as f64 * q).round() as usize] };
        Self {
            images: n,
            seconds,
            images_per_second: n as f64 / seconds.max(1e-9),
            mean_ms_per_image: if n == 0 { 0.0 } else { per_image_ms.iter().sum::<f64>() / n as f64 },
            p50_ms_per_image: quantile(0.5),
            p95_ms_per_image: quantile(0.95),
            model_load_seconds,
        }
    }

    fn log(&self) {
        tracing::info!(
            "{} images in {:.1} s ({:.1} images/s); per image: mean {:.2} ms, p50 {:.2} ms, p95 {:.2} ms; model load {:.2} s",
            self.images,
            self.seconds,
            self.images_per_second,
            self.mean_ms_per_image,
            self.p50_ms_per_image,
            self.p95_ms_per_image,
            self.model_load_seconds
        );
    }
}

#[derive(Debug, Serialize)]
pub struct DatasetReport {
    pub output_dir: PathBuf,
    pub accuracy_by_split: Vec<(String, f64)>,
    pub failed: usize,
    pub timing: TimingSummary,
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

/// `test --model-path M`: every image of the train, validation and test splits.
/// Writes `inference_results.csv`, `wrong_{train,valid,test}.csv` and `.png`,
/// `metrics.json` and `timing.json` (with `.shard-K-of-N` in the names when sharded).
pub fn run_dataset(
    predictor: &Predictor,
    data_dir: &Path,
    output_root: &Path,
    shard: Option<Shard>,
) -> Result<DatasetReport> {
    let class_names = predictor.class_names().to_vec();
    let mut splits = Vec::new();
    for split in SplitName::ALL {
        splits.push((split, read_split_csv(&data_dir.join(split.file_name()), &class_names)?));
    }
    let threshold = predictor.config().inference.confidence_threshold;
    let (output_dir, (accuracy_by_split, failed, timing)) = with_staged_run_dir(output_root, |dir| {
        let results_path = shard_file_name(&dir.join("inference_results.csv"), shard);
        let mut header: Vec<String> = ["image_path", "split", "product_id", "true_class"].map(String::from).to_vec();
        header.extend(prediction_header(&class_names));
        header.extend(["correct", "inference_ms", "error"].map(String::from));
        let file = File::create(&results_path).with_context(|| format!("cannot create {}", results_path.display()))?;
        let mut writer = csv::Writer::from_writer(BufWriter::new(file));
        writer.write_record(&header)?;
        let started = Instant::now();
        let mut per_image_ms = Vec::new();
        let mut row_number = 0;
        for (split, records) in &splits {
            let mine: Vec<&ImageRecord> = records
                .iter()
                .filter(|_| {
                    let keep = shard.is_none_or(|s| s.includes(row_number));
                    row_number += 1;
                    keep
                })
                .collect();
            let mut progress =
                crate::progress::Progress::new(split.as_str(), mine.len() as u64, (predictor.batch_size * 10) as u64);
            for chunk in mine.chunks(predictor.batch_size) {
                let chunk: Vec<ImageRecord> = chunk.iter().map(|r| (*r).clone()).collect();
                let (outcomes, ms) = predict_chunk(predictor, &chunk);
                for (record, outcome) in chunk.iter().zip(&outcomes) {
                    let mut values = vec![
                        record.image_path.clone(),
                        split.as_str().to_string(),
                        record.product_id.clone(),
                        record.image_type.clone(),
                    ];
                    values.extend(prediction_values(outcome, class_names.len(), threshold));
                    let correct = match outcome {
                        Ok(p) => (p.predicted_class == record.image_type).to_string(),
                        Err(_) => String::new(),
                    };
                    values.push(correct);
                    values.push(format!("{ms:.3}"));
                    values.push(outcome.as_ref().err().cloned().unwrap_or_default());
                    writer.write_record(&values)?;
                    per_image_ms.push(ms);
                }
                progress.advance(chunk.len() as u64, "");
            }
            progress.finish();
        }
        writer.flush()?;
        drop(writer);
        let timing = TimingSummary::new(per_image_ms, started.elapsed().as_secs_f64(), predictor.load_seconds);
        timing.log();
        crate::fsutil::write_json_atomic(&shard_file_name(&dir.join("timing.json"), shard), &timing)?;
        let (accuracy, failed) = write_split_reports(dir, &results_path, shard, predictor.source())?;
        Ok((accuracy, failed, timing))
    })?;
    tracing::info!("results in {}", output_dir.display());
    Ok(DatasetReport { output_dir, accuracy_by_split, failed, timing })
}

struct WrongRow {
    confidence: f64,
    values: Vec<String>,
}

/// From a whole-dataset results CSV: `wrong_<split>.csv` (wrong only, most confident
/// first), `wrong_<split>.png` contact sheets and `metrics.json`. Returns the accuracy
/// per split and the number of images that could not be predicted.
pub fn write_split_reports(
    dir: &Path,
    results_path: &Path,
    shard: Option<Shard>,
    source: &ImageSource,
) -> Result<(Vec<(String, f64)>, usize)> {
    let mut reader =
        csv::Reader::from_path(results_path).with_context(|| format!("cannot read {}", results_path.display()))?;
    let header: Vec<String> = reader.headers()?.iter().map(String::from).collect();
    let column = |name: &str| {
        header.iter().position(|h| h == name).ok_or_else(|| anyhow!("{}: no `{name}` column", results_path.display()))
    };
    let (path_col, split_col, true_col, pred_col, conf_col, error_col) = (
        column("image_path")?,
        column("split")?,
        column("true_class")?,
        column("predicted_class")?,
        column("confidence")?,
        column("error")?,
    );
    let prob_cols: Vec<(usize, String)> =
        header.iter().enumerate().filter_map(|(i, h)| h.strip_prefix("prob_").map(|c| (i, c.to_string()))).collect();
    let class_names: Vec<String> = prob_cols.iter().map(|(_, c)| c.clone()).collect();
    struct SplitData {
        y_true: Vec<usize>,
        y_pred: Vec<usize>,
        probabilities: Vec<Vec<f64>>,
        wrong: Vec<WrongRow>,
        failed: usize,
    }
    let mut data: BTreeMap<String, SplitData> = SplitName::ALL
        .iter()
        .map(|s| {
            let empty = SplitData { y_true: vec![], y_pred: vec![], probabilities: vec![], wrong: vec![], failed: 0 };
            (s.as_str().to_string(), empty)
        })
        .collect();
    for (index, row) in reader.records().enumerate() {
        let row = row.with_context(|| format!("{}: row {}", results_path.display(), index + 2))?;
        let split = row.get(split_col).unwrap_or("").to_string();
        let Some(entry) = data.get_mut(&split) else {
            bail!("{}: row {}: unknown split `{split}`", results_path.display(), index + 2);
        };
        if !row.get(error_col).unwrap_or("").is_empty() {
            entry.failed += 1;
            continue;
        }
        let class_of = |name: &str| class_names.iter().position(|c| c == name);
        let (Some(t), Some(p)) = (class_of(row.get(true_col).unwrap_or("")), class_of(row.get(pred_col).unwrap_or("")))
        else {
            bail!("{}: row {}: class not among {:?}", results_path.display(), index + 2, class_names);
        };
        entry.y_true.push(t);
        entry.y_pred.push(p);
        entry
            .probabilities
            .push(prob_cols.iter().map(|(i, _)| row.get(*i).unwrap_or("0").parse().unwrap_or(0.0)).collect());
        if t != p {
            let confidence = row.get(conf_col).unwrap_or("0").parse().unwrap_or(0.0);
            entry.wrong.push(WrongRow { confidence, values: row.iter().map(String::from).collect() });
        }
    }
    let mut accuracy = Vec::new();
    let mut failed_total = 0;
    let mut metrics_json = serde_json::Map::new();
    for split in SplitName::ALL {
        let entry = data.get_mut(split.as_str()).expect("every split");
        let metrics = compute_metrics(&class_names, &entry.y_true, &entry.y_pred, Some(&entry.probabilities));
        accuracy.push((split.as_str().to_string(), metrics.accuracy));
        failed_total += entry.failed;
        let mut value = serde_json::to_value(&metrics)?;
        value["failed_images"] = entry.failed.into();
        metrics_json.insert(split.as_str().to_string(), value);
        entry.wrong.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
        let base = dir.join(format!("wrong_{}.csv", split.short()));
        crate::fsutil::write_atomic_with(&shard_file_name(&base, shard), |w| {
            let mut writer = csv::Writer::from_writer(w);
            writer.write_record(&header)?;
            for row in &entry.wrong {
                writer.write_record(&row.values)?;
            }
            writer.flush()?;
            Ok(())
        })?;
        let sheet: Vec<SheetEntry> = entry
            .wrong
            .iter()
            .take(CONTACT_SHEET_SIZE)
            .map(|row| SheetEntry {
                image: crate::data::image::load_rgb(source, &row.values[path_col]).ok(),
                lines: vec![
                    format!("true {}", row.values[true_col]),
                    format!("pred {}", row.values[pred_col]),
                    format!("conf {:.3}", row.confidence),
                ],
            })
            .collect();
        let title = format!(
            "{} split: {} wrong of {}, most confident first",
            split.as_str(),
            entry.wrong.len(),
            entry.y_true.len()
        );
        let png = shard_file_name(&dir.join(format!("wrong_{}.png", split.short())), shard);
        // A picture must never fail a run.
        if let Err(e) = contact_sheet::write(&png, &title, &sheet) {
            tracing::warn!("cannot draw {}: {e:#}", png.display());
        }
        tracing::info!("{}: {} images, accuracy {:.4}", split.as_str(), entry.y_true.len(), metrics.accuracy);
    }
    crate::fsutil::write_json_atomic(&shard_file_name(&dir.join("metrics.json"), shard), &metrics_json)?;
    Ok((accuracy, failed_total))
}

#[derive(Debug, Serialize)]
pub struct CsvReport {
    pub output_path: PathBuf,
    pub rows: usize,
    pub failed: usize,
    pub timing: TimingSummary,
}

/// `test --csv-path C --output-path O`: the images of any CSV with an image column.
/// With the label column (`data.target_column`, or `true_class`) present, adds
/// `true_class` and `correct`. Reads, predicts and writes batch by batch.
pub fn run_csv(
    predictor: &Predictor,
    csv_path: &Path,
    image_column: &str,
    output_path: &Path,
    shard: Option<Shard>,
) -> Result<CsvReport> {
    let mut reader =
        csv::Reader::from_path(csv_path).with_context(|| format!("cannot open CSV {}", csv_path.display()))?;
    let headers =
        reader.headers().with_context(|| format!("{}: cannot read the header row", csv_path.display()))?.clone();
    let Some(path_col) = headers.iter().position(|h| h == image_column) else {
        bail!(
            "{}: no `{image_column}` column (columns: {}); name the path column with --image-column",
            csv_path.display(),
            headers.iter().collect::<Vec<_>>().join(", ")
        );
    };
    let target = &predictor.config().data.target_column;
    let label_col = headers.iter().position(|h| h == target).or_else(|| headers.iter().position(|h| h == "true_class"));
    let product_col = headers.iter().position(|h| h == "product_id");
    let class_names = predictor.class_names().to_vec();
    let mut header = vec!["image_path".to_string()];
    if product_col.is_some() {
        header.push("product_id".into());
    }
    if label_col.is_some() {
        header.push("true_class".into());
    }
    header.extend(prediction_header(&class_names));
    if label_col.is_some() {
        header.push("correct".into());
    }
    header.extend(["inference_ms", "error"].map(String::from));

    let output = shard_file_name(output_path, shard);
    let threshold = predictor.config().inference.confidence_threshold;
    let started = Instant::now();
    let mut per_image_ms = Vec::new();
    let (mut rows_seen, mut failed) = (0usize, 0usize);
    crate::fsutil::write_atomic_with(&output, |w| {
        let mut writer = csv::Writer::from_writer(w);
        writer.write_record(&header)?;
        let mut chunk: Vec<ImageRecord> = Vec::with_capacity(predictor.batch_size);
        let mut flush = |chunk: &mut Vec<ImageRecord>, writer: &mut csv::Writer<_>| -> Result<()> {
            let (outcomes, ms) = predict_chunk(predictor, chunk);
            for (record, outcome) in chunk.iter().zip(&outcomes) {
                let mut values = vec![record.image_path.clone()];
                if product_col.is_some() {
                    values.push(record.product_id.clone());
                }
                if label_col.is_some() {
                    values.push(record.image_type.clone());
                }
                values.extend(prediction_values(outcome, class_names.len(), threshold));
                if label_col.is_some() {
                    values.push(match outcome {
                        Ok(p) => (p.predicted_class == record.image_type).to_string(),
                        Err(_) => String::new(),
                    });
                }
                values.push(format!("{ms:.3}"));
                values.push(outcome.as_ref().err().cloned().unwrap_or_default());
                writer.write_record(&values)?;
                per_image_ms.push(ms);
                failed += outcome.is_err() as usize;
            }
            chunk.clear();
            Ok(())
        };
        let mut progress = crate::progress::Progress::new("predict", 0, (predictor.batch_size * 10) as u64);
        for (index, row) in reader.records().enumerate() {
            let row = row.with_context(|| format!("{}: row {} is not valid CSV", csv_path.display(), index + 2))?;
            rows_seen += 1;
            if !shard.is_none_or(|s| s.includes(index)) {
                continue;
            }
            chunk.push(ImageRecord {
                product_id: product_col.and_then(|c| row.get(c)).unwrap_or("").to_string(),
                image_path: row.get(path_col).unwrap_or("").to_string(),
                image_type: label_col.and_then(|c| row.get(c)).unwrap_or("").to_string(),
            });
            if chunk.len() == predictor.batch_size {
                flush(&mut chunk, &mut writer)?;
                progress.advance(predictor.batch_size as u64, "");
            }
        }
        if !chunk.is_empty() {
            let n = chunk.len() as u64;
            flush(&mut chunk, &mut writer)?;
            progress.advance(n, "");
        }
        progress.finish();
        if rows_seen == 0 {
            bail!("{}: the CSV has a header but no rows", csv_path.display());
        }
        writer.flush()?;
        Ok(())
    })?;
    let timing = TimingSummary::new(per_image_ms, started.elapsed().as_secs_f64(), predictor.load_seconds);
    timing.log();
    if failed > 0 {
        tracing::warn!("{failed} image(s) could not be predicted (ERROR rows, reason in the `error` column)");
    }
    Ok(CsvReport { output_path: output, rows: timing.images, failed, timing })
}

/// Interleaves `*.shard-K-of-N.*` files (all K of one N) into `output`: the rows in the
/// order one unsharded run writes them. For whole-dataset results (a `split` column),
/// the wrong-prediction CSVs and contact sheets and `metrics.json` are written beside it.
pub fn merge_shards(inputs: &[PathBuf], output: &Path, source: &ImageSource) -> Result<usize> {
    if inputs.is_empty() {
        bail!("no shard files to merge");
    }
    let mut shards: Vec<(Shard, &PathBuf)> = Vec::new();
    for path in inputs {
        let shard = shard_of_file(path)
            .ok_or_else(|| anyhow!("{}: name does not say its shard (expected *.shard-K-of-N.*)", path.display()))?;
        shards.push((shard, path));
    }
    let count = shards[0].0.count;
    shards.sort_by_key(|(s, _)| s.index);
    for (shard, path) in &shards {
        if shard.count != count {
            bail!("{} is one of {} shards, the others of {count}", path.display(), shard.count);
        }
    }
    for pair in shards.windows(2) {
        if pair[0].0.index == pair[1].0.index {
            bail!(
                "shard {} of {count} is given twice ({}, {})",
                pair[0].0.index,
                pair[0].1.display(),
                pair[1].1.display()
            );
        }
    }
    let missing: Vec<String> =
        (0..count).filter(|k| !shards.iter().any(|(s, _)| s.index == *k)).map(|k| k.to_string()).collect();
    if !missing.is_empty() {
        bail!("shard {} of {count} is missing", missing.join(", "));
    }
    let mut readers = Vec::new();
    let mut header: Option<csv::StringRecord> = None;
    for (_, path) in &shards {
        let mut reader = csv::Reader::from_path(path).with_context(|| format!("cannot open {}", path.display()))?;
        let this = reader.headers()?.clone();
        match &header {
            Some(h) if *h != this => bail!("{}: columns differ from the other shards", path.display()),
            _ => header = Some(this),
        }
        readers.push((reader.into_records(), *path));
    }
    let header = header.expect("at least one shard");
    let mut written = 0;
    crate::fsutil::write_atomic_with(output, |w| {
        let mut writer = csv::Writer::from_writer(w);
        writer.write_record(&header)?;
        loop {
            let (records, path) = &mut readers[written % count];
            match records.next() {
                Some(row) => {
                    writer.write_record(&row.with_context(|| format!("{}: bad row", path.display()))?)?;
                    written += 1;
                }
                None => break,
            }
        }
        for (records, path) in &mut readers {
            if records.next().is_some() {
                bail!(
                    "{} has more rows than its place in the interleaving allows (shards of different runs?)",
                    path.display()
                );
            }
        }
        writer.flush()?;
        Ok(())
    })?;
    if header.iter().any(|h| h == "split") {
        let dir = output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        write_split_reports(dir, output, None, source)?;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_parsing_and_names() {
        let shard: Shard = "2/5".parse().unwrap();
        assert_eq!(shard, Shard { index: 2, count: 5 });
        assert!(shard.includes(7) && !shard.includes(8));
        for bad in ["5/5", "1", "a/2", "0/0"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        let name = shard_file_name(Path::new("out/preds.csv"), Some(shard));
        assert_eq!(name, Path::new("out/preds.shard-2-of-5.csv"));
        assert_eq!(shard_of_file(&name), Some(shard));
        assert_eq!(shard_file_name(Path::new("x.csv"), None), Path::new("x.csv"));
    }

    #[test]
    fn timing_percentiles() {
        let t = TimingSummary::new((1..=100).map(f64::from).collect(), 2.0, 0.5);
        assert_eq!(t.images, 100);
        assert_eq!(t.p50_ms_per_image, 51.0);
        assert_eq!(t.p95_ms_per_image, 95.0);
        assert!((t.images_per_second - 50.0).abs() < 1e-9);
    }
}
