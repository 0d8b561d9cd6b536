//! What runs the forward pass. The scorer only needs logits for a normalised batch, so an
//! engine other than libtorch (the serving issue's OpenVINO) plugs in behind the same trait.

use std::sync::Mutex;

use anyhow::Result;
use image::RgbImage;
use tch::{Device, Kind, Tensor};

use imgtype_model::fused::FusedClassifier;
use imgtype_model::input::to_normalized_batch;
use imgtype_model::ImageTypeClassifier;

/// A model's forward pass in eval mode. Shared between threads: callers decode on their
/// own threads and hand the engine whole batches.
pub trait InferenceEngine: Send + Sync {
    /// Logits `[N, classes]`, fp32 on the CPU, for a normalised batch `[N, 3, S, S]` on the
    /// CPU (channels-last, as `data::image::to_normalized_batch` makes it). May panic on a
    /// libtorch error: the scorer guards every call.
    fn logits(&self, batch: &Tensor) -> Result<Tensor>;

    /// Logits for decoded images, all of the model's input size: normalised here, unless the
    /// engine does that itself (OpenVINO does, on its own threads).
    fn logits_for_images(&self, images: &[RgbImage]) -> Result<Tensor> {
        self.logits(&to_normalized_batch(images))
    }

    /// For logs and timing files: the engine and its number format, e.g. "libtorch bf16".
    fn describe(&self) -> String;

    /// The number format of the backbone: `Float` or `BFloat16`.
    fn kind(&self) -> Kind;
}

/// The inference model on libtorch: BatchNorm folded into channels-last convolutions,
/// fp32 or bf16. Forward passes take turns (libtorch tensors are not `Sync`).
pub struct LibtorchEngine {
    model: Mutex<FusedClassifier>,
    device: Device,
    kind: Kind,
}

impl LibtorchEngine {
    /// Folds `model`'s current weights; `kind` is the backbone's number format.
    pub fn new(model: &ImageTypeClassifier, kind: Kind) -> Self {
        Self { model: Mutex::new(FusedClassifier::new(model, kind)), device: model.device(), kind }
    }
}

impl InferenceEngine for LibtorchEngine {
    fn logits(&self, batch: &Tensor) -> Result<Tensor> {
        if self.device == Device::Cpu {
            imgtype_model::threads::share_cores();
        }
        let _section = crate::forksafe::enter();
        let model = crate::forksafe::lock(&self.model, "the model").map_err(|e| anyhow::anyhow!(e))?;
        // The copy back to the host is inside too: asynchronous CUDA errors surface there.
        let logits = model.forward(&batch.f_to_device(self.device)?);
        Ok(logits.f_to_device(Device::Cpu)?)
    }

    fn describe(&self) -> String {
        format!("libtorch {}", if self.kind == Kind::BFloat16 { "bf16" } else { "fp32" })
    }

    fn kind(&self) -> Kind {
        self.kind
    }
}
