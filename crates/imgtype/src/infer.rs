//! Inference: a loaded model file plus the decision rule (per-class thresholds, top-k),
//! and the `test` modes built on it (whole dataset, a CSV of images, one image).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use image::RgbImage;
use serde::Serialize;
use tch::{Device, Tensor};

use crate::config::Config;
use crate::data::batch::load_images;
use crate::data::image::to_normalized_batch;
use crate::data::{read_split_csv, ImageRecord, SplitName};
use crate::eval::compute_metrics;
use crate::model::ImageTypeClassifier;

/// A model file given directly, or a run folder holding `model/best_model.safetensors`.
pub fn resolve_model_path(path: &Path) -> Result<PathBuf> {
    if path.is_dir() {
        for candidate in ["model/best_model.safetensors", "model/last_model.safetensors", "best_model.safetensors"] {
            let file = path.join(candidate);
            if file.is_file() {
                return Ok(file);
            }
        }
        bail!("{}: run folder has no model/best_model.safetensors", path.display());
    }
    if !path.exists() {
        bail!("model file {} does not exist", path.display());
    }
    Ok(path.to_path_buf())
}

/// One image's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    pub class_index: usize,
    pub predicted_class: String,
    pub confidence: f64,
    pub probabilities: Vec<f64>,
    /// (class, probability), most probable first.
    pub top_k: Vec<(String, f64)>,
}

pub struct Predictor {
    model: ImageTypeClassifier,
    thresholds: Vec<f64>,
    top_k: usize,
    image_size: u32,
    base_image_path: Option<PathBuf>,
    pub batch_size: usize,
    pub workers: usize,
}

impl Predictor {
    pub fn load(model_path: &Path, device: Device) -> Result<Self> {
        let started = Instant::now();
        let path = resolve_model_path(model_path)?;
        let model = ImageTypeClassifier::load(&path, device)?;
        tracing::info!(
            "model {} loaded in {:.2} s; classes: {}",
            path.display(),
            started.elapsed().as_secs_f64(),
            model.class_names().join(", ")
        );
        Ok(Self::from_model(model))
    }

    pub fn from_model(model: ImageTypeClassifier) -> Self {
        let config = model.config().clone();
        let thresholds = model
            .class_names()
            .iter()
            .map(|name| config.inference.class_thresholds.get(name).copied().unwrap_or(0.0))
            .collect();
        Self {
            thresholds,
            top_k: config.inference.return_top_k.max(1),
            image_size: config.augmentation.image_size,
            base_image_path: config.data.base_image_path.clone(),
            batch_size: config.inference.batch_size,
            workers: config.system.num_workers.max(1),
            model,
        }
    }

    pub fn model(&self) -> &ImageTypeClassifier {
        &self.model
    }

    pub fn class_names(&self) -> &[String] {
        self.model.class_names()
    }

    pub fn config(&self) -> &Config {
        self.model.config()
    }

    pub fn set_base_image_path(&mut self, base: Option<PathBuf>) {
        if base.is_some() {
            self.base_image_path = base;
        }
    }

    pub fn base_image_path(&self) -> Option<&Path> {
        self.base_image_path.as_deref()
    }

    pub fn image_size(&self) -> u32 {
        self.image_size
    }

    /// Softmax probabilities for a normalised batch.
    pub fn probabilities(&self, batch: &Tensor) -> Vec<Vec<f64>> {
        let probs = tch::no_grad(|| {
            self.model.forward_t(&batch.to_device(self.model.device()), false).softmax(-1, tch::Kind::Float)
        });
        let k = self.class_names().len();
        let flat = Vec::<f32>::try_from(probs.to_device(Device::Cpu).flatten(0, -1)).expect("probabilities");
        flat.chunks(k).map(|row| row.iter().map(|&p| p as f64).collect()).collect()
    }

    /// Among classes whose probability passes its threshold, the most probable; else argmax.
    pub fn decide(&self, probabilities: &[f64]) -> Prediction {
        let argmax = |allowed: &dyn Fn(usize) -> bool| {
            (0..probabilities.len())
                .filter(|&c| allowed(c))
                .max_by(|&a, &b| probabilities[a].total_cmp(&probabilities[b]))
        };
        let class_index =
            argmax(&|c| probabilities[c] >= self.thresholds[c]).or_else(|| argmax(&|_| true)).expect("classes");
        let mut order: Vec<usize> = (0..probabilities.len()).collect();
        order.sort_by(|&a, &b| probabilities[b].total_cmp(&probabilities[a]));
        let names = self.class_names();
        Prediction {
            class_index,
            predicted_class: names[class_index].clone(),
            confidence: probabilities[class_index],
            probabilities: probabilities.to_vec(),
            top_k: order.iter().take(self.top_k).map(|&c| (names[c].clone(), probabilities[c])).collect(),
        }
    }

    /// Predictions for decoded, resized images.
    pub fn predict_images(&self, images: &[RgbImage]) -> Vec<Prediction> {
        if images.is_empty() {
            return Vec::new();
        }
        self.probabilities(&to_normalized_batch(images)).iter().map(|p| self.decide(p)).collect()
    }

    /// Predictions for image keys (resolved against `data.base_image_path`), in order;
    /// an image that cannot be read gives an error string instead.
    pub fn predict_keys(&self, keys: &[String]) -> Vec<Result<Prediction, String>> {
        let records: Vec<ImageRecord> = keys
            .iter()
            .map(|k| ImageRecord { product_id: String::new(), image_path: k.clone(), image_type: String::new() })
            .collect();
        let refs: Vec<&ImageRecord> = records.iter().collect();
        let loaded = load_images(&refs, self.base_image_path.as_deref(), self.image_size, self.workers);
        let good: Vec<RgbImage> = loaded.iter().filter_map(|r| r.as_ref().ok().cloned()).collect();
        let mut predictions = self.predict_images(&good).into_iter();
        loaded.into_iter().map(|r| r.map(|_| predictions.next().expect("one prediction per good image"))).collect()
    }
}

/// Columns shared by every result CSV: the prediction, every class probability, top-k.
fn prediction_columns(class_names: &[String]) -> Vec<String> {
    let mut columns = vec!["predicted_class".to_string(), "confidence".to_string()];
    columns.extend(class_names.iter().map(|c| format!("prob_{c}")));
    columns.push("top_k".into());
    columns
}

fn prediction_values(p: &Prediction) -> Vec<String> {
    let mut values = vec![p.predicted_class.clone(), format!("{:.6}", p.confidence)];
    values.extend(p.probabilities.iter().map(|v| format!("{v:.6}")));
    values.push(p.top_k.iter().map(|(c, v)| format!("{c}:{v:.4}")).collect::<Vec<_>>().join("|"));
    values
}

#[derive(Debug, Clone)]
struct ResultRow {
    split: SplitName,
    record: ImageRecord,
    prediction: Prediction,
    inference_ms: f64,
}

impl ResultRow {
    fn correct(&self) -> bool {
        self.prediction.predicted_class == self.record.image_type
    }

    fn values(&self) -> Vec<String> {
        let mut values = vec![
            self.record.image_path.clone(),
            self.split.as_str().to_string(),
            self.record.product_id.clone(),
            self.record.image_type.clone(),
        ];
        values.extend(prediction_values(&self.prediction));
        values.push(self.correct().to_string());
        values.push(format!("{:.3}", self.inference_ms));
        values
    }
}

fn result_header(class_names: &[String]) -> Vec<String> {
    let mut header: Vec<String> = ["image_path", "split", "product_id", "true_class"].map(String::from).to_vec();
    header.extend(prediction_columns(class_names));
    header.push("correct".into());
    header.push("inference_ms".into());
    header
}

/// Outcome of a whole-dataset run.
#[derive(Debug, Serialize)]
pub struct DatasetReport {
    pub output_dir: PathBuf,
    pub images: usize,
    pub skipped: usize,
    pub accuracy_by_split: Vec<(String, f64)>,
    pub mean_ms_per_image: f64,
}

/// Predicts `records` in batches; calls `emit` for each predicted row and returns the
/// skipped images. Timing is the batch's wall time shared over its images.
fn predict_records<F>(
    predictor: &Predictor,
    records: &[ImageRecord],
    label: &str,
    mut emit: F,
) -> Result<Vec<(String, String)>>
where
    F: FnMut(&ImageRecord, Prediction, f64) -> Result<()>,
{
    let mut skipped = Vec::new();
    let mut progress = crate::progress::Progress::new(label, records.len() as u64, predictor.batch_size as u64 * 10);
    for chunk in records.chunks(predictor.batch_size) {
        let started = Instant::now();
        let refs: Vec<&ImageRecord> = chunk.iter().collect();
        let loaded = load_images(&refs, predictor.base_image_path(), predictor.image_size(), predictor.workers);
        let mut good_records = Vec::new();
        let mut good_images = Vec::new();
        for (record, image) in chunk.iter().zip(loaded) {
            match image {
                Ok(image) => {
                    good_records.push(record);
                    good_images.push(image);
                }
                Err(reason) => {
                    tracing::warn!("skipping {}: {reason}", record.image_path);
                    skipped.push((record.image_path.clone(), reason));
                }
            }
        }
        let predictions = predictor.predict_images(&good_images);
        let per_image_ms = started.elapsed().as_secs_f64() * 1000.0 / chunk.len().max(1) as f64;
        for (record, prediction) in good_records.into_iter().zip(predictions) {
            emit(record, prediction, per_image_ms)?;
        }
        progress.advance(chunk.len() as u64, "");
    }
    progress.finish();
    Ok(skipped)
}

fn write_rows(path: &Path, header: &[String], rows: &[&ResultRow]) -> Result<()> {
    crate::fsutil::write_atomic_with(path, |w| {
        let mut csv = csv::Writer::from_writer(w);
        csv.write_record(header)?;
        for row in rows {
            csv.write_record(row.values())?;
        }
        csv.flush()?;
        Ok(())
    })
}

/// `test --model-path M`: every image of the three splits; writes `inference_results.csv`,
/// `wrong_{train,valid,test}.csv` (wrong only, most confident first) and `metrics.json`.
pub fn run_dataset(predictor: &Predictor, data_dir: &Path, output_root: &Path) -> Result<DatasetReport> {
    let class_names = predictor.class_names().to_vec();
    let mut splits = Vec::new();
    for split in SplitName::ALL {
        let path = data_dir.join(split.file_name());
        splits.push((split, read_split_csv(&path, &class_names)?));
    }
    let output_dir = crate::rundir::create_run_dir(output_root, &[])?;
    tracing::info!("writing results to {}", output_dir.display());
    let header = result_header(&class_names);
    let mut all_rows: Vec<ResultRow> = Vec::new();
    let mut skipped_total = 0;
    let mut accuracy_by_split = Vec::new();
    let mut metrics_json = serde_json::Map::new();
    let started = Instant::now();
    for (split, records) in &splits {
        let mut rows = Vec::new();
        let skipped = predict_records(predictor, records, split.as_str(), |record, prediction, ms| {
            rows.push(ResultRow { split: *split, record: record.clone(), prediction, inference_ms: ms });
            Ok(())
        })?;
        skipped_total += skipped.len();
        let y_true: Vec<usize> = rows
            .iter()
            .map(|r| class_names.iter().position(|c| *c == r.record.image_type).expect("known class"))
            .collect();
        let y_pred: Vec<usize> = rows.iter().map(|r| r.prediction.class_index).collect();
        let probs: Vec<Vec<f64>> = rows.iter().map(|r| r.prediction.probabilities.clone()).collect();
        let metrics = compute_metrics(&class_names, &y_true, &y_pred, Some(&probs));
        tracing::info!("{}: {} images, accuracy {:.4}", split.as_str(), rows.len(), metrics.accuracy);
        accuracy_by_split.push((split.as_str().to_string(), metrics.accuracy));
        metrics_json.insert(split.as_str().to_string(), serde_json::to_value(&metrics)?);
        let mut wrong: Vec<&ResultRow> = rows.iter().filter(|r| !r.correct()).collect();
        wrong.sort_by(|a, b| b.prediction.confidence.total_cmp(&a.prediction.confidence));
        write_rows(&output_dir.join(format!("wrong_{}.csv", split.short())), &header, &wrong)?;
        all_rows.extend(rows);
    }
    let elapsed = started.elapsed().as_secs_f64();
    write_rows(&output_dir.join("inference_results.csv"), &header, &all_rows.iter().collect::<Vec<_>>())?;
    crate::fsutil::write_json_atomic(&output_dir.join("metrics.json"), &metrics_json)?;
    let images = all_rows.len();
    let mean_ms = if images > 0 { all_rows.iter().map(|r| r.inference_ms).sum::<f64>() / images as f64 } else { 0.0 };
    tracing::info!(
        "{images} images in {elapsed:.1} s: {mean_ms:.2} ms per image ({:.1} images/s)",
        images as f64 / elapsed.max(1e-9)
    );
    Ok(DatasetReport { output_dir, images, skipped: skipped_total, accuracy_by_split, mean_ms_per_image: mean_ms })
}

/// `test --csv-path C --output-path O`: predicts the images of any CSV with an image column.
/// When the CSV has an `image_type` column, `true_class` and `correct` are added.
pub fn run_csv(predictor: &Predictor, csv_path: &Path, image_column: &str, output_path: &Path) -> Result<usize> {
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
    let label_col = headers.iter().position(|h| h == predictor.config().data.target_column);
    let product_col = headers.iter().position(|h| h == "product_id");
    let mut records = Vec::new();
    for (index, row) in reader.records().enumerate() {
        let row = row.with_context(|| format!("{}: row {} is not valid CSV", csv_path.display(), index + 2))?;
        records.push(ImageRecord {
            product_id: product_col.and_then(|c| row.get(c)).unwrap_or("").to_string(),
            image_path: row.get(path_col).unwrap_or("").to_string(),
            image_type: label_col.and_then(|c| row.get(c)).unwrap_or("").to_string(),
        });
    }
    if records.is_empty() {
        bail!("{}: the CSV has no rows", csv_path.display());
    }
    let class_names = predictor.class_names().to_vec();
    let mut header = vec!["image_path".to_string()];
    if product_col.is_some() {
        header.push("product_id".into());
    }
    if label_col.is_some() {
        header.push("true_class".into());
    }
    header.extend(prediction_columns(&class_names));
    if label_col.is_some() {
        header.push("correct".into());
    }
    header.push("inference_ms".into());
    let mut predicted = 0;
    crate::fsutil::write_atomic_with(output_path, |w| {
        let mut csv = csv::Writer::from_writer(w);
        csv.write_record(&header)?;
        let skipped = predict_records(predictor, &records, "predict", |record, prediction, ms| {
            let mut values = vec![record.image_path.clone()];
            if product_col.is_some() {
                values.push(record.product_id.clone());
            }
            if label_col.is_some() {
                values.push(record.image_type.clone());
            }
            values.extend(prediction_values(&prediction));
            if label_col.is_some() {
                values.push((prediction.predicted_class == record.image_type).to_string());
            }
            values.push(format!("{ms:.3}"));
            csv.write_record(&values)?;
            predicted += 1;
            Ok(())
        })?;
        if !skipped.is_empty() {
            tracing::warn!("{} image(s) could not be read and are not in the output", skipped.len());
        }
        csv.flush()?;
        Ok(())
    })?;
    Ok(predicted)
}

/// The single-image report `test --image-path` prints: human lines, or JSON with `json`.
pub fn format_single(predictor: &Predictor, image: &str, prediction: &Prediction, json: bool) -> String {
    let names = predictor.class_names();
    if json {
        let probabilities: serde_json::Map<String, serde_json::Value> =
            names.iter().zip(&prediction.probabilities).map(|(n, p)| (n.clone(), (*p).into())).collect();
        let value = serde_json::json!({
            "image_path": image,
            "predicted_class": prediction.predicted_class,
            "confidence": prediction.confidence,
            "top_k": prediction.top_k.iter().map(|(c, p)| serde_json::json!({"class": c, "probability": p})).collect::<Vec<_>>(),
            "probabilities": probabilities,
        });
        return format!("{}\n", serde_json::to_string_pretty(&value).expect("json"));
    }
    let mut out = format!("{image}: {} (confidence {:.4})\n", prediction.predicted_class, prediction.confidence);
    let top: Vec<String> = prediction.top_k.iter().map(|(c, p)| format!("{c} {p:.4}")).collect();
    out.push_str(&format!("  top-{}: {}\n", prediction.top_k.len(), top.join(", ")));
    for (name, p) in names.iter().zip(&prediction.probabilities) {
        out.push_str(&format!("  {name:<14} {p:.4}\n"));
    }
    out
}
