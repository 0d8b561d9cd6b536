//! `config.json`: one file drives divide, train and test. Every section of the
//! Python system's config is accepted with its default values; unknown keys are
//! warned about (a typo must not pass silently) and invalid values are errors
//! that name the key and the value. Each default lives in one place: the `Default`
//! impls here (augmentation: the `medium` preset); the README table and the shipped
//! `config.json` are checked against them by tests.

mod choices;
mod data;
mod diff;
mod load;
pub mod python_keys;
mod validate;
pub use validate::{
    ratios_sum_to_one, MAX_BATCH_SIZE, MAX_EPOCHS, MAX_TEMPERATURE, MAX_WORKERS, MIN_TEMPERATURE, RESERVED_CLASS_NAME,
};

pub use choices::{
    Backbone, DeviceChoice, InferenceEngineChoice, LogLevel, Metric, OptimizerKind, Precision, Scheduler, Strength,
};
pub use data::DataConfig;
pub use diff::{describe_differences, differing_keys};
pub use load::LoadedConfig;

use std::collections::BTreeMap;
use std::path::PathBuf;

use data::empty_is_unset;
use serde::{Deserialize, Serialize};

pub const DEFAULT_CLASS_NAMES: [&str; 4] = ["care_label", "detail_shot", "full_shot", "neck_label"];

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Config {
    pub data: DataConfig,
    pub model: ModelConfig,
    pub training: TrainingConfig,
    pub augmentation: AugmentationConfig,
    pub validation: ValidationConfig,
    pub logging: LoggingConfig,
    pub inference: InferenceConfig,
    pub paths: PathsConfig,
    pub system: SystemConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ModelConfig {
    pub backbone: Backbone,
    pub pretrained: bool,
    /// Backbone weights (`.safetensors` or a `torch.save`d `.pth`; our key names or
    /// torchvision's) used when `pretrained` is true; unset: torchvision's ImageNet file.
    #[serde(deserialize_with = "empty_is_unset")]
    pub pretrained_weights: Option<PathBuf>,
    /// Where torchvision's ImageNet file is downloaded from when it is not cached (a mirror);
    /// unset: torchvision's own URL. The file name must keep torch.hub's `-<sha256 prefix>`.
    #[serde(deserialize_with = "empty_is_unset")]
    pub pretrained_url: Option<String>,
    pub dropout_rate: f64,
    /// Head width; null means max(512, backbone features / 2).
    pub hidden_dim: Option<i64>,
    pub freeze_backbone_epochs: usize,
    /// torchvision's stochastic depth for EfficientNet-B0.
    pub stochastic_depth_prob: f64,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            backbone: Backbone::EfficientNetB0,
            pretrained: true,
            pretrained_weights: None,
            pretrained_url: None,
            dropout_rate: 0.4,
            hidden_dim: Some(512),
            freeze_backbone_epochs: 3,
            stochastic_depth_prob: 0.2,
        }
    }
}

impl ModelConfig {
    pub fn effective_hidden_dim(&self) -> i64 {
        self.hidden_dim.unwrap_or_else(|| 512.max(self.backbone.feature_dim() / 2))
    }
}

/// Focal-loss gamma: one value, one per class (in class order), or class name → gamma.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum FocalGamma {
    Scalar(f64),
    PerClass(Vec<f64>),
    ByClass(BTreeMap<String, f64>),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct TrainingConfig {
    pub batch_size: usize,
    pub epochs: usize,
    pub learning_rate: f64,
    /// Backbone learning rate; null means learning_rate × 0.1.
    pub backbone_lr: Option<f64>,
    pub weight_decay: f64,
    pub optimizer: OptimizerKind,
    pub scheduler: Scheduler,
    pub scheduler_patience: usize,
    pub warmup_epochs: usize,
    pub patience: usize,
    pub min_delta: f64,
    pub early_stopping: bool,
    pub use_class_weights: bool,
    /// Global gradient-norm clip; null or 0 disables it.
    pub gradient_clip_norm: Option<f64>,
    pub focal_loss: bool,
    pub focal_alpha: f64,
    pub focal_gamma: FocalGamma,
    pub label_smoothing: f64,
    /// Keep an exponential moving average of the weights; validate and save it.
    pub use_ema: bool,
    pub ema_decay: f64,
    /// Warm the EMA decay up from 0 (timm's ModelEmaV3): min(ema_decay, 1 - (1 + updates)^-3/4).
    pub ema_warmup: bool,
    /// Fit `inference.temperature` on the validation split at the end of training.
    pub calibrate: bool,
}

impl Default for TrainingConfig {
    fn default() -> Self {
        Self {
            batch_size: 32,
            epochs: 25,
            learning_rate: 1e-4,
            backbone_lr: None,
            weight_decay: 1e-4,
            optimizer: OptimizerKind::AdamW,
            scheduler: Scheduler::Cosine,
            scheduler_patience: 3,
            warmup_epochs: 0,
            patience: 12,
            min_delta: 0.001,
            early_stopping: true,
            use_class_weights: true,
            gradient_clip_norm: Some(1.0),
            focal_loss: false,
            focal_alpha: 1.0,
            focal_gamma: FocalGamma::Scalar(2.0),
            label_smoothing: 0.1,
            use_ema: false,
            ema_decay: 0.999,
            ema_warmup: true,
            calibrate: true,
        }
    }
}

impl TrainingConfig {
    pub fn effective_backbone_lr(&self) -> f64 {
        self.backbone_lr.unwrap_or(self.learning_rate * 0.1)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct AugmentationConfig {
    pub image_size: u32,
    pub strength: Strength,
    pub horizontal_flip: bool,
    /// Maximum rotation in degrees (±).
    pub rotation: f64,
    pub color_jitter: bool,
    pub brightness: f64,
    pub contrast: f64,
    pub saturation: f64,
    pub hue: f64,
    pub random_erasing: bool,
    pub random_erasing_prob: f64,
    pub mixup_alpha: f64,
    pub cutmix_alpha: f64,
}

impl Default for AugmentationConfig {
    fn default() -> Self {
        Strength::default().settings()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ValidationConfig {
    pub val_frequency: usize,
    pub save_best_model: bool,
    pub save_last_model: bool,
    pub metric: Metric,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        Self { val_frequency: 1, save_best_model: true, save_last_model: true, metric: Metric::F1Weighted }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct LoggingConfig {
    /// Batches between plain progress lines when stderr is not a terminal.
    pub log_frequency: usize,
    /// Epochs between numbered checkpoints (0 = none).
    pub save_frequency: usize,
    pub log_level: LogLevel,
    /// Accepted for compatibility with the Python config; runs are tracked in files instead.
    pub use_wandb: bool,
    pub project_name: Option<String>,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self { log_frequency: 10, save_frequency: 5, log_level: LogLevel::Info, use_wandb: false, project_name: None }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct InferenceConfig {
    pub confidence_threshold: f64,
    pub batch_size: usize,
    pub return_top_k: usize,
    /// Class name → minimum probability for that class to be chosen.
    pub class_thresholds: BTreeMap<String, f64>,
    /// The API and the Python module merge calls that arrive within this many milliseconds
    /// of each other (up to `batch_size` images) into one forward pass.
    pub max_batch_delay_ms: u64,
    /// Logits are divided by it before the softmax; training fits it on the validation split
    /// (`training.calibrate`) and stores it in the model file. 1 leaves them as they are.
    pub temperature: f64,
}

impl Default for InferenceConfig {
    fn default() -> Self {
        Self {
            confidence_threshold: 0.5,
            batch_size: 32,
            return_top_k: 3,
            class_thresholds: BTreeMap::new(),
            max_batch_delay_ms: 5,
            temperature: 1.0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct PathsConfig {
    pub data_dir: PathBuf,
    pub model_dir: PathBuf,
    pub result_dir: PathBuf,
    pub test_result_dir: PathBuf,
    pub log_dir: PathBuf,
    pub checkpoint_dir: PathBuf,
}

impl Default for PathsConfig {
    fn default() -> Self {
        Self {
            data_dir: "data".into(),
            model_dir: "models".into(),
            result_dir: "results".into(),
            test_result_dir: "test_result".into(),
            log_dir: "logs".into(),
            checkpoint_dir: "checkpoints".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct SystemConfig {
    /// Threads that decode images: see [`SystemConfig::decode_threads`].
    pub num_workers: usize,
    /// libtorch's compute threads in training: null shares the cores other processes leave
    /// free (see `threads.rs`); a number fixes them, so results repeat bit for bit whatever
    /// else runs on the machine.
    pub num_threads: Option<usize>,
    pub device: DeviceChoice,
    /// The Python system's switch for reduced-precision training: bf16 where the device has it.
    pub mixed_precision: bool,
    pub precision: Precision,
    pub inference_engine: InferenceEngineChoice,
    pub seed: u64,
    /// cuDNN autotuning of convolution algorithms on CUDA (faster, not bit-repeatable).
    pub benchmark: bool,
}

impl Default for SystemConfig {
    fn default() -> Self {
        Self {
            num_workers: 4,
            num_threads: None,
            device: DeviceChoice::Auto,
            mixed_precision: false,
            precision: Precision::Auto,
            inference_engine: InferenceEngineChoice::Auto,
            seed: 42,
            benchmark: false,
        }
    }
}

impl SystemConfig {
    /// Threads that decode images, the one rule for training, evaluation, `test` and the API:
    /// `num_workers`, or with 0 every core. (Training with 0 also decodes in the training
    /// thread, between steps, instead of in background threads.)
    pub fn decode_threads(&self) -> usize {
        match self.num_workers {
            0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            n => n,
        }
    }
}

impl Config {
    /// The epochs trained with a frozen backbone: `freeze_backbone_epochs`, at most all of them.
    pub fn frozen_epochs(&self) -> usize {
        self.model.freeze_backbone_epochs.min(self.training.epochs)
    }

    /// `--quick-test`, for one run and for each experiment of a sweep alike: 5 epochs,
    /// patience 3, 2 of them with a frozen backbone (the Python system's quick test).
    pub fn apply_quick_test(&mut self) {
        self.training.epochs = 5;
        self.training.patience = 3;
        self.model.freeze_backbone_epochs = 2;
    }

    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).expect("config serialises")
    }
}
