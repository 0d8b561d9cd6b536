//! `test --csv-path C --output-path O`: the images of any CSV with an image column. With
//! the label column (`data.target_column`, or `true_class`) present, adds `true_class` and
//! `correct`. Every input row gives one output row, in order: an image that cannot be read,
//! and an input row that is malformed (wrong field count, a path that is not UTF-8), give
//! an `ERROR` row with the reason.
//!
//! Rows are written batch by batch to `O.partial` (so memory stays flat), which is renamed
//! to `O` once complete. A run that stops early (Ctrl-C, a kill, a full disk) leaves the
//! rows done so far in `O.partial`; the same command run again checks that they belong to
//! this input and continues after them (`csv_partial.rs`). The input is read by
//! `data/csv_records.rs`; this file is the batch loop.

use std::fs::File;
use std::io::BufReader;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use csv::ByteRecord;
use serde::Serialize;

use super::columns::{correct_value, prediction_header, prediction_values, timing_and_error};
use super::prefetch::prefetched;
use super::shards::{self, shard_file_name, Shard};
use super::timing::TimingSummary;
use super::LoadedBatch;
use super::{Prediction, Predictor};
use crate::data::csv_records::{InputRecord, RecordReader};
use crate::data::ImageRecord;
use crate::stop::{Outcome, StopFlag, Stopped};
use imgtype_dataset::csv_partial::{partial_paths, EarlierRows, MadeWith, PartialOutput};

type InputReader = RecordReader<BufReader<std::io::Take<File>>>;

/// What to predict and where to write it.
#[derive(Debug, Clone)]
pub struct CsvRequest<'a> {
    pub csv_path: &'a Path,
    /// The column holding image paths.
    pub image_column: &'a str,
    pub output_path: &'a Path,
    pub shard: Option<Shard>,
}

#[derive(Debug, Serialize)]
pub struct CsvReport {
    pub output_path: PathBuf,
    /// Output rows in all, including those a previous, interrupted run wrote.
    pub rows: usize,
    /// Rows taken over from the `.partial` file of an interrupted run.
    pub resumed_rows: usize,
    /// ERROR rows: unreadable images and malformed input rows.
    pub failed: usize,
    pub timing: TimingSummary,
}

/// Predicts every row of the request's CSV into its output file; a raised `stop` ends it
/// between batches, its rows kept in the `.partial` file for the same command to continue.
pub fn run_csv(predictor: &Predictor, request: &CsvRequest, stop: &StopFlag) -> Result<Outcome<CsvReport>> {
    let csv_path = request.csv_path;
    let named = shard_file_name(request.output_path, request.shard);
    match request.shard {
        Some(shard) => shards::check_shard_name(&named, shard)?,
        None => shards::check_not_a_record(&named)?,
    }
    let inputs: Vec<&Path> = [csv_path].into_iter().chain(predictor.model_file.as_deref()).collect();
    let output = crate::fsutil::check_output_file(&named, &inputs)?;
    crate::fsutil::check_replaceable(&output, crate::fsutil::Replaceable::PredictionsCsv)?;
    let partial_path = partial_paths(&output).0;
    crate::fsutil::check_output_target(&partial_path, &inputs)?;
    let _lock = crate::fsutil::OutputLock::acquire(&output, "writing to it")?;
    let open = || -> Result<InputReader> {
        let label = format!("CSV {}", csv_path.display());
        let file = crate::fsutil::open_capped(csv_path, &label, crate::fsutil::STREAM_FILE_CAP)?;
        Ok(RecordReader::new(BufReader::new(file), csv_path.display().to_string()))
    };
    let mut reader = open()?;
    let headers = reader.header().with_context(|| format!("{}: cannot read the header row", csv_path.display()))?;
    let Some(headers) = headers.filter(|h| !h.is_empty() && !h.iter().all(|h| h.is_empty())) else {
        bail!("{}: the file is empty (no header row)", csv_path.display());
    };
    let columns =
        InputColumns::find(&headers, request.image_column, &predictor.trained_with().data.target_column, csv_path)?;
    let header = columns.output_header(predictor.class_names());
    let (settings, made_from) = what_it_is_made_from(predictor, request)?;
    let made_with =
        MadeWith { model: &predictor.model_identity, settings: &settings, class_names: predictor.class_names() };
    let earlier = EarlierRows::read(&output, &header, &made_with)?;
    let (shard_rows, input_rows) = first_pass(&mut reader, &columns, request.shard, &earlier)?;
    if input_rows == 0 {
        bail!("{}: the CSV has a header but no rows", csv_path.display());
    }
    let resumed_rows = earlier.paths.len();
    let mut partial = PartialOutput::open(&output, &header, &earlier, &made_with)?;
    if resumed_rows > 0 {
        tracing::info!("continuing {}: {resumed_rows} of {shard_rows} rows were done before", partial.path.display());
    }
    let mut run = CsvRun { predictor, columns: &columns, partial: &mut partial, per_image_ms: Vec::new(), failed: 0 };
    let started = Instant::now();
    let mut rows_again = open()?;
    rows_again.header()?;
    let outcome = run.predict_rows(rows_again, request.shard, shard_rows, stop);
    let (per_image_ms, failed) = (std::mem::take(&mut run.per_image_ms), run.failed + earlier.failed);
    let kept = partial.written;
    match outcome {
        Err(error) => {
            return Err(error.context(format!("the {kept} rows done so far are kept in {}", partial.path.display())))
        }
        Ok(ControlFlow::Break(())) => {
            let message = format!(
                "interrupted after {kept} of {shard_rows} rows; they are in {}: run the same command again to continue",
                partial.path.display()
            );
            return Ok(Outcome::Stopped(Stopped::interrupted(Some(partial.path.clone()), message)));
        }
        Ok(ControlFlow::Continue(())) => {}
    }
    partial.finish(&output)?;
    if let (Some(shard), Some(made_from)) = (request.shard, made_from) {
        // Beside the name the merge is given (a link's, when the output is one), not its target.
        shard.write_record(&named, made_from, shard_settings(predictor), input_rows)?;
    }
    let timing = TimingSummary::new(
        per_image_ms,
        started.elapsed().as_secs_f64(),
        predictor.load_seconds,
        predictor.engine_description(),
    );
    timing.log();
    if failed > 0 {
        tracing::warn!("{failed} row(s) could not be predicted (ERROR rows, reason in the `error` column)");
    }
    Ok(Outcome::Finished(CsvReport { output_path: output, rows: shard_rows, resumed_rows, failed, timing }))
}

/// What a shard's rows come from, the same for every shard of one run: the model file's and the
/// input's bytes (`input`, their fingerprint; not their paths: an array's jobs may mount them
/// elsewhere) and `settings`, taken before predicting.
pub(super) fn shard_made_from(predictor: &Predictor, input: &str, settings: &str) -> Result<String> {
    let model = predictor.model_file.as_deref().map(shards::file_fingerprint).transpose()?;
    Ok(format!("model {}, input {input}, {settings}", model.as_deref().unwrap_or("in memory")))
}

/// What the rows of this request depend on, taken from the bytes about to be read: the settings
/// an interrupted run's rows must share to be taken over (so rows of another version of the
/// input, a label changed, are not), and for a shard what its record says it was made from.
fn what_it_is_made_from(predictor: &Predictor, request: &CsvRequest) -> Result<(String, Option<String>)> {
    let input = shards::file_fingerprint(request.csv_path)?;
    let column = format!("image column `{}`", request.image_column);
    let made_from = request.shard.map(|_| shard_made_from(predictor, &input, &column)).transpose()?;
    let base = predictor.source().base_path().map_or_else(|| "(none)".to_string(), |p| p.display().to_string());
    Ok((format!("{column}, image base {base}, input {input}"), made_from))
}

/// How a shard's images were read and scored; the shards of one run may differ here.
pub(super) fn shard_settings(predictor: &Predictor) -> String {
    let base = predictor.source().base_path().map_or_else(|| "(none)".to_string(), |p| p.display().to_string());
    format!("{}, image folder {base}", predictor.engine_description())
}

/// A first, cheap pass: counts this shard's data rows (the progress total) and the input's, and checks
/// that the rows an interrupted run finished are this input's first rows.
fn first_pass(
    reader: &mut InputReader,
    columns: &InputColumns,
    shard: Option<Shard>,
    earlier: &EarlierRows,
) -> Result<(usize, usize)> {
    let (mut index, mut rows) = (0, 0);
    while let Some(row) = reader.next()? {
        if shard.is_none_or(|s| s.includes(index)) {
            if rows < earlier.paths.len() {
                earlier.check_row(rows, row.record.get(columns.path).unwrap_or_default())?;
            }
            rows += 1;
        }
        index += 1;
    }
    if rows < earlier.paths.len() {
        bail!(
            "{} holds {} rows, more than this input has ({rows}); delete it to start over",
            earlier.path.display(),
            earlier.paths.len()
        );
    }
    Ok((rows, index))
}

/// Where the input's columns are, and so which columns the output has.
struct InputColumns {
    path: usize,
    label: Option<usize>,
    product: Option<usize>,
    /// Fields in the header row; a data row with another count is malformed.
    width: usize,
}

/// One data row of the input as read, with what is wrong with it, if anything.
struct InputRow {
    record: ImageRecord,
    /// The path cell's bytes as given (written back unchanged, UTF-8 or not).
    raw_path: Vec<u8>,
    problem: Option<String>,
}

impl InputColumns {
    fn find(headers: &ByteRecord, image_column: &str, target: &str, csv_path: &Path) -> Result<Self> {
        let names: Vec<String> = headers.iter().map(|h| String::from_utf8_lossy(h).into_owned()).collect();
        for name in [image_column, target, "true_class", "product_id"] {
            let at: Vec<String> =
                names.iter().enumerate().filter(|(_, h)| *h == name).map(|(i, _)| (i + 1).to_string()).collect();
            if at.len() > 1 {
                bail!(
                    "{}: the header has {} `{name}` columns (columns {}): which one is meant is unclear; rename the others",
                    csv_path.display(),
                    at.len(),
                    at.join(", ")
                );
            }
        }
        let position = |name: &str| names.iter().position(|h| h == name);
        let Some(path) = position(image_column) else {
            bail!(
                "{}: no `{image_column}` column (columns: {}); name the path column with --image-column",
                csv_path.display(),
                names.join(", ")
            );
        };
        let label = position(target).or_else(|| position("true_class"));
        Ok(Self { path, label, product: position("product_id"), width: names.len() })
    }

    fn parse(&self, input: &InputRecord) -> InputRow {
        let row = &input.record;
        let line = row.position().map(|p| p.line()).unwrap_or(0);
        let text = |column: Option<usize>| {
            column.and_then(|c| row.get(c)).map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default()
        };
        let raw_path = row.get(self.path).unwrap_or_default().to_vec();
        let problem = if let Some(problem) = &input.problem {
            Some(problem.clone())
        } else if row.len() != self.width {
            Some(format!("row {line} has {} fields, the header has {}", row.len(), self.width))
        } else if std::str::from_utf8(&raw_path).is_err() {
            Some(format!("row {line}: the image path is not valid UTF-8"))
        } else {
            None
        };
        let record = ImageRecord {
            product_id: text(self.product),
            image_path: text(Some(self.path)),
            image_type: text(self.label),
        };
        InputRow { record, raw_path, problem }
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
        row: &InputRow,
        outcome: &Result<Prediction, String>,
        ms: f64,
    ) -> Vec<Vec<u8>> {
        let record = &row.record;
        let mut values = vec![row.raw_path.clone()];
        if self.product.is_some() {
            values.push(record.product_id.clone().into_bytes());
        }
        if self.label.is_some() {
            values.push(record.image_type.clone().into_bytes());
        }
        let mut rest = prediction_values(outcome, predictor);
        if self.label.is_some() {
            rest.push(correct_value(outcome, &record.image_type, predictor.class_names()));
        }
        rest.extend(timing_and_error(outcome, ms));
        values.extend(rest.into_iter().map(String::into_bytes));
        values
    }
}

/// The state of one pass over the input.
struct CsvRun<'a> {
    predictor: &'a Predictor,
    columns: &'a InputColumns,
    partial: &'a mut PartialOutput,
    per_image_ms: Vec<f64>,
    failed: usize,
}

/// A batch of input rows with the images of its well-formed rows decoded.
struct RowBatch {
    rows: Vec<InputRow>,
    loaded: LoadedBatch,
}

impl CsvRun<'_> {
    /// Predicts this shard's rows after those already done, batch by batch; the next batch is
    /// read and decoded while the model works on this one. Breaks when `stop` is raised.
    fn predict_rows(
        &mut self,
        mut reader: InputReader,
        shard: Option<Shard>,
        shard_rows: usize,
        stop: &StopFlag,
    ) -> Result<ControlFlow<()>> {
        let (predictor, columns) = (self.predictor, self.columns);
        let batch_size = predictor.batch_size();
        let done = self.partial.written;
        let mut progress =
            crate::progress::Progress::new("predict", (shard_rows - done) as u64, (batch_size * 10) as u64);
        let mut finished = done;
        let produce = move |send: &dyn Fn(Result<RowBatch>) -> bool| {
            let load = |rows: Vec<InputRow>| {
                let readable: Vec<&ImageRecord> =
                    rows.iter().filter(|row| row.problem.is_none()).map(|row| &row.record).collect();
                let loaded = predictor.load_batch(&readable);
                RowBatch { rows, loaded }
            };
            let mut batch: Vec<InputRow> = Vec::with_capacity(batch_size);
            let (mut index, mut shard_index) = (0usize, 0usize);
            loop {
                let record = match reader.next() {
                    Ok(Some(record)) => record,
                    Ok(None) => break,
                    Err(e) => {
                        send(Err(e.context("cannot read the input CSV")));
                        return;
                    }
                };
                let mine = shard.is_none_or(|s| s.includes(index));
                index += 1;
                if !mine {
                    continue;
                }
                shard_index += 1;
                if shard_index <= done {
                    continue;
                }
                batch.push(columns.parse(&record));
                if batch.len() == batch_size && !send(Ok(load(std::mem::take(&mut batch)))) {
                    return;
                }
            }
            if !batch.is_empty() {
                send(Ok(load(batch)));
            }
        };
        let result = prefetched(produce, |batch| {
            let batch = batch?;
            let n = batch.rows.len();
            self.write_batch(batch)?;
            finished += n;
            progress.advance(n as u64, "");
            Ok(if stop.is_raised() && finished < shard_rows {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            })
        });
        progress.finish();
        result
    }

    /// Predicts the well-formed rows of `batch` and writes every row.
    fn write_batch(&mut self, batch: RowBatch) -> Result<()> {
        let mut outcomes = self.predictor.predict_loaded_timed(batch.loaded).into_iter();
        for row in &batch.rows {
            let (outcome, ms) = match &row.problem {
                Some(problem) => (Err(problem.clone()), 0.0),
                None => outcomes.next().expect("an outcome per readable row"),
            };
            if let Err(reason) = &outcome {
                tracing::warn!("cannot predict {}: {reason}", row.record.image_path);
            }
            self.failed += outcome.is_err() as usize;
            self.per_image_ms.push(ms);
            self.partial.write_row(&self.columns.output_row(self.predictor, row, &outcome, ms))?;
        }
        self.partial.flush()
    }
}
