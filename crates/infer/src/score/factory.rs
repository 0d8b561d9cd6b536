//! Which engine runs a model: the one place that names them all, so that an engine's own
//! file depends on the trait (`engine`) and nothing depends back on it.

use tch::{Device, Kind};

use super::engine::{InferenceEngine, LibtorchEngine};
use super::openvino::OpenVinoEngine;
use imgtype_base::config::InferenceEngineChoice;
use imgtype_model::ImageTypeClassifier;

/// The engine `choice` names for `model`, computing in `kind`. OpenVINO runs on the CPU only:
/// for a model on CUDA or MPS, and wherever OpenVINO cannot be loaded or compile the model,
/// this is libtorch, with one warning (never an error: inference goes on).
pub fn build_engine(
    model: &ImageTypeClassifier,
    choice: InferenceEngineChoice,
    kind: Kind,
) -> Box<dyn InferenceEngine> {
    let on_cpu = model.device() == Device::Cpu;
    match choice {
        InferenceEngineChoice::Libtorch => return Box::new(LibtorchEngine::new(model, kind)),
        InferenceEngineChoice::Auto if !on_cpu => return Box::new(LibtorchEngine::new(model, kind)),
        InferenceEngineChoice::Openvino if !on_cpu => {
            tracing::warn!("OpenVINO runs on the CPU and the model is on {:?}: using libtorch", model.device());
            return Box::new(LibtorchEngine::new(model, kind));
        }
        InferenceEngineChoice::Auto | InferenceEngineChoice::Openvino => {}
    }
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| OpenVinoEngine::new(model, kind, threads)));
    match built.unwrap_or_else(|panic| Err(anyhow::anyhow!("{}", imgtype_images::decode::panic_message(&panic)))) {
        Ok(engine) => Box::new(engine),
        Err(error) => {
            tracing::warn!("OpenVINO is not available ({error:#}): using libtorch");
            Box::new(LibtorchEngine::new(model, kind))
        }
    }
}
