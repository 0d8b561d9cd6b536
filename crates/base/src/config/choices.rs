//! The config's fixed choices as enums: a value outside them is a parse error naming the
//! key and the allowed values, and code matches them without a fallback arm. The Python
//! system's spellings are accepted as aliases; the canonical spelling is what is written.

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::AugmentationConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Backbone {
    #[default]
    #[serde(rename = "efficientnet_b0")]
    EfficientNetB0,
    #[serde(rename = "mobilenet_v3_small")]
    MobileNetV3Small,
    #[serde(rename = "mobilenet_v3_large")]
    MobileNetV3Large,
    #[serde(rename = "mobilenet_v2")]
    MobileNetV2,
}

impl Backbone {
    pub fn as_str(self) -> &'static str {
        match self {
            Backbone::EfficientNetB0 => "efficientnet_b0",
            Backbone::MobileNetV3Small => "mobilenet_v3_small",
            Backbone::MobileNetV3Large => "mobilenet_v3_large",
            Backbone::MobileNetV2 => "mobilenet_v2",
        }
    }

    /// Channels of the pooled features the head reads.
    pub fn feature_dim(self) -> i64 {
        match self {
            Backbone::EfficientNetB0 | Backbone::MobileNetV2 => 1280,
            Backbone::MobileNetV3Small => 576,
            Backbone::MobileNetV3Large => 960,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum OptimizerKind {
    #[default]
    #[serde(rename = "adamw", alias = "AdamW")]
    AdamW,
    #[serde(rename = "adam", alias = "Adam")]
    Adam,
    /// With momentum 0.9.
    #[serde(rename = "sgd", alias = "SGD")]
    Sgd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scheduler {
    /// CosineAnnealingLR over the phase's epochs.
    #[default]
    Cosine,
    /// StepLR: ×0.1 every 10 epochs.
    Step,
    /// ReduceLROnPlateau on validation loss (×0.3 after `scheduler_patience` epochs).
    #[serde(alias = "reduce_on_plateau")]
    Plateau,
    None,
}

/// The validation figure that picks the best model and drives early stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    ValLoss,
    Accuracy,
    F1Macro,
    #[default]
    F1Weighted,
}

impl Metric {
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::ValLoss => "val_loss",
            Metric::Accuracy => "accuracy",
            Metric::F1Macro => "f1_macro",
            Metric::F1Weighted => "f1_weighted",
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An augmentation preset: it sets the augmentation keys a config leaves out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strength {
    None,
    Light,
    #[default]
    Medium,
    Strong,
}

impl Strength {
    pub const ALL: [Strength; 4] = [Strength::None, Strength::Light, Strength::Medium, Strength::Strong];

    /// Every augmentation setting this preset stands for. Colour jitter stays off below
    /// `strong`: it can wash out the white background that tells a full shot from a detail shot.
    pub fn settings(self) -> AugmentationConfig {
        let base = AugmentationConfig {
            image_size: 256,
            strength: self,
            horizontal_flip: true,
            rotation: 10.0,
            color_jitter: false,
            brightness: 0.2,
            contrast: 0.2,
            saturation: 0.2,
            hue: 0.05,
            random_erasing: false,
            random_erasing_prob: 0.25,
            mixup_alpha: 0.0,
            cutmix_alpha: 0.0,
        };
        match self {
            Strength::None => AugmentationConfig { horizontal_flip: false, rotation: 0.0, ..base },
            Strength::Light => {
                AugmentationConfig { rotation: 5.0, brightness: 0.1, contrast: 0.1, saturation: 0.1, hue: 0.02, ..base }
            }
            Strength::Medium => base,
            Strength::Strong => AugmentationConfig {
                rotation: 20.0,
                color_jitter: true,
                brightness: 0.3,
                contrast: 0.3,
                saturation: 0.3,
                hue: 0.08,
                random_erasing: true,
                random_erasing_prob: 0.5,
                mixup_alpha: 0.2,
                cutmix_alpha: 1.0,
                ..base
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    #[serde(alias = "TRACE")]
    Trace,
    #[serde(alias = "DEBUG")]
    Debug,
    #[default]
    #[serde(alias = "INFO")]
    Info,
    #[serde(alias = "WARN", alias = "warning", alias = "WARNING")]
    Warn,
    #[serde(alias = "ERROR", alias = "CRITICAL")]
    Error,
}

impl LogLevel {
    /// The name tracing filters understand.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// `system.precision`: the number format of the model's arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// bfloat16 for inference where the hardware has it (AVX512-BF16 or AMX on a CPU, a
    /// CUDA device); training in fp32 unless `system.mixed_precision` asks for bf16.
    #[default]
    Auto,
    Fp32,
    Bf16,
    /// INT8 convolutions on the OpenVINO engine, from the activation ranges `train` (or
    /// `test --calibrate`) stores in the model file; the other layers as `auto` would run
    /// them. Inference only: training and libtorch run fp32 for it.
    Int8,
}

impl FromStr for Precision {
    type Err = anyhow::Error;

    fn from_str(name: &str) -> Result<Self> {
        Ok(match name.trim().to_ascii_lowercase().as_str() {
            "auto" => Self::Auto,
            "fp32" => Self::Fp32,
            "bf16" => Self::Bf16,
            "int8" => Self::Int8,
            other => anyhow::bail!("unknown number format `{other}` (auto, fp32, bf16, int8)"),
        })
    }
}

/// `system.inference_engine`: what runs the forward pass of inference (`test`, the API, the
/// Python module); training and its validation always run libtorch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InferenceEngineChoice {
    /// OpenVINO on a CPU when its library loads; libtorch on CUDA or MPS, or without it.
    #[default]
    Auto,
    #[serde(alias = "OpenVINO")]
    Openvino,
    Libtorch,
}

impl FromStr for InferenceEngineChoice {
    type Err = anyhow::Error;

    fn from_str(name: &str) -> Result<Self> {
        Ok(match name.trim().to_ascii_lowercase().as_str() {
            "auto" => Self::Auto,
            "openvino" => Self::Openvino,
            "libtorch" | "torch" => Self::Libtorch,
            other => anyhow::bail!("unknown inference engine `{other}` (auto, openvino, libtorch)"),
        })
    }
}

/// `system.device`: the device a config names, before checking what this machine has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// CUDA, then Apple MPS, then CPU.
    #[default]
    Auto,
    Cpu,
    /// `cuda` (the first device) or `cuda:N`.
    Cuda(Option<usize>),
    Mps,
}

impl FromStr for DeviceChoice {
    type Err = anyhow::Error;

    fn from_str(name: &str) -> Result<Self> {
        let lower = name.trim().to_ascii_lowercase();
        Ok(match lower.as_str() {
            "auto" => DeviceChoice::Auto,
            "cpu" => DeviceChoice::Cpu,
            "cuda" | "gpu" => DeviceChoice::Cuda(None),
            "mps" => DeviceChoice::Mps,
            other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(index)) => DeviceChoice::Cuda(Some(index)),
                _ => bail!("unknown device `{name}`; use auto, cpu, cuda, cuda:N or mps"),
            },
        })
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Auto => f.write_str("auto"),
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(None) => f.write_str("cuda"),
            DeviceChoice::Cuda(Some(index)) => write!(f, "cuda:{index}"),
            DeviceChoice::Mps => f.write_str("mps"),
        }
    }
}

impl Serialize for DeviceChoice {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DeviceChoice {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_parse_and_print_back() {
        assert_eq!("CUDA:2".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cuda(Some(2)));
        assert_eq!("gpu".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cuda(None));
        assert!("cuda:x".parse::<DeviceChoice>().is_err());
        for name in ["auto", "cpu", "cuda", "cuda:0", "cuda:3", "mps"] {
            assert_eq!(name.parse::<DeviceChoice>().unwrap().to_string(), name);
        }
    }

    #[test]
    fn python_spellings_are_accepted() {
        let scheduler: Scheduler = serde_json::from_str("\"reduce_on_plateau\"").unwrap();
        assert_eq!(scheduler, Scheduler::Plateau);
        assert_eq!(serde_json::to_string(&scheduler).unwrap(), "\"plateau\"");
        let level: LogLevel = serde_json::from_str("\"WARNING\"").unwrap();
        assert_eq!(level, LogLevel::Warn);
    }
}
