//! The OpenVINO inference engine: our ONNX export handed to OpenVINO's CPU runtime in
//! memory, fp32 or bf16. The runtime is loaded when first asked for, from the `openvino`
//! wheel the set-up installs beside PyTorch (its path recorded at build time), or from
//! `IMGTYPE_OPENVINO_LIB` (the `libopenvino_c.so…` file); nothing is linked at build time.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{anyhow, bail, Context, Result};
use openvino::{Core, DeviceType, ElementType, RwPropertyKey, Shape};
use tch::{Kind, Tensor};

use super::engine::InferenceEngine;
use crate::model::ImageTypeClassifier;

/// The OpenVINO C library to load: `IMGTYPE_OPENVINO_LIB`, else the `libopenvino_c.so*` in
/// the venv's `openvino/libs` folder found at build time.
fn library_path() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("IMGTYPE_OPENVINO_LIB").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let folder = Path::new(env!("IMGTYPE_OPENVINO_LIBS"));
    let entries = std::fs::read_dir(folder)
        .map_err(|e| anyhow!("no OpenVINO runtime in {} ({e}); set-up installs it", folder.display()))?;
    let mut candidates: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("libopenvino_c.so")))
        .collect();
    candidates.sort();
    candidates.pop().ok_or_else(|| anyhow!("no libopenvino_c.so in {}", folder.display()))
}

/// Loads the OpenVINO runtime once per process; later calls give the first call's outcome.
fn load_runtime() -> Result<()> {
    static LOADED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    LOADED
        .get_or_init(|| {
            let path = library_path().map_err(|e| format!("{e:#}"))?;
            openvino_sys::library::load_from(&path).map_err(|e| format!("cannot load {}: {e}", path.display()))
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

/// A compiled model and its one infer request; forward passes take turns on it.
struct Compiled {
    request: openvino::InferRequest,
    // Kept alive as long as the request that runs it.
    _model: openvino::CompiledModel,
    _core: Core,
}

pub struct OpenVinoEngine {
    compiled: Mutex<Compiled>,
    kind: Kind,
    classes: i64,
}

impl OpenVinoEngine {
    /// `model` exported to ONNX and compiled for the CPU in `kind` (`Float` or `BFloat16`),
    /// on `threads` threads. Fails (never panics) when the runtime cannot be loaded.
    ///
    /// libtorch's own intra-op threads are set to one for the process: what is left of
    /// libtorch here (normalising a batch, copying it out) is small, and its OpenMP threads,
    /// spinning after each such op, would take the cores OpenVINO's threads are running on
    /// (measured: batch-1 throughput 0.53× of OpenVINO alone in Python, 1.0× with them quiet).
    pub fn new(model: &ImageTypeClassifier, kind: Kind, threads: usize) -> Result<Self> {
        load_runtime()?;
        if tch::get_num_threads() > 1 {
            tch::set_num_threads(1);
            tracing::debug!("libtorch intra-op threads set to 1: OpenVINO runs the forward passes on {threads}");
        }
        let onnx = crate::model::onnx::to_onnx(model);
        let mut core = Core::new().context("OpenVINO")?;
        let precision = if kind == Kind::BFloat16 { "bf16" } else { "f32" };
        core.set_property(&DeviceType::CPU, &RwPropertyKey::HintInferencePrecision, precision)
            .context("OpenVINO: inference precision")?;
        core.set_property(&DeviceType::CPU, &RwPropertyKey::InferenceNumThreads, &threads.max(1).to_string())
            .context("OpenVINO: threads")?;
        core.set_property(&DeviceType::CPU, &RwPropertyKey::HintPerformanceMode, "LATENCY")
            .context("OpenVINO: performance hint")?;
        let network = core.read_model_from_buffer(&onnx, None).context("OpenVINO cannot read our ONNX export")?;
        let mut compiled =
            core.compile_model(&network, DeviceType::CPU).context("OpenVINO cannot compile the model")?;
        let request = compiled.create_infer_request().context("OpenVINO: infer request")?;
        Ok(Self {
            compiled: Mutex::new(Compiled { request, _model: compiled, _core: core }),
            kind,
            classes: model.class_names().len() as i64,
        })
    }
}

impl InferenceEngine for OpenVinoEngine {
    fn logits(&self, batch: &Tensor) -> Result<Tensor> {
        let size = batch.size();
        if size.len() != 4 {
            bail!("a batch of images is [N, 3, S, S], not {size:?}");
        }
        // OpenVINO reads plain NCHW memory; our batches are channels-last.
        let values = Vec::<f32>::try_from(batch.f_to_kind(Kind::Float)?.f_contiguous()?.f_flatten(0, -1)?)?;
        let mut input = openvino::Tensor::new(ElementType::F32, &Shape::new(&size)?)?;
        input.get_data_mut::<f32>()?.copy_from_slice(&values);
        let mut compiled = self.compiled.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        compiled.request.set_input_tensor_by_index(0, &input)?;
        compiled.request.infer()?;
        let output = compiled.request.get_output_tensor_by_index(0)?;
        let logits = output.get_data::<f32>()?;
        if logits.len() as i64 != size[0] * self.classes {
            bail!("OpenVINO returned {} values for {} images of {} classes", logits.len(), size[0], self.classes);
        }
        Ok(Tensor::from_slice(logits).view([size[0], self.classes]))
    }

    fn describe(&self) -> String {
        format!("openvino {}", if self.kind == Kind::BFloat16 { "bf16" } else { "fp32" })
    }

    fn kind(&self) -> Kind {
        self.kind
    }
}
