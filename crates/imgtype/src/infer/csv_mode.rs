//! `test --csv-path C --output-path O`: the images of any CSV with an image column. With
//! the label column (`data.target_column`, or `true_class`) present, adds `true_class` and
//! `correct`. Reads, predicts and writes batch by batch, so memory stays flat; every input
//! row gives one output row (an unreadable image gives `ERROR` and the reason in `error`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::columns::{correct_value, prediction_header, prediction_values, timing_and_error};
use super::shards::{shard_file_name, Shard};
use super::timing::TimingSummary;
use super::{Prediction, Predictor};
use crate::data::ImageRecord;

#[derive(Debug, Serialize)]
pub struct CsvReport {
    pub output_path: PathBuf,
    pub rows: usize,
    pub failed: usize,
    pub timing: TimingSummary,
}

/// Where the input's columns are, and so which columns the output has.
struct InputColumns {
    path: usize,
    label: Option<usize>,
    product: Option<usize>,
}

impl InputColumns {
    fn find(headers: &csv::StringRecord, image_column: &str, target: &str, csv_path: &Path) -> Result<Self> {
        let Some(path) = headers.iter().position(|h| h == image_column) else {
            bail!(
                "{}: no `{image_column}` column (columns: {}); name the path column with --image-column",
                csv_path.display(),
                headers.iter().collect::<Vec<_>>().join(", ")
            );
        };
        let label = headers.iter().position(|h| h == target).or_else(|| headers.iter().position(|h| h == "true_class"));
        let product = headers.iter().position(|h| h == "product_id");
        Ok(Self { path, label, product })
    }

    fn record(&self, row: &csv::StringRecord) -> ImageRecord {
        ImageRecord {
            product_id: self.product.and_then(|c| row.get(c)).unwrap_or("").to_string(),
            image_path: row.get(self.path).unwrap_or("").to_string(),
            image_type: self.label.and_then(|c| row.get(c)).unwrap_or("").to_string(),
        }
    }

    fn output_header(&self, class_names: &[String]) -> Vec<String> {
        let mut header = vec!["image_path".to_string()];
        if self.product.is_some() {
            header.push("product_id".into());
        }
        if self.label.is_some() {
            header.push("true_class".into());
        }
        header.extend(prediction_header(class_names));
        if self.label.is_some() {
            header.push("correct".into());
        }
        header.extend(["inference_ms", "error"].map(String::from));
        header
    }

    fn output_row(
        &self,
        predictor: &Predictor,
        record: &ImageRecord,
        outcome: &Result<Prediction, String>,
        ms: f64,
    ) -> Vec<String> {
        let mut values = vec![record.image_path.clone()];
        if self.product.is_some() {
            values.push(record.product_id.clone());
        }
        if self.label.is_some() {
            values.push(record.image_type.clone());
        }
        values.extend(prediction_values(outcome, predictor));
        if self.label.is_some() {
            values.push(correct_value(outcome, &record.image_type));
        }
        values.extend(timing_and_error(outcome, ms));
        values
    }
}

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
    let columns = InputColumns::find(&headers, image_column, &predictor.config().data.target_column, csv_path)?;
    let output = shard_file_name(output_path, shard);
    let started = Instant::now();
    let mut per_image_ms = Vec::new();
    let (mut rows_seen, mut failed) = (0usize, 0usize);
    crate::fsutil::write_atomic_with(&output, |w| {
        let mut writer = csv::Writer::from_writer(w);
        writer.write_record(columns.output_header(predictor.class_names()))?;
        let mut predict_and_write = |chunk: &mut Vec<ImageRecord>, writer: &mut csv::Writer<_>| -> Result<()> {
            let (outcomes, ms) = predictor.predict_batch_timed(chunk);
            for (record, outcome) in chunk.iter().zip(&outcomes) {
                writer.write_record(columns.output_row(predictor, record, outcome, ms))?;
                per_image_ms.push(ms);
                failed += outcome.is_err() as usize;
            }
            chunk.clear();
            Ok(())
        };
        let mut chunk: Vec<ImageRecord> = Vec::with_capacity(predictor.batch_size);
        let mut progress = crate::progress::Progress::new("predict", 0, (predictor.batch_size * 10) as u64);
        for (index, row) in reader.records().enumerate() {
            let row = row.with_context(|| format!("{}: row {} is not valid CSV", csv_path.display(), index + 2))?;
            rows_seen += 1;
            if !shard.is_none_or(|s| s.includes(index)) {
                continue;
            }
            chunk.push(columns.record(&row));
            if chunk.len() == predictor.batch_size {
                predict_and_write(&mut chunk, &mut writer)?;
                progress.advance(predictor.batch_size as u64, "");
            }
        }
        if !chunk.is_empty() {
            let n = chunk.len() as u64;
            predict_and_write(&mut chunk, &mut writer)?;
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
