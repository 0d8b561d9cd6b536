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

/// A run folder moved or copied since it began (with its sweep or cross-validation, or from
/// another working folder): the folder it lies in now is its results folder, and the paths that
/// lay inside the old one (a fold's split files, an experiment's best-model copy) lie inside
/// the new one; the run never reads or writes where it was.
fn follow_the_folder(config: &mut Config, dir: &Path) {
    let now = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let before = config.paths.result_dir.clone();
    let same = |a: &Path, b: &Path| a == b || a.canonicalize().is_ok_and(|a| b.canonicalize().is_ok_and(|b| a == b));
    if same(&before, now) {
        return;
    }
    for path in [&mut config.paths.data_dir, &mut config.paths.model_dir] {
        if let Ok(inside) = path.strip_prefix(&before) {
            *path = now.join(inside);
        }
    }
    config.paths.result_dir = now.to_path_buf();
    tracing::info!(
        "{} lies in {}, not in {} where it began: its split files are read from {}",
        dir.display(),
        now.display(),
        before.display(),
        config.paths.data_dir.display()
    );
}

/// `paths.data_dir` as a message names it: a relative one with the working folder it is read in
/// (a sweep resumed from another folder reads another `data/`).
pub fn data_dir_named(data_dir: &Path) -> String {
    match std::env::current_dir() {
        Ok(working) if data_dir.is_relative() => {
            format!("{} (relative to the working folder {})", data_dir.display(), working.display())
        }
        _ => data_dir.display().to_string(),
    }
}

/// A run goes on with the split files it began with: other ones (divided again, edited, or the
/// same relative `paths.data_dir` in another working folder) would mix two splits in one model.
fn check_same_split_files(dir: &Path, data_dir: &Path) -> Result<()> {
    let where_ = || format!("{}: the split files in {}", dir.display(), data_dir_named(data_dir));
    if began_with_other_split_files(dir, data_dir).with_context(where_)? {
        bail!(
            "{} are not those the run began with (divided again, edited, or `{}` relative to another working \
             folder): resume it from the folder it was started in, or start a new run",
            where_(),
            data_dir.display()
        );
    }
    Ok(())
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
    /// Of the split files it trains on ([`super::split_files_fingerprint`]); none in a run
    /// from before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    split_files: Option<String>,
}

/// Whether the run in `dir` began with other split files than `data_dir` holds now (false when
/// its metadata does not keep theirs: a run from before it was kept, or the Python system's).
/// Metadata that is missing or cannot be read is damage, not a run without a record.
pub fn began_with_other_split_files(dir: &Path, data_dir: &Path) -> Result<bool> {
    Ok(match recorded_split_files(dir)? {
        Some(began) => super::split_files_fingerprint(data_dir, &[])? != began,
        None => false,
    })
}

/// The fingerprint of the split files the run in `dir` began with; none when its metadata does
/// not keep it (see [`began_with_other_split_files`]).
pub(super) fn recorded_split_files(dir: &Path) -> Result<Option<String>> {
    let path = dir.join("run_metadata.json");
    let damaged = || {
        format!("{} cannot be read (deleted, cut or edited?), so the split files the run began with are unknown; move the run folder away to train it again", path.display())
    };
    let metadata: serde_json::Value = crate::fsutil::read_json(&path).with_context(damaged)?;
    match metadata.get("split_files") {
        Some(serde_json::Value::String(began)) => Ok(Some(began.clone())),
        None if metadata.is_object() => Ok(None),
        _ => Err(anyhow::anyhow!("`split_files` is not a fingerprint")).with_context(damaged),
    }
}

impl RunFolder {
    /// Creates a new run folder under `paths.result_dir` for `config` (read from
    /// `config_file`, when there was one) with `model/`, the logs and checkpoints folders,
    /// `config.json` and `run_metadata.json`.
    pub fn create(config: &Config, config_file: Option<&Path>) -> Result<Self> {
        Self::create_from(config, config_file, None)
    }

    /// As [`Self::create`], for a run of a plan whose split files must be those fingerprinted
    /// `planned` (a cross-validation fold's, as `images.csv` deals them): files changed after
    /// the plan's check, even while the command starts, are refused before the run begins.
    pub fn create_planned(config: &Config, planned: &str) -> Result<Self> {
        Self::create_from(config, None, Some(planned))
    }

    fn create_from(config: &Config, config_file: Option<&Path>, planned: Option<&str>) -> Result<Self> {
        // Inputs that can be checked cheaply are, before a folder exists to be left behind.
        let device = crate::device::resolve_device(config.system.device)?;
        crate::threads::apply_config(&config.system);
        let (splits, split_files) = super::splits::read_splits(config)?;
        if planned.is_some_and(|planned| planned != split_files) {
            return Err(not_as_planned(&config.paths.data_dir));
        }
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
        super::splits::check_train_classes(&splits, config)?;
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
                split_files: Some(split_files),
            },
        )?;
        Ok(folder)
    }

    /// A reopened run of a plan began with the split files fingerprinted `planned` (see
    /// [`Self::create_planned`]); a run from before split files were recorded is taken as it is.
    pub fn check_planned_split_files(&self, planned: &str) -> Result<()> {
        match recorded_split_files(self.dir())? {
            Some(began) if began != planned => Err(not_as_planned(&self.config.paths.data_dir)),
            _ => Ok(()),
        }
    }

    /// Reopens an interrupted run with its own `config.json`, and records the resume time
    /// in its metadata. Fails when there is no checkpoint to resume from.
    pub fn reopen(dir: &Path) -> Result<Self> {
        Self::reopen_on(dir, None)
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
        follow_the_folder(&mut config, dir);
        check_same_split_files(dir, &config.paths.data_dir)?;
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

fn not_as_planned(data_dir: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "the split files in {} are not those its plan deals this run (changed since they were checked, or while \
         the command started): not trained on; put them back as the plan has them",
        data_dir.display()
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_moved_run_reads_and_writes_where_its_folder_is_now() {
        let dir = tempfile::tempdir().unwrap();
        let (old_fold, new_fold) = (dir.path().join("cv/fold_1"), dir.path().join("elsewhere/cv/fold_1"));
        std::fs::create_dir_all(new_fold.join("run_x")).unwrap();
        let mut config = Config::default();
        config.paths.result_dir = old_fold.clone();
        config.paths.data_dir = old_fold.join("data");
        config.paths.model_dir = old_fold.join("models");
        let outside = dir.path().join("shared_models");
        let mut kept = config.clone();
        kept.paths.model_dir = outside.clone();
        follow_the_folder(&mut config, &new_fold.join("run_x"));
        assert_eq!(config.paths.result_dir, new_fold);
        assert_eq!((config.paths.data_dir, config.paths.model_dir), (new_fold.join("data"), new_fold.join("models")));
        // A path outside the old folder stays as it is.
        follow_the_folder(&mut kept, &new_fold.join("run_x"));
        assert_eq!(kept.paths.model_dir, outside);
        // Where it began, nothing changes.
        std::fs::create_dir_all(old_fold.join("run_y")).unwrap();
        let mut unmoved = Config::default();
        unmoved.paths.result_dir = old_fold.clone();
        unmoved.paths.data_dir = PathBuf::from("data");
        follow_the_folder(&mut unmoved, &old_fold.join("run_y"));
        assert_eq!((unmoved.paths.result_dir, unmoved.paths.data_dir), (old_fold, PathBuf::from("data")));
    }
}
