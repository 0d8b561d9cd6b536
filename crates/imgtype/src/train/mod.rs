//! `train`: one config drives a run that writes its config, metadata, per-epoch metrics,
//! checkpoints, the best model and the test-split evaluation into
//! `results/run_YYYYMMDD_HHMMSS_<8 hex>/`. A run can be interrupted (SIGINT / SIGTERM,
//! or `--stop-after`) and resumed from its latest checkpoint with the same outcome as an
//! uninterrupted run: every random draw is derived from (seed, epoch, batch).

pub mod checkpoint;
pub mod optim;
pub mod pipeline;
pub mod schedule;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

use crate::config::Config;
use crate::data::batch::{load_images, SkippedImage};
use crate::data::image::to_normalized_batch;
use crate::data::{read_split_csv, ImageRecord, ImageSource, SplitName};
use crate::eval::{compute_metrics, Metrics};
use crate::loss::{Loss, Targets};
use crate::model::{ImageTypeClassifier, BACKBONE_GROUP, HEAD_GROUP};
use checkpoint::TrainingState;
use optim::{Optimizer, OptimizerKind};
use pipeline::{derive_seed, epoch_batches, EpochPlan};
use schedule::LrSchedule;

#[derive(Debug, Clone, Serialize, Deserialize)]
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

/// Why a run stopped before its end; `train --resume RUN_DIR` continues it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseReason {
    Interrupted,
    StopAfter,
}

pub enum TrainEnd {
    Finished(TrainOutcome),
    Paused { run_dir: PathBuf, epochs_done: usize, reason: PauseReason },
}

#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    pub config_file: Option<PathBuf>,
    /// Stop (resumably) after this many epochs in this invocation.
    pub stop_after_epochs: Option<usize>,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// SIGINT / SIGTERM: the first finishes the current step, saves a checkpoint and exits;
/// a second one exits at once.
pub fn install_interrupt_handler() {
    let _ = ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            eprintln!("second interrupt: exiting without a checkpoint");
            std::process::exit(130);
        }
        eprintln!("interrupt received: finishing the current step, then saving a checkpoint");
    });
}

pub fn interrupt_requested() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
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
            (loss_fn.compute(&logits, Targets::Hard(&targets)).double_value(&[]), logits.softmax(-1, Kind::Float))
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

#[derive(Serialize, Deserialize)]
struct RunMetadata {
    run_id: String,
    start_time: String,
    config_file: Option<String>,
    device: String,
    imgtype_version: String,
    libtorch_version: String,
    cuda_available: bool,
    cuda_devices: i64,
    torch_threads: i32,
    cpu_cores: usize,
    data_workers: usize,
    host: Option<String>,
    git_commit: Option<String>,
    #[serde(default)]
    resumed_at: Vec<String>,
}

fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git").args(["rev-parse", "HEAD"]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn host_name() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|s| s.trim().to_string()))
        .filter(|h| !h.is_empty())
}

/// A run folder's sub-folders for logs and checkpoints, named by `paths.log_dir` and
/// `paths.checkpoint_dir` (`logs/`, `checkpoints/` by default).
fn logs_dir(run_dir: &Path, config: &Config) -> PathBuf {
    run_dir.join(&config.paths.log_dir)
}

fn checkpoints_dir(run_dir: &Path, config: &Config) -> PathBuf {
    run_dir.join(&config.paths.checkpoint_dir)
}

fn latest_checkpoint(run_dir: &Path, config: &Config) -> PathBuf {
    checkpoints_dir(run_dir, config).join("latest_checkpoint.safetensors")
}

/// Everything a run needs once its folder exists: data, model, loss.
struct Session {
    config: Arc<Config>,
    run_dir: PathBuf,
    device: Device,
    source: ImageSource,
    model: ImageTypeClassifier,
    ema: Option<ImageTypeClassifier>,
    loss_fn: Loss,
    train_records: Arc<Vec<ImageRecord>>,
    train_labels: Arc<Vec<i64>>,
    val_records: Vec<ImageRecord>,
    test_records: Vec<ImageRecord>,
    skipped: usize,
    /// TensorBoard scalars in the logs folder; a run goes on without them if the file fails.
    events: Option<crate::tensorboard::EventWriter>,
}

fn open_session(config: &Config, run_dir: PathBuf) -> Result<Session> {
    crate::logging::set_level(&config.logging.log_level)?;
    if config.logging.use_wandb {
        tracing::warn!(
            "logging.use_wandb: Weights & Biases is not called from here; every run writes logs/metrics.csv and \
             logs/training_results.json instead"
        );
    }
    let device = crate::device::resolve_device(&config.system.device)?;
    tch::manual_seed(config.system.seed as i64);
    let class_names = config.data.class_names.clone();
    let data_dir = &config.paths.data_dir;
    let source = ImageSource::from_config(&config.data);
    let mut skipped = Vec::new();
    let mut splits = Vec::new();
    for split in SplitName::ALL {
        let path = data_dir.join(split.file_name());
        let records = read_split_csv(&path, &class_names)?;
        let records = screen_images(split, records, config, &source, &mut skipped)?;
        if records.is_empty() {
            bail!("{} split is empty ({}); run `divide` first", split.as_str(), path.display());
        }
        let mut counts = vec![0usize; class_names.len()];
        for i in class_indices(&records, &class_names) {
            counts[i as usize] += 1;
        }
        let per_class: Vec<String> = class_names.iter().zip(&counts).map(|(c, n)| format!("{c}={n}")).collect();
        tracing::info!("{}: {} images ({})", split.as_str(), records.len(), per_class.join(", "));
        splits.push((records, counts));
    }
    write_skipped(&logs_dir(&run_dir, config).join("skipped_images.csv"), &skipped)?;
    let (train_records, train_counts) = splits.remove(0);
    let (val_records, _) = splits.remove(0);
    let (test_records, _) = splits.remove(0);

    let mut model = ImageTypeClassifier::new(config, device);
    if config.model.pretrained {
        match &config.model.pretrained_weights {
            Some(path) => crate::model::load_backbone_weights(&mut model, path)?,
            None => tracing::warn!(
                "model.pretrained is true but model.pretrained_weights is not set; ImageNet weights cannot be \
                 downloaded by this tool, so the backbone starts from random initialisation"
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
    if config.system.mixed_precision && !matches!(device, Device::Cuda(_)) {
        tracing::warn!(
            "system.mixed_precision is ignored on {}: autocast is used on CUDA only",
            crate::device::describe_device(device)
        );
    }
    let ema = config.training.use_ema.then(|| {
        let mut ema = ImageTypeClassifier::new(config, device);
        crate::model::file::copy_named_tensors(&snapshot(&model.vs), &mut ema.vs, Path::new("model"), "")
            .expect("same architecture");
        ema
    });
    let loss_fn = Loss::from_config(config, &train_counts, device)?;
    let train_labels = Arc::new(class_indices(&train_records, &class_names));
    let events = match crate::tensorboard::EventWriter::create(&logs_dir(&run_dir, config)) {
        Ok(writer) => Some(writer),
        Err(e) => {
            tracing::warn!("no TensorBoard event file: {e:#}");
            None
        }
    };
    Ok(Session {
        config: Arc::new(config.clone()),
        run_dir,
        device,
        source,
        model,
        ema,
        loss_fn,
        train_records: Arc::new(train_records),
        train_labels,
        val_records,
        test_records,
        skipped: skipped.len(),
        events,
    })
}

/// Starts a new run as `config` says.
pub fn train(config: &Config, options: &TrainOptions) -> Result<TrainEnd> {
    let log_dir = config.paths.log_dir.to_string_lossy().to_string();
    let checkpoint_dir = config.paths.checkpoint_dir.to_string_lossy().to_string();
    let run_dir = crate::rundir::create_run_dir(&config.paths.result_dir, &["model", &log_dir, &checkpoint_dir])?;
    crate::logging::attach_log_files(&logs_dir(&run_dir, config))?;
    let run_id = run_dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    tracing::info!("run folder: {}", run_dir.display());
    crate::fsutil::write_atomic(&run_dir.join("config.json"), config.to_json_pretty().as_bytes())?;
    let device = crate::device::resolve_device(&config.system.device)?;
    crate::fsutil::write_json_atomic(
        &run_dir.join("run_metadata.json"),
        &RunMetadata {
            run_id,
            start_time: chrono::Local::now().to_rfc3339(),
            config_file: options.config_file.as_ref().map(|p| p.display().to_string()),
            device: crate::device::describe_device(device),
            imgtype_version: env!("CARGO_PKG_VERSION").into(),
            libtorch_version: env!("IMGTYPE_LIBTORCH_VERSION").into(),
            cuda_available: tch::Cuda::is_available(),
            cuda_devices: tch::Cuda::device_count(),
            torch_threads: tch::get_num_threads(),
            cpu_cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            data_workers: config.system.num_workers,
            host: host_name(),
            git_commit: git_commit(),
            resumed_at: Vec::new(),
        },
    )?;
    tracing::info!("device: {}", crate::device::describe_device(device));
    let mut session = open_session(config, run_dir)?;
    run_epochs(&mut session, TrainingState::default(), None, options)
}

/// Continues an interrupted run in its own folder from `checkpoints/latest_checkpoint.safetensors`.
pub fn resume(run_dir: &Path, options: &TrainOptions) -> Result<TrainEnd> {
    let config_path = run_dir.join("config.json");
    if !config_path.is_file() {
        bail!("{} is not a run folder (no config.json)", run_dir.display());
    }
    let config = Config::load(&config_path)?;
    let checkpoint_path = latest_checkpoint(run_dir, &config);
    if !checkpoint_path.is_file() {
        bail!("{}: no checkpoint to resume from (the run stopped before its first checkpoint)", run_dir.display());
    }
    crate::logging::attach_log_files(&logs_dir(run_dir, &config))?;
    let metadata_path = run_dir.join("run_metadata.json");
    if let Ok(text) = std::fs::read_to_string(&metadata_path) {
        if let Ok(mut metadata) = serde_json::from_str::<RunMetadata>(&text) {
            metadata.resumed_at.push(chrono::Local::now().to_rfc3339());
            crate::fsutil::write_json_atomic(&metadata_path, &metadata)?;
        }
    }
    let mut session = open_session(&config, run_dir.to_path_buf())?;
    let restored = checkpoint::load(&checkpoint_path, &mut session.model, session.ema.as_mut())?;
    if restored.state.finished {
        bail!("{}: this run already finished", run_dir.display());
    }
    tracing::info!(
        "resuming {} at epoch {} batch {}",
        run_dir.display(),
        restored.state.next_epoch + 1,
        restored.state.next_batch + 1
    );
    let state = restored.state.clone();
    run_epochs(&mut session, state, Some(restored), options)
}

fn forward(session: &Session, images: &Tensor, train: bool) -> Tensor {
    if session.config.system.mixed_precision && matches!(session.device, Device::Cuda(_)) {
        tch::autocast(true, || session.model.forward_t(images, train)).to_kind(Kind::Float)
    } else {
        session.model.forward_t(images, train)
    }
}

/// timm's ModelEmaV2: every floating tensor (weights and BatchNorm statistics) becomes
/// `decay · ema + (1 - decay) · model`.
pub fn update_ema(ema: &mut ImageTypeClassifier, model: &ImageTypeClassifier, decay: f64) {
    let source = model.vs.variables();
    tch::no_grad(|| {
        for (name, mut target) in ema.vs.variables() {
            if target.is_floating_point() {
                let _ = target.lerp_(&source[&name], 1.0 - decay);
            }
        }
    });
}

fn run_epochs(
    session: &mut Session,
    mut state: TrainingState,
    mut restored: Option<checkpoint::Restored>,
    options: &TrainOptions,
) -> Result<TrainEnd> {
    let config = session.config.clone();
    let t = &config.training;
    let class_names = config.data.class_names.clone();
    let freeze_epochs = config.model.freeze_backbone_epochs.min(t.epochs);
    let optimizer_kind = OptimizerKind::parse(&t.optimizer)?;
    let backbone_lr = t.effective_backbone_lr();
    let best_model_path = session.run_dir.join("model/best_model.safetensors");
    let checkpoint_path = latest_checkpoint(&session.run_dir, &config);
    let n_batches = session.train_records.len().div_ceil(t.batch_size);
    let mut best_weights: Option<Vec<(String, Tensor)>> = restored.as_mut().and_then(|r| r.best.take());
    let mut optimizer: Option<Optimizer> = None;
    let mut schedule = state
        .schedule
        .clone()
        .unwrap_or_else(|| LrSchedule::new(&t.scheduler, t.epochs, t.warmup_epochs, t.scheduler_patience));
    let mut epochs_this_run = 0;
    let seed = config.system.seed;

    let mut epoch = state.next_epoch;
    while epoch < t.epochs && !state.stopped_early {
        let frozen = epoch < freeze_epochs;
        session.model.set_backbone_frozen(frozen);
        let phase_starts = epoch == 0 || (epoch == freeze_epochs && freeze_epochs > 0);
        if phase_starts && state.next_batch == 0 {
            optimizer = Some(Optimizer::new(optimizer_kind, t.weight_decay, &session.model.vs));
            let phase_epochs = if frozen { freeze_epochs } else { t.epochs - freeze_epochs };
            schedule = LrSchedule::new(&t.scheduler, phase_epochs, t.warmup_epochs, t.scheduler_patience);
            state.phase_start = epoch;
            if epoch > 0 {
                tracing::info!("epoch {}: backbone unfrozen; optimiser and scheduler rebuilt", epoch + 1);
            }
        } else if optimizer.is_none() {
            let mut opt = Optimizer::new(optimizer_kind, t.weight_decay, &session.model.vs);
            if let Some(r) = &restored {
                opt.load_state(&r.optimizer, state.optimizer_steps.clone())?;
            }
            optimizer = Some(opt);
        }
        let opt = optimizer.as_mut().expect("optimizer built");
        let factor = schedule.factor(epoch - state.phase_start);
        let (lr_head, lr_backbone) = (t.learning_rate * factor, if frozen { 0.0 } else { backbone_lr * factor });
        opt.set_lr(HEAD_GROUP, lr_head);
        opt.set_lr(BACKBONE_GROUP, lr_backbone);

        let started = Instant::now();
        let mut progress = crate::progress::Progress::new(
            format!("epoch {}/{}", epoch + 1, t.epochs),
            n_batches as u64,
            config.logging.log_frequency as u64,
        );
        progress.advance(state.next_batch as u64, "");
        let batches = epoch_batches(
            EpochPlan {
                records: session.train_records.clone(),
                labels: session.train_labels.clone(),
                num_classes: class_names.len() as i64,
                epoch,
                first_batch: state.next_batch,
            },
            config.clone(),
            session.source.clone(),
        );
        let mut interrupted = false;
        for batch in batches {
            for (path, reason) in &batch.skipped {
                tracing::warn!("skipping {path} in this batch: {reason}");
            }
            let n = batch.labels.numel();
            if n > 0 {
                tch::manual_seed((derive_seed(seed, epoch as u64, batch.index as u64) >> 1) as i64);
                let images = batch.images.to_device(session.device);
                let labels = batch.labels.to_device(session.device);
                let logits = forward(session, &images, true);
                let soft = batch.soft_targets.as_ref().map(|s| s.to_device(session.device));
                let targets = match &soft {
                    Some(s) => Targets::Soft(s),
                    None => Targets::Hard(&labels),
                };
                let loss = session.loss_fn.compute(&logits, targets);
                opt.zero_grad();
                loss.backward();
                if let Some(clip) = t.gradient_clip_norm.filter(|c| *c > 0.0) {
                    opt.clip_grad_norm(clip);
                }
                opt.step();
                if let Some(ema) = session.ema.as_mut() {
                    update_ema(ema, &session.model, t.ema_decay);
                }
                state.partial.loss_sum += loss.double_value(&[]) * n as f64;
                state.partial.correct +=
                    logits.argmax(-1, false).eq_tensor(&labels).sum(Kind::Int64).int64_value(&[]) as usize;
                state.partial.seen += n;
            }
            state.next_batch = batch.index + 1;
            let elapsed = state.partial.seconds + started.elapsed().as_secs_f64();
            let seen = state.partial.seen.max(1) as f64;
            progress.advance(
                1,
                &format!(
                    "loss {:.4} acc {:.3} {:.1} img/s",
                    state.partial.loss_sum / seen,
                    state.partial.correct as f64 / seen,
                    state.partial.seen as f64 / elapsed.max(1e-9)
                ),
            );
            if interrupt_requested() && state.next_batch < n_batches {
                interrupted = true;
                break;
            }
        }
        progress.finish();
        state.partial.seconds += started.elapsed().as_secs_f64();
        if interrupted {
            state.next_epoch = epoch;
            state.schedule = Some(schedule.clone());
            state.optimizer_steps = opt.steps().clone();
            checkpoint::save(&checkpoint_path, session, opt, &state, best_weights.as_deref())?;
            tracing::warn!(
                "interrupted in epoch {} after batch {}; checkpoint saved. Resume with: train --resume {}",
                epoch + 1,
                state.next_batch,
                session.run_dir.display()
            );
            return Ok(TrainEnd::Paused {
                run_dir: session.run_dir.clone(),
                epochs_done: epoch,
                reason: PauseReason::Interrupted,
            });
        }

        let seen = state.partial.seen.max(1) as f64;
        let mut record = EpochRecord {
            epoch: epoch + 1,
            backbone_frozen: frozen,
            train_loss: state.partial.loss_sum / seen,
            train_accuracy: state.partial.correct as f64 / seen,
            val_loss: None,
            val_accuracy: None,
            val_f1_macro: None,
            val_f1_weighted: None,
            lr_head,
            lr_backbone,
            seconds: state.partial.seconds,
            images_per_second: state.partial.seen as f64 / state.partial.seconds.max(1e-9),
        };
        state.partial = Default::default();
        state.next_batch = 0;

        let validate = (epoch + 1) % config.validation.val_frequency == 0 || epoch + 1 == t.epochs;
        if validate {
            let eval_model = session.ema.as_ref().unwrap_or(&session.model);
            let evaluation = evaluate_records(
                eval_model,
                &session.val_records,
                &session.loss_fn,
                &config,
                &session.source,
                "validation",
            )?;
            let metrics = evaluation.metrics(&class_names);
            record.val_loss = Some(evaluation.loss);
            record.val_accuracy = Some(metrics.accuracy);
            record.val_f1_macro = Some(metrics.macro_avg.f1);
            record.val_f1_weighted = Some(metrics.weighted_avg.f1);
            schedule.observe_val_loss(evaluation.loss);
            let current = score(&config.validation.metric, evaluation.loss, &metrics);
            let improved = state.best_score.is_none_or(|best| current > best + t.min_delta);
            if improved {
                state.best_score = Some(current);
                state.best_epoch = Some(epoch + 1);
                state.epochs_without_improvement = 0;
                best_weights = Some(snapshot(&eval_model.vs));
                if config.validation.save_best_model {
                    eval_model.save(&best_model_path)?;
                }
            } else {
                state.epochs_without_improvement += 1;
            }
            tracing::info!(
                "epoch {}/{}: train loss {:.4} acc {:.4} | val loss {:.4} acc {:.4} f1_w {:.4}{} | lr {:.2e} | {:.1} img/s, {:.1} s",
                epoch + 1,
                t.epochs,
                record.train_loss,
                record.train_accuracy,
                evaluation.loss,
                metrics.accuracy,
                metrics.weighted_avg.f1,
                if improved { " (best)" } else { "" },
                lr_head,
                record.images_per_second,
                record.seconds
            );
            if t.early_stopping && state.epochs_without_improvement >= t.patience {
                tracing::info!(
                    "early stopping: no {} improvement for {} validations",
                    config.validation.metric,
                    t.patience
                );
                state.stopped_early = true;
            }
        } else {
            tracing::info!(
                "epoch {}/{}: train loss {:.4} acc {:.4} | lr {:.2e}",
                epoch + 1,
                t.epochs,
                record.train_loss,
                record.train_accuracy,
                lr_head
            );
        }
        log_scalars(session, &record);
        state.history.push(record);
        state.next_epoch = epoch + 1;
        state.schedule = Some(schedule.clone());
        state.optimizer_steps = opt.steps().clone();
        checkpoint::save(&checkpoint_path, session, opt, &state, best_weights.as_deref())?;
        if config.logging.save_frequency > 0 && (epoch + 1) % config.logging.save_frequency == 0 {
            let numbered = checkpoints_dir(&session.run_dir, &config)
                .join(format!("checkpoint_epoch_{:03}.safetensors", epoch + 1));
            session.ema.as_ref().unwrap_or(&session.model).save(&numbered)?;
        }
        write_history(&session.run_dir, &state, &config)?;
        epoch += 1;
        epochs_this_run += 1;
        let more_to_do = epoch < t.epochs && !state.stopped_early;
        if more_to_do && options.stop_after_epochs.is_some_and(|n| epochs_this_run >= n) {
            tracing::info!(
                "stopping after {epochs_this_run} epoch(s) as asked; resume with: train --resume {}",
                session.run_dir.display()
            );
            return Ok(TrainEnd::Paused {
                run_dir: session.run_dir.clone(),
                epochs_done: epoch,
                reason: PauseReason::StopAfter,
            });
        }
        if more_to_do && interrupt_requested() {
            tracing::warn!(
                "interrupted after epoch {epoch}; checkpoint saved. Resume with: train --resume {}",
                session.run_dir.display()
            );
            return Ok(TrainEnd::Paused {
                run_dir: session.run_dir.clone(),
                epochs_done: epoch,
                reason: PauseReason::Interrupted,
            });
        }
    }
    finish(session, state, best_weights)
}

fn log_scalars(session: &mut Session, r: &EpochRecord) {
    let Some(events) = session.events.as_mut() else { return };
    let mut values = vec![
        ("train/loss", r.train_loss),
        ("train/accuracy", r.train_accuracy),
        ("lr/head", r.lr_head),
        ("lr/backbone", r.lr_backbone),
        ("train/images_per_second", r.images_per_second),
    ];
    for (tag, value) in [
        ("val/loss", r.val_loss),
        ("val/accuracy", r.val_accuracy),
        ("val/f1_macro", r.val_f1_macro),
        ("val/f1_weighted", r.val_f1_weighted),
    ] {
        if let Some(v) = value {
            values.push((tag, v));
        }
    }
    if let Err(e) = events.scalars(r.epoch as i64, &values) {
        tracing::warn!("TensorBoard event file: {e:#}");
    }
}

fn write_history(run_dir: &Path, state: &TrainingState, config: &Config) -> Result<()> {
    crate::fsutil::write_json_atomic(
        &logs_dir(run_dir, config).join("training_results.json"),
        &serde_json::json!({
            "history": state.history,
            "best_epoch": state.best_epoch,
            "best_score": state.best_score,
            "metric": config.validation.metric,
            "stopped_early": state.stopped_early,
        }),
    )?;
    write_metrics_csv(&logs_dir(run_dir, config).join("metrics.csv"), &state.history)
}

/// After the last epoch: last model, best weights back, test evaluation, reports.
fn finish(
    session: &mut Session,
    mut state: TrainingState,
    best_weights: Option<Vec<(String, Tensor)>>,
) -> Result<TrainEnd> {
    let config = session.config.clone();
    let class_names = config.data.class_names.clone();
    let run_dir = session.run_dir.clone();
    if config.validation.save_last_model {
        session.ema.as_ref().unwrap_or(&session.model).save(&run_dir.join("model/last_model.safetensors"))?;
    }
    if let Some(weights) = &best_weights {
        crate::model::file::copy_named_tensors(weights, &mut session.model.vs, Path::new("best weights"), "")?;
        tracing::info!("restored the best weights (epoch {})", state.best_epoch.unwrap_or(0));
    }
    let test_eval =
        evaluate_records(&session.model, &session.test_records, &session.loss_fn, &config, &session.source, "test")?;
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
        &serde_json::json!({"split": "test", "loss": test_eval.loss, "metrics": test_metrics}),
    )?;
    write_class_summary(&run_dir.join("class_performance_summary.csv"), &test_metrics)?;
    if let Some(events) = session.events.as_mut() {
        let step = state.history.last().map(|r| r.epoch as i64).unwrap_or(0);
        let mut values = vec![
            ("test/loss", test_eval.loss),
            ("test/accuracy", test_metrics.accuracy),
            ("test/f1_macro", test_metrics.macro_avg.f1),
            ("test/f1_weighted", test_metrics.weighted_avg.f1),
        ];
        if let Some(auc) = test_metrics.roc_auc_macro {
            values.push(("test/roc_auc_macro", auc));
        }
        if let Err(e) = events.scalars(step, &values) {
            tracing::warn!("TensorBoard event file: {e:#}");
        }
    }
    let best_model = Some(run_dir.join("model/best_model.safetensors")).filter(|p| p.exists());
    crate::report::write_training_plots(
        &run_dir,
        &logs_dir(&run_dir, &config),
        &state.history,
        &test_metrics,
        &test_eval,
    );
    if let Some(best) = best_model.as_ref().filter(|_| config.validation.save_best_model) {
        // As the Python system's models/best_model.pth: the latest best model in one known place.
        let shared = config.paths.model_dir.join("best_model.safetensors");
        match std::fs::read(best)
            .map_err(anyhow::Error::from)
            .and_then(|bytes| crate::fsutil::write_atomic(&shared, &bytes))
        {
            Ok(()) => tracing::info!("best model also copied to {}", shared.display()),
            Err(e) => tracing::warn!("could not copy the best model to {}: {e:#}", shared.display()),
        }
    }
    let run_id = run_dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    crate::fsutil::write_json_atomic(
        &run_dir.join("final_results.json"),
        &serde_json::json!({
            "run_id": run_id,
            "best_epoch": state.best_epoch,
            "validation_metric": config.validation.metric,
            "best_validation_score": state.best_score,
            "epochs_run": state.history.len(),
            "stopped_early": state.stopped_early,
            "best_model": best_model.as_ref().map(|p| p.display().to_string()),
            "test_accuracy": test_metrics.accuracy,
            "test_f1_macro": test_metrics.macro_avg.f1,
            "test_f1_weighted": test_metrics.weighted_avg.f1,
            "test_roc_auc_macro": test_metrics.roc_auc_macro,
            "skipped_images": session.skipped,
        }),
    )?;
    state.finished = true;
    checkpoint::mark_finished(&latest_checkpoint(&run_dir, &config), &state)?;
    Ok(TrainEnd::Finished(TrainOutcome {
        run_dir,
        best_model,
        best_epoch: state.best_epoch,
        test_metrics,
        skipped_images: session.skipped,
    }))
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
