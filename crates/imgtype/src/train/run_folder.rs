//! The run folder `results/run_YYYYMMDD_HHMMSS_<8 hex>/`: created with its sub-folders,
//! the effective `config.json` and `run_metadata.json` for a new run, or reopened with its
//! own config for `--resume`. The paths of its sub-folders, models and checkpoints are
//! decided here; `artifacts` names the other files it writes.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::run_files::RunLayout;
use crate::config::{Config, DeviceChoice};

pub struct RunFolder {
    layout: RunLayout,
    config: Config,
    resumed: bool,
    /// Held while this process trains in the folder: a second `--resume` of it stops at once.
    _lock: crate::fsutil::FolderLock,
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
    /// CPU features that decide the fast paths (bf16 needs avx512_bf16 or amx_bf16).
    #[serde(default)]
    cpu_features: Vec<String>,
    /// Number formats: of inference (evaluation, test, the API) and of the training step.
    #[serde(default)]
    inference_precision: String,
    #[serde(default)]
    training_precision: String,
    data_workers: usize,
    host: Option<String>,
    git_commit: Option<String>,
    #[serde(default)]
    resumed_at: Vec<String>,
}

impl RunFolder {
    /// Creates a new run folder under `paths.result_dir` for `config` (read from
    /// `config_file`, when there was one) with `model/`, the logs and checkpoints folders,
    /// `config.json` and `run_metadata.json`.
    pub fn create(config: &Config, config_file: Option<&Path>) -> Result<Self> {
        // Inputs that can be checked cheaply are, before a folder exists to be left behind.
        let device = crate::device::resolve_device(config.system.device)?;
        crate::threads::apply_config(&config.system);
        super::splits::read_splits(config)?;
        crate::data::ImageSource::from_config(&config.data).check_configured()?;
        let weights = crate::model::pretrained::resolve_weights_file(&config.model)?;
        // The copy of the best model a run leaves in `paths.model_dir` must not replace a file
        // the run reads (a user fine-tuning from last time's `models/best_model.safetensors`).
        let inputs: Vec<PathBuf> = config_file
            .map(Path::to_path_buf)
            .into_iter()
            .chain(weights)
            .chain(crate::data::SplitName::ALL.map(|split| config.paths.data_dir.join(split.file_name())))
            .chain([config.data.csv_path.clone()])
            .collect();
        let inputs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
        crate::fsutil::check_output_file(&super::artifacts::shared_best_model(config), &inputs)
            .context("paths.model_dir")?;
        let log_dir = config.paths.log_dir.to_string_lossy().to_string();
        let checkpoint_dir = config.paths.checkpoint_dir.to_string_lossy().to_string();
        let dir = crate::rundir::create_run_dir(&config.paths.result_dir, &["model", &log_dir, &checkpoint_dir])?;
        let lock = crate::fsutil::FolderLock::acquire(&dir, "training")?;
        let folder = Self { layout: RunLayout::new(&dir, config), config: config.clone(), resumed: false, _lock: lock };
        crate::fsutil::write_atomic(&folder.layout.config(), config.to_json_pretty().as_bytes())?;
        crate::fsutil::write_json_atomic(
            &folder.layout.metadata(),
            &RunMetadata {
                run_id: folder.run_id(),
                start_time: chrono::Local::now().to_rfc3339(),
                config_file: config_file.map(|p| p.display().to_string()),
                device: crate::device::describe_device(device),
                imgtype_version: env!("CARGO_PKG_VERSION").into(),
                libtorch_version: env!("IMGTYPE_LIBTORCH_VERSION").into(),
                cuda_available: tch::Cuda::is_available(),
                cuda_devices: tch::Cuda::device_count(),
                torch_threads: tch::get_num_threads(),
                cpu_cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
                cpu_features: crate::device::cpu_features().into_iter().map(String::from).collect(),
                inference_precision: kind_name(crate::device::inference_kind(config.system.precision, device)).into(),
                training_precision: kind_name(crate::device::training_kind(&config.system, device)).into(),
                data_workers: config.system.num_workers,
                host: host_name(),
                git_commit: git_commit(),
                resumed_at: Vec::new(),
            },
        )?;
        Ok(folder)
    }

    /// Reopens an interrupted run with its own `config.json`, and records the resume time
    /// in its metadata. Fails when there is no checkpoint to resume from.
    pub fn reopen(dir: &Path) -> Result<Self> {
        Self::reopen_on(dir, None)
    }

    /// A sweep's or cross-validation's run resumed where its folder is now: its split files,
    /// best-model copy and results folder are where `planned` (its plan, read from that folder)
    /// says, not where its config.json says they were before the folder was moved or copied.
    pub fn placed_as(mut self, planned: &Config) -> Self {
        let (now, before) = (&planned.paths, &mut self.config.paths);
        if (&before.data_dir, &before.model_dir) != (&now.data_dir, &now.model_dir) {
            tracing::info!("the folder moved: split files now from {}", now.data_dir.display());
            before.data_dir = now.data_dir.clone();
            before.model_dir = now.model_dir.clone();
            before.result_dir = now.result_dir.clone();
        }
        self
    }

    /// As [`Self::reopen`], training on `device` instead of the run's `system.device` when given
    /// (a run started on a GPU finishes on the CPU, or the reverse); the run's config.json keeps
    /// what it was started with.
    pub fn reopen_on(dir: &Path, device: Option<DeviceChoice>) -> Result<Self> {
        let config_path = dir.join("config.json");
        if !crate::fsutil::is_present(&config_path) {
            bail!("{} is not a run folder (no config.json)", dir.display());
        }
        let lock = crate::fsutil::FolderLock::acquire(dir, "resuming its training")?;
        let mut config = Config::load(&config_path)?;
        if let Some(device) = device.filter(|d| *d != config.system.device) {
            tracing::info!("resuming on {device} (the run was started with system.device {})", config.system.device);
            config.system.device = device;
        }
        // Refused before anything is recorded: a device this machine lacks, a finished run.
        crate::device::resolve_device(config.system.device)?;
        crate::threads::apply_config(&config.system);
        let folder = Self { layout: RunLayout::new(dir, &config), config, resumed: true, _lock: lock };
        if crate::fsutil::is_present(&folder.layout.final_results()) {
            if let Ok(results) = folder.layout.read_final_results() {
                if results.status == super::RunStatus::Finished {
                    bail!("{}: this run already finished", dir.display());
                }
            }
        }
        crate::fsutil::remove_stale_temp_files(dir);
        if !crate::fsutil::is_present(&folder.latest_checkpoint()) {
            bail!(
                "{}: no checkpoint to resume from ({} is missing: the run stopped before its first checkpoint, or the \
                 file was removed)",
                dir.display(),
                folder.latest_checkpoint().file_name().unwrap_or_default().to_string_lossy()
            );
        }
        let metadata_path = folder.layout.metadata();
        match crate::fsutil::read_json::<RunMetadata>(&metadata_path) {
            Ok(mut metadata) => {
                metadata.resumed_at.push(chrono::Local::now().to_rfc3339());
                crate::fsutil::write_json_atomic(&metadata_path, &metadata)?;
            }
            Err(e) => tracing::warn!("the resume is not recorded in run_metadata.json: {e:#}"),
        }
        Ok(folder)
    }

    pub fn dir(&self) -> &Path {
        self.layout.dir()
    }

    /// Where each of its files lies.
    pub fn layout(&self) -> &RunLayout {
        &self.layout
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// True for a folder reopened to resume from its checkpoint.
    pub fn is_resumed(&self) -> bool {
        self.resumed
    }

    pub fn run_id(&self) -> String {
        self.dir().file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default()
    }

    /// `paths.log_dir` inside the run folder (`logs/` by default).
    pub fn logs_dir(&self) -> PathBuf {
        self.layout.logs_dir()
    }

    pub fn latest_checkpoint(&self) -> PathBuf {
        self.layout.latest_checkpoint()
    }

    pub fn numbered_checkpoint(&self, epoch: usize) -> PathBuf {
        self.layout.numbered_checkpoint(epoch)
    }

    pub fn best_model(&self) -> PathBuf {
        self.layout.best_model()
    }

    pub fn last_model(&self) -> PathBuf {
        self.layout.last_model()
    }
}

fn kind_name(kind: tch::Kind) -> &'static str {
    if kind == tch::Kind::BFloat16 {
        "bf16"
    } else {
        "fp32"
    }
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
