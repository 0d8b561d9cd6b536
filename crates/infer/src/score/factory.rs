//! Which engine runs a model: the one place that names them all, so that an engine's own
//! file depends on the trait (`engine`) and nothing depends back on it.

use tch::Device;

use super::engine::{InferenceEngine, LibtorchEngine};
use super::openvino::OpenVinoEngine;
use imgtype_base::config::{InferenceEngineChoice, Precision};
use imgtype_model::device::inference_kind;
use imgtype_model::quantize::ActivationRanges;
use imgtype_model::ImageTypeClassifier;

/// The engine `choice` names for `model`, computing in `precision`. OpenVINO runs on the CPU
/// only: for a model on CUDA or MPS, and wherever OpenVINO cannot be loaded or compile the
/// model, this is libtorch, with one warning (never an error: inference goes on). INT8 runs
/// on OpenVINO only, with the ranges stored in the model file; without either it is the
/// precision `auto`, with a warning.
pub fn build_engine(
    model: &ImageTypeClassifier,
    choice: InferenceEngineChoice,
    precision: Precision,
) -> Box<dyn InferenceEngine> {
    let kind = inference_kind(precision, model.device());
    let on_cpu = model.device() == Device::Cpu;
    if precision == Precision::Int8 && !(on_cpu && choice != InferenceEngineChoice::Libtorch) {
        tracing::warn!("INT8 runs on OpenVINO on the CPU: using libtorch in the precision `auto` instead");
    }
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
    let int8 = match (precision, model.int8_ranges()) {
        (Precision::Int8, None) => {
            let reason = model.int8_missing_reason();
            tracing::warn!("not INT8: {reason} (`test --int8-calibrate` measures them)");
            None
        }
        (Precision::Int8, Some(ranges)) => Some(ranges),
        _ => None,
    };
    let build = |int8: Option<&ActivationRanges>| {
        let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match int8 {
            Some(ranges) => OpenVinoEngine::int8(model, ranges, kind, threads),
            None => OpenVinoEngine::new(model, kind, threads),
        }));
        built.unwrap_or_else(|panic| Err(anyhow::anyhow!("{}", imgtype_images::decode::panic_message(&panic))))
    };
    let built = match int8.map(|ranges| build(Some(ranges))) {
        Some(Ok(engine)) => Ok(engine),
        Some(Err(error)) => {
            tracing::warn!("OpenVINO cannot compile the INT8 model ({error:#}): OpenVINO without INT8 instead");
            build(None)
        }
        None => build(None),
    };
    match built {
        Ok(engine) => Box::new(engine),
        Err(error) => {
            tracing::warn!("OpenVINO is not available ({error:#}): using libtorch");
            Box::new(LibtorchEngine::new(model, kind))
        }
    }
}
