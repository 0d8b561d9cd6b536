//! Reports from a whole-dataset results CSV (one run's, or merged shards'): per split
//! `wrong_<split>.csv` (wrong predictions only, most confident first), a `wrong_<split>.png`
//! contact sheet of them, and `metrics.json`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::columns::DatasetColumns;
use super::shards::{shard_file_name, Shard};
use crate::data::{ImageSource, SplitName};
use crate::eval::compute_metrics;
use crate::report::contact_sheet::{self, SheetEntry};

/// Wrong predictions shown on a contact sheet, most confident first.
const CONTACT_SHEET_SIZE: usize = 24;

struct WrongRow {
    confidence: f64,
    values: Vec<String>,
}

#[derive(Default)]
struct SplitResults {
    y_true: Vec<usize>,
    y_pred: Vec<usize>,
    probabilities: Vec<Vec<f64>>,
    wrong: Vec<WrongRow>,
    failed: usize,
}

/// A results CSV read back: its columns and each split's outcomes.
struct Results {
    header: Vec<String>,
    columns: DatasetColumns,
    splits: BTreeMap<String, SplitResults>,
}

/// Writes the reports into `dir`; returns the accuracy per split and the number of images
/// that could not be predicted.
pub fn write_split_reports(
    dir: &Path,
    results_path: &Path,
    shard: Option<Shard>,
    source: &ImageSource,
) -> Result<(Vec<(String, f64)>, usize)> {
    let mut results = read_results(results_path)?;
    let mut accuracy = Vec::new();
    let mut failed_total = 0;
    let mut metrics_json = serde_json::Map::new();
    for split in SplitName::ALL {
        let mut entry = results.splits.remove(split.as_str()).expect("every split");
        let metrics =
            compute_metrics(&results.columns.class_names, &entry.y_true, &entry.y_pred, Some(&entry.probabilities));
        accuracy.push((split.as_str().to_string(), metrics.accuracy));
        failed_total += entry.failed;
        let mut value = metrics.to_json();
        value["failed_images"] = entry.failed.into();
        metrics_json.insert(split.as_str().to_string(), value);
        entry.wrong.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
        write_wrong_csv(&shard_file_name(&dir.join(format!("wrong_{}.csv", split.short())), shard), &results, &entry)?;
        let png = shard_file_name(&dir.join(format!("wrong_{}.png", split.short())), shard);
        write_contact_sheet(&png, split, &entry, source);
        tracing::info!("{}: {} images, accuracy {:.4}", split.as_str(), entry.y_true.len(), metrics.accuracy);
    }
    crate::fsutil::write_json_atomic(&shard_file_name(&dir.join("metrics.json"), shard), &metrics_json)?;
    Ok((accuracy, failed_total))
}

fn read_results(results_path: &Path) -> Result<Results> {
    let mut reader = crate::fsutil::csv_reader(results_path, &results_path.display().to_string())?;
    let header: Vec<String> = reader.headers()?.iter().map(String::from).collect();
    let columns = DatasetColumns::from_header(&header, results_path)?;
    let class_names = &columns.class_names;
    let mut splits: BTreeMap<String, SplitResults> =
        SplitName::ALL.iter().map(|s| (s.as_str().to_string(), SplitResults::default())).collect();
    for (index, row) in reader.records().enumerate() {
        let row = row.with_context(|| format!("{}: row {}", results_path.display(), index + 2))?;
        let split = row.get(DatasetColumns::SPLIT).unwrap_or("").to_string();
        let Some(entry) = splits.get_mut(&split) else {
            bail!("{}: row {}: unknown split `{split}`", results_path.display(), index + 2);
        };
        if !row.get(columns.error()).unwrap_or("").is_empty() {
            entry.failed += 1;
            continue;
        }
        let class_of = |column: usize| class_names.iter().position(|c| c == row.get(column).unwrap_or(""));
        let (Some(t), Some(p)) = (class_of(DatasetColumns::TRUE_CLASS), class_of(DatasetColumns::PREDICTED_CLASS))
        else {
            bail!("{}: row {}: class not among {:?}", results_path.display(), index + 2, class_names);
        };
        let number = |column: usize| -> Result<f64> {
            let text = row.get(column).unwrap_or("");
            match text.parse::<f64>() {
                Ok(value) if (0.0..=1.0).contains(&value) => Ok(value),
                _ => bail!(
                    "{}: row {}: `{}` is `{text}`, not a probability",
                    results_path.display(),
                    index + 2,
                    header.get(column).map_or("?", String::as_str)
                ),
            }
        };
        entry.y_true.push(t);
        entry.y_pred.push(p);
        entry
            .probabilities
            .push((0..class_names.len()).map(|c| number(columns.probability(c))).collect::<Result<_>>()?);
        if t != p {
            let confidence = number(DatasetColumns::CONFIDENCE)?;
            entry.wrong.push(WrongRow { confidence, values: row.iter().map(String::from).collect() });
        }
    }
    Ok(Results { header, columns, splits })
}

fn write_wrong_csv(path: &Path, results: &Results, entry: &SplitResults) -> Result<()> {
    crate::fsutil::write_atomic_with(path, |w| {
        let mut writer = csv::Writer::from_writer(w);
        writer.write_record(&results.header)?;
        for row in &entry.wrong {
            writer.write_record(&row.values)?;
        }
        writer.flush()?;
        Ok(())
    })
}

/// The most confident wrong predictions as thumbnails.
fn write_contact_sheet(png: &Path, split: SplitName, entry: &SplitResults, source: &ImageSource) {
    let sheet: Vec<SheetEntry> = entry
        .wrong
        .iter()
        .take(CONTACT_SHEET_SIZE)
        .map(|row| SheetEntry {
            image: crate::data::image::load_rgb(source, &row.values[DatasetColumns::IMAGE_PATH]).ok(),
            lines: vec![
                format!("true {}", row.values[DatasetColumns::TRUE_CLASS]),
                format!("pred {}", row.values[DatasetColumns::PREDICTED_CLASS]),
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
    crate::report::draw(&png.display().to_string(), || contact_sheet::write(png, &title, &sheet));
}
