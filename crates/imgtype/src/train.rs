//! `train`: one config drives a run that writes its config, metadata, per-epoch metrics,
//! checkpoints, the best model and the test-split evaluation into
//! `results/run_YYYYMMDD_HHMMSS_<8 hex>/`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tch::nn::OptimizerConfig;
use tch::{nn, Device, Kind, Tensor};

use crate::config::Config;
use crate::data::batch::{augment, load_images, SkippedImage};
use crate::data::image::to_normalized_batch;
use crate::data::{read_split_csv, ImageRecord, ImageSource, SplitName};
use crate::eval::{compute_metrics, Metrics};
use crate::loss::Loss;
use crate::model::{ImageTypeClassifier, BACKBONE_GROUP, HEAD_GROUP};

/// Learning-rate multiplier for an epoch of a training phase (a phase restarts at unfreeze).
#[derive(Debug, Clone)]
pub struct LrSchedule {
    kind: String,
    phase_epochs: usize,
    warmup_epochs: usize,
    plateau_patience: usize,
    plateau_factor: f64,
    plateau_best: f64,
    plateau_bad_epochs: usize,
}

impl LrSchedule {
    pub fn new(kind: &str, phase_epochs: usize, warmup_epochs: usize, plateau_patience: usize) -> Self {
        Self {
            kind: kind.to_string(),
            phase_epochs: phase_epochs.max(1),
            warmup_epochs,
            plateau_patience,
            plateau_factor: 1.0,
            plateau_best: f64::INFINITY,
            plateau_bad_epochs: 0,
        }
    }

    /// Multiplier for the `epoch`-th epoch of the phase (0-based).
    pub fn factor(&self, epoch: usize) -> f64 {
        let warmup =
            if epoch < self.warmup_epochs { (epoch + 1) as f64 / (self.warmup_epochs + 1) as f64 } else { 1.0 };
        let base = match self.kind.as_str() {
            // torch CosineAnnealingLR with T_max = the phase's epochs, eta_min 0
            "cosine" => 0.5 * (1.0 + (std::f64::consts::PI * epoch as f64 / self.phase_epochs as f64).cos()),
            // torch StepLR(step_size=10, gamma=0.1)
            "step" => 0.1f64.powi((epoch / 10) as i32),
            "plateau" => self.plateau_factor,
            _ => 1.0,
        };
        warmup * base
    }

    /// ReduceLROnPlateau(factor 0.3, patience) on validation loss.
    pub fn observe_val_loss(&mut self, val_loss: f64) {
        if self.kind != "plateau" {
            return;
        }
        if val_loss < self.plateau_best * (1.0 - 1e-4) {
            self.plateau_best = val_loss;
            self.plateau_bad_epochs = 0;
        } else {
            self.plateau_bad_epochs += 1;
            if self.plateau_bad_epochs > self.plateau_patience {
                self.plateau_factor *= 0.3;
                self.plateau_bad_epochs = 0;
            }
        }
    }
}

fn build_optimizer(config: &Config, vs: &nn::VarStore) -> Result<nn::Optimizer> {
    let t = &config.training;
    let optimizer = match t.optimizer.as_str() {
        "adamw" => nn::AdamW { wd: t.weight_decay, ..Default::default() }.build(vs, t.learning_rate)?,
        "adam" => nn::Adam { wd: t.weight_decay, ..Default::default() }.build(vs, t.learning_rate)?,
        "sgd" => nn::Sgd { momentum: 0.9, wd: t.weight_decay, ..Default::default() }.build(vs, t.learning_rate)?,
        other => bail!("training.optimizer `{other}` is not supported"),
    };
    Ok(optimizer)
}

#[derive(Debug, Clone, Serialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub backbone_frozen: bool,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub val_loss: Option<f64>,
    pub val_accuracy: Option<f64>,
    pub val_f1_macro: Option<f64>,
    pub val_f1_weighted: Option<f64>,
    pub lr_head: f64,
    pub lr_backbone: f64,
    pub seconds: f64,
    pub images_per_second: f64,
}

#[derive(Debug, Serialize)]
pub struct TrainOutcome {
    pub run_dir: PathBuf,
    pub best_model: Option<PathBuf>,
    pub best_epoch: Option<usize>,
    pub test_metrics: Metrics,
    pub skipped_images: usize,
}

/// Drops images that cannot be decoded; fails when a split has more than the allowed share.
fn screen_images(
    split: SplitName,
    records: Vec<ImageRecord>,
    config: &Config,
    source: &ImageSource,
    skipped: &mut Vec<(SplitName, SkippedImage)>,
) -> Result<Vec<ImageRecord>> {
    let refs: Vec<&ImageRecord> = records.iter().collect();
    let loaded = load_images(&refs, source, 16, config.system.num_workers.max(1));
    let total = records.len();
    let mut kept = Vec::with_capacity(total);
    let mut bad = 0;
    for (record, result) in records.into_iter().zip(loaded) {
        match result {
            Ok(_) => kept.push(record),
            Err(reason) => {
                tracing::warn!("{}: skipping unreadable image {}: {reason}", split.as_str(), record.image_path);
                skipped.push((split, SkippedImage { image_path: record.image_path, reason }));
                bad += 1;
            }
        }
    }
    let ratio = if total > 0 { bad as f64 / total as f64 } else { 0.0 };
    if ratio > config.data.max_bad_image_ratio {
        bail!(
            "{} split: {bad} of {total} images are unreadable ({:.1}%), more than data.max_bad_image_ratio = {}; \
             see the warnings above",
            split.as_str(),
            ratio * 100.0,
            config.data.max_bad_image_ratio
        );
    }
    Ok(kept)
}

fn class_indices(records: &[ImageRecord], class_names: &[String]) -> Vec<i64> {
    records
        .iter()
        .map(|r| class_names.iter().position(|c| *c == r.image_type).expect("validated class") as i64)
        .collect()
}

/// Loss, probabilities and true labels of a model over records, every image scored.
pub struct SplitEvaluation {
    pub loss: f64,
    pub y_true: Vec<usize>,
    pub probabilities: Vec<Vec<f64>>,
}

impl SplitEvaluation {
    pub fn metrics(&self, class_names: &[String]) -> Metrics {
        let y_pred: Vec<usize> = self
            .probabilities
            .iter()
            .map(|p| (0..p.len()).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap_or(0))
            .collect();
        compute_metrics(class_names, &self.y_true, &y_pred, Some(&self.probabilities))
    }
}

pub fn evaluate_records(
    model: &ImageTypeClassifier,
    records: &[ImageRecord],
    loss_fn: &Loss,
    config: &Config,
    source: &ImageSource,
    label: &str,
) -> Result<SplitEvaluation> {
    let class_names = model.class_names().to_vec();
    let labels = class_indices(records, &class_names);
    let batch_size = config.inference.batch_size.max(1);
    let mut total_loss = 0.0;
    let mut y_true = Vec::new();
    let mut probabilities = Vec::new();
    let mut progress = crate::progress::Progress::new(label, records.len() as u64, u64::MAX);
    for (chunk, chunk_labels) in records.chunks(batch_size).zip(labels.chunks(batch_size)) {
        let refs: Vec<&ImageRecord> = chunk.iter().collect();
        let images = load_images(&refs, source, config.augmentation.image_size, config.system.num_workers.max(1))
            .into_iter()
            .zip(chunk)
            .map(|(r, rec)| r.map_err(|e| anyhow::anyhow!("{}: {e}", rec.image_path)))
            .collect::<Result<Vec<_>>>()?;
        let batch = to_normalized_batch(&images).to_device(model.device());
        let targets = Tensor::from_slice(chunk_labels).to_device(model.device());
        let (loss, probs) = tch::no_grad(|| {
            let logits = model.forward_t(&batch, false);
            (loss_fn.compute(&logits, &targets).double_value(&[]), logits.softmax(-1, Kind::Float))
        });
        total_loss += loss * chunk.len() as f64;
        let flat = Vec::<f32>::try_from(probs.to_device(Device::Cpu).flatten(0, -1))?;
        probabilities.extend(flat.chunks(class_names.len()).map(|r| r.iter().map(|&v| v as f64).collect::<Vec<_>>()));
        y_true.extend(chunk_labels.iter().map(|&l| l as usize));
        progress.advance(chunk.len() as u64, "");
    }
    progress.finish();
    Ok(SplitEvaluation { loss: total_loss / records.len().max(1) as f64, y_true, probabilities })
}

/// The validation figure `validation.metric` names, oriented so that larger is better.
fn score(metric: &str, loss: f64, metrics: &Metrics) -> f64 {
    match metric {
        "val_loss" => -loss,
        "accuracy" => metrics.accuracy,
        "f1_macro" => metrics.macro_avg.f1,
        _ => metrics.weighted_avg.f1,
    }
}

fn snapshot(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().map(|(n, t)| (n, t.detach().copy())).collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

#[derive(Serialize)]
struct RunMetadata {
    run_id: String,
    start_time: String,
    config_file: Option<String>,
    device: String,
    imgtype_version: &'static str,
    libtorch_cuda_available: bool,
    torch_threads: i32,
    host: Option<String>,
    git_commit: Option<String>,
}

fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git").args(["rev-parse", "HEAD"]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Runs training as `config` says; `config_file` is recorded in the run metadata.
pub fn run_training(config: &Config, config_file: Option<&Path>) -> Result<TrainOutcome> {
    let device = crate::device::resolve_device(&config.system.device)?;
    tch::manual_seed(config.system.seed as i64);
    let mut rng = ChaCha8Rng::seed_from_u64(config.system.seed);
    let class_names = config.data.class_names.clone();

    let run_dir = crate::rundir::create_run_dir(&config.paths.result_dir, &["model", "logs", "checkpoints"])?;
    crate::logging::attach_log_files(&run_dir.join("logs"))?;
    let run_id = run_dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    tracing::info!("run folder: {}", run_dir.display());
    crate::fsutil::write_atomic(&run_dir.join("config.json"), config.to_json_pretty().as_bytes())?;
    crate::fsutil::write_json_atomic(
        &run_dir.join("run_metadata.json"),
        &RunMetadata {
            run_id: run_id.clone(),
            start_time: chrono::Local::now().to_rfc3339(),
            config_file: config_file.map(|p| p.display().to_string()),
            device: crate::device::describe_device(device),
            imgtype_version: env!("CARGO_PKG_VERSION"),
            libtorch_cuda_available: tch::Cuda::is_available(),
            torch_threads: tch::get_num_threads(),
            host: std::env::var("HOSTNAME")
                .ok()
                .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|s| s.trim().to_string())),
            git_commit: git_commit(),
        },
    )?;
    tracing::info!("device: {}", crate::device::describe_device(device));

    // Data
    let data_dir = &config.paths.data_dir;
    let source = ImageSource::from_config(&config.data);
    let mut skipped = Vec::new();
    let mut splits = Vec::new();
    for split in SplitName::ALL {
        let records = read_split_csv(&data_dir.join(split.file_name()), &class_names)?;
        let records = screen_images(split, records, config, &source, &mut skipped)?;
        if records.is_empty() {
            bail!(
                "{} split is empty ({}); run `divide` first",
                split.as_str(),
                data_dir.join(split.file_name()).display()
            );
        }
        let mut counts = vec![0usize; class_names.len()];
        for i in class_indices(&records, &class_names) {
            counts[i as usize] += 1;
        }
        let per_class: Vec<String> = class_names.iter().zip(&counts).map(|(c, n)| format!("{c}={n}")).collect();
        tracing::info!("{}: {} images ({})", split.as_str(), records.len(), per_class.join(", "));
        splits.push((records, counts));
    }
    write_skipped(&run_dir.join("logs/skipped_images.csv"), &skipped)?;
    let (mut train_records, train_counts) = splits.remove(0);
    let (val_records, _) = splits.remove(0);
    let (test_records, _) = splits.remove(0);
    train_records.shuffle(&mut rng);

    // Model, loss
    let mut model = ImageTypeClassifier::new(config, device);
    if config.model.pretrained {
        match &config.model.pretrained_weights {
            Some(path) => {
                crate::model::load_backbone_weights(&mut model, path)?;
            }
            None => tracing::warn!(
                "model.pretrained is true but model.pretrained_weights is not set; ImageNet weights cannot be \
                 downloaded here, so the backbone starts from random initialisation"
            ),
        }
    }
    let pretrained_loaded = config.model.pretrained && config.model.pretrained_weights.is_some();
    let freeze_epochs = config.model.freeze_backbone_epochs.min(config.training.epochs);
    if !pretrained_loaded && freeze_epochs > 0 {
        tracing::warn!(
            "model.freeze_backbone_epochs = {freeze_epochs} with a randomly initialised backbone: frozen random \
             features only waste epochs; set it to 0 when training from scratch (see configs/demo.json)"
        );
    }
    let loss_fn = Loss::from_config(config, &train_counts, device)?;

    let t = &config.training;
    let head_lr = t.learning_rate;
    let backbone_lr = t.effective_backbone_lr();
    let mut history: Vec<EpochRecord> = Vec::new();
    let mut best: Option<(f64, usize, Vec<(String, Tensor)>)> = None;
    let mut epochs_without_improvement = 0;
    let mut optimizer: Option<nn::Optimizer> = None;
    let mut schedule = LrSchedule::new(&t.scheduler, t.epochs, t.warmup_epochs, t.scheduler_patience);
    let mut phase_start = 0;
    let best_model_path = run_dir.join("model/best_model.safetensors");
    let batch_size = t.batch_size;
    let n_batches = train_records.len().div_ceil(batch_size);

    for epoch in 0..t.epochs {
        let frozen = epoch < freeze_epochs;
        if optimizer.is_none() || (epoch == freeze_epochs && freeze_epochs > 0) {
            model.set_backbone_frozen(frozen);
            optimizer = Some(build_optimizer(config, &model.vs)?);
            let phase_epochs = if frozen { freeze_epochs } else { t.epochs - freeze_epochs };
            schedule = LrSchedule::new(&t.scheduler, phase_epochs, t.warmup_epochs, t.scheduler_patience);
            phase_start = epoch;
            if epoch > 0 {
                tracing::info!("epoch {}: backbone unfrozen; optimiser and scheduler rebuilt", epoch + 1);
            }
        }
        let opt = optimizer.as_mut().expect("optimizer built");
        let factor = schedule.factor(epoch - phase_start);
        let (lr_head, lr_backbone) = (head_lr * factor, if frozen { 0.0 } else { backbone_lr * factor });
        opt.set_lr_group(HEAD_GROUP, lr_head);
        opt.set_lr_group(BACKBONE_GROUP, lr_backbone);

        let started = Instant::now();
        train_records.shuffle(&mut rng);
        let labels = class_indices(&train_records, &class_names);
        let (mut loss_sum, mut correct, mut seen) = (0.0, 0i64, 0usize);
        let mut progress = crate::progress::Progress::new(
            format!("epoch {}/{}", epoch + 1, t.epochs),
            n_batches as u64,
            config.logging.log_frequency as u64,
        );
        for (chunk, chunk_labels) in train_records.chunks(batch_size).zip(labels.chunks(batch_size)) {
            let refs: Vec<&ImageRecord> = chunk.iter().collect();
            let mut images = Vec::with_capacity(chunk.len());
            let mut targets = Vec::with_capacity(chunk.len());
            for ((result, record), &label) in
                load_images(&refs, &source, config.augmentation.image_size, config.system.num_workers.max(1))
                    .into_iter()
                    .zip(chunk)
                    .zip(chunk_labels)
            {
                match result {
                    Ok(mut image) => {
                        augment(&mut image, config.augmentation.horizontal_flip, &mut rng);
                        images.push(image);
                        targets.push(label);
                    }
                    Err(reason) => {
                        tracing::warn!("skipping {} in this batch: {reason}", record.image_path)
                    }
                }
            }
            if images.is_empty() {
                continue;
            }
            let batch = to_normalized_batch(&images).to_device(device);
            let targets = Tensor::from_slice(&targets).to_device(device);
            let logits = model.forward_t(&batch, true);
            let loss = loss_fn.compute(&logits, &targets);
            opt.zero_grad();
            loss.backward();
            if let Some(clip) = t.gradient_clip_norm.filter(|c| *c > 0.0) {
                opt.clip_grad_norm(clip);
            }
            opt.step();
            let n = images.len();
            loss_sum += loss.double_value(&[]) * n as f64;
            correct += logits.argmax(-1, false).eq_tensor(&targets).sum(Kind::Int64).int64_value(&[]);
            seen += n;
            let rate = seen as f64 / started.elapsed().as_secs_f64().max(1e-9);
            progress.advance(
                1,
                &format!(
                    "loss {:.4} acc {:.3} {:.1} img/s",
                    loss_sum / seen as f64,
                    correct as f64 / seen as f64,
                    rate
                ),
            );
        }
        progress.finish();
        let seconds = started.elapsed().as_secs_f64();
        let train_loss = loss_sum / seen.max(1) as f64;
        let train_accuracy = correct as f64 / seen.max(1) as f64;

        let validate = (epoch + 1) % config.validation.val_frequency == 0 || epoch + 1 == t.epochs;
        let mut record = EpochRecord {
            epoch: epoch + 1,
            backbone_frozen: frozen,
            train_loss,
            train_accuracy,
            val_loss: None,
            val_accuracy: None,
            val_f1_macro: None,
            val_f1_weighted: None,
            lr_head,
            lr_backbone,
            seconds,
            images_per_second: seen as f64 / seconds.max(1e-9),
        };
        let mut stop = false;
        if validate {
            let evaluation = evaluate_records(&model, &val_records, &loss_fn, config, &source, "validation")?;
            let metrics = evaluation.metrics(&class_names);
            record.val_loss = Some(evaluation.loss);
            record.val_accuracy = Some(metrics.accuracy);
            record.val_f1_macro = Some(metrics.macro_avg.f1);
            record.val_f1_weighted = Some(metrics.weighted_avg.f1);
            schedule.observe_val_loss(evaluation.loss);
            let current = score(&config.validation.metric, evaluation.loss, &metrics);
            let improved = match &best {
                None => true,
                Some((best_score, _, _)) => current > best_score + t.min_delta,
            };
            if improved {
                best = Some((current, epoch + 1, snapshot(&model.vs)));
                epochs_without_improvement = 0;
                if config.validation.save_best_model {
                    model.save(&best_model_path)?;
                }
            } else {
                epochs_without_improvement += 1;
            }
            tracing::info!(
                "epoch {}/{}: train loss {train_loss:.4} acc {train_accuracy:.4} | val loss {:.4} acc {:.4} f1_w {:.4}{} | {:.1} img/s, {seconds:.1} s",
                epoch + 1,
                t.epochs,
                evaluation.loss,
                metrics.accuracy,
                metrics.weighted_avg.f1,
                if improved { " (best)" } else { "" },
                record.images_per_second
            );
            if t.early_stopping && epochs_without_improvement >= t.patience {
                tracing::info!(
                    "early stopping: no {} improvement for {} validations",
                    config.validation.metric,
                    t.patience
                );
                stop = true;
            }
        } else {
            tracing::info!("epoch {}/{}: train loss {train_loss:.4} acc {train_accuracy:.4}", epoch + 1, t.epochs);
        }
        history.push(record);
        model.save(&run_dir.join("checkpoints/latest_checkpoint.safetensors"))?;
        crate::fsutil::write_json_atomic(
            &run_dir.join("logs/training_results.json"),
            &serde_json::json!({
                "history": history,
                "best_epoch": best.as_ref().map(|b| b.1),
                "best_score": best.as_ref().map(|b| b.0),
                "metric": config.validation.metric,
            }),
        )?;
        write_metrics_csv(&run_dir.join("logs/metrics.csv"), &history)?;
        if stop {
            break;
        }
    }

    if config.validation.save_last_model {
        model.save(&run_dir.join("model/last_model.safetensors"))?;
    }
    let best_epoch = best.as_ref().map(|b| b.1);
    if let Some((_, epoch, weights)) = &best {
        crate::model::file::copy_named_tensors(weights, &mut model.vs, Path::new("best weights in memory"), "")?;
        tracing::info!("restored the best weights (epoch {epoch})");
    }
    let test_eval = evaluate_records(&model, &test_records, &loss_fn, config, &source, "test")?;
    let test_metrics = test_eval.metrics(&class_names);
    tracing::info!(
        "test: accuracy {:.4}, F1 macro {:.4}, F1 weighted {:.4} ({} images)",
        test_metrics.accuracy,
        test_metrics.macro_avg.f1,
        test_metrics.weighted_avg.f1,
        test_metrics.num_samples
    );
    crate::fsutil::write_json_atomic(
        &run_dir.join("evaluation_results.json"),
        &serde_json::json!({
            "split": "test",
            "loss": test_eval.loss,
            "metrics": test_metrics,
        }),
    )?;
    write_class_summary(&run_dir.join("class_performance_summary.csv"), &test_metrics)?;
    let skipped_count = skipped.len();
    let best_model = config.validation.save_best_model.then_some(best_model_path).filter(|p| p.exists());
    crate::fsutil::write_json_atomic(
        &run_dir.join("final_results.json"),
        &serde_json::json!({
            "run_id": run_id,
            "best_epoch": best_epoch,
            "validation_metric": config.validation.metric,
            "epochs_run": history.len(),
            "best_model": best_model.as_ref().map(|p| p.display().to_string()),
            "test_accuracy": test_metrics.accuracy,
            "test_f1_macro": test_metrics.macro_avg.f1,
            "test_f1_weighted": test_metrics.weighted_avg.f1,
            "skipped_images": skipped_count,
        }),
    )?;
    Ok(TrainOutcome { run_dir, best_model, best_epoch, test_metrics, skipped_images: skipped_count })
}

fn write_skipped(path: &Path, skipped: &[(SplitName, SkippedImage)]) -> Result<()> {
    crate::fsutil::write_atomic_with(path, |w| {
        let mut csv = csv::Writer::from_writer(w);
        csv.write_record(["split", "image_path", "reason"])?;
        for (split, s) in skipped {
            csv.write_record([split.as_str(), &s.image_path, &s.reason])?;
        }
        csv.flush()?;
        Ok(())
    })
}

fn write_metrics_csv(path: &Path, history: &[EpochRecord]) -> Result<()> {
    const HEADER: [&str; 12] = [
        "epoch",
        "backbone_frozen",
        "train_loss",
        "train_accuracy",
        "val_loss",
        "val_accuracy",
        "val_f1_macro",
        "val_f1_weighted",
        "lr_head",
        "lr_backbone",
        "seconds",
        "images_per_second",
    ];
    crate::fsutil::write_csv_atomic(path, &HEADER, history).context("logs/metrics.csv")
}

fn write_class_summary(path: &Path, metrics: &Metrics) -> Result<()> {
    crate::fsutil::write_atomic_with(path, |w| {
        let mut csv = csv::Writer::from_writer(w);
        csv.write_record(["class", "precision", "recall", "f1_score", "support"])?;
        for name in &metrics.class_names {
            let r = &metrics.per_class[name];
            csv.write_record([
                name.clone(),
                format!("{:.4}", r.precision),
                format!("{:.4}", r.recall),
                format!("{:.4}", r.f1_score),
                r.support.to_string(),
            ])?;
        }
        csv.flush()?;
        Ok(())
    })
}

/// Image paths across splits must not repeat a product (guards hand-made split CSVs).
pub fn check_split_leak(data_dir: &Path, class_names: &[String]) -> Result<()> {
    let mut seen: std::collections::HashMap<String, SplitName> = Default::default();
    for split in SplitName::ALL {
        let records = read_split_csv(&data_dir.join(split.file_name()), class_names)?;
        let ids: HashSet<String> = records.into_iter().map(|r| r.product_id).collect();
        for id in ids {
            if let Some(other) = seen.insert(id.clone(), split) {
                bail!("product `{id}` is in both {} and {} splits", other.as_str(), split.as_str());
            }
        }
    }
    Ok(())
}
