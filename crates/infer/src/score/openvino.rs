//! The OpenVINO inference engine: our ONNX export handed to OpenVINO's CPU runtime in
//! memory, fp32 or bf16. The runtime is loaded when first asked for, from the `openvino`
//! wheel the set-up installs beside PyTorch (its path recorded at build time), or from
//! `IMGTYPE_OPENVINO_LIB` (the `libopenvino_c.so…` file); nothing is linked at build time.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{anyhow, bail, Context, Result};
use image::RgbImage;
use openvino::{Core, DeviceType, ElementType, RwPropertyKey, Shape};
use tch::{Kind, Tensor};

use super::engine::InferenceEngine;
use imgtype_images::image::{IMAGENET_MEAN, IMAGENET_STD};
use imgtype_model::quantize::{ActivationRanges, WeightRange};
use imgtype_model::ImageTypeClassifier;

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

/// Functions of OpenVINO's C API this engine calls; a library without them is not the C
/// library (the venv's `libopenvino.so` is the C++ one, an easy mix-up for
/// `IMGTYPE_OPENVINO_LIB`), and calling through it would panic.
const C_API_FUNCTIONS: [&str; 10] = [
    "ov_get_openvino_version",
    "ov_core_create",
    "ov_core_set_property",
    "ov_core_read_model_from_memory_buffer",
    "ov_core_compile_model",
    "ov_compiled_model_create_infer_request",
    "ov_tensor_create",
    "ov_infer_request_set_input_tensor_by_index",
    "ov_infer_request_infer",
    "ov_infer_request_get_output_tensor_by_index",
];

/// Checks that the library at `path` opens and exports [`C_API_FUNCTIONS`], before the
/// openvino crate binds to it (its loader cannot be undone, and a missing function panics).
fn check_c_api(path: &Path) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    // dlopen reads the file: a FIFO or a device there would block it, or worse.
    let cap = imgtype_base::fsutil::ByteCap { max_bytes: 4 << 30, name: "4 GiB" };
    imgtype_base::fsutil::open_regular_file(path, "the library", cap).map_err(|e| format!("{e:#}"))?;
    let name = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| "a path with a NUL byte".to_string())?;
    // SAFETY: dlopen/dlsym/dlclose on a C string; nothing from the library is called.
    unsafe {
        let handle = libc::dlopen(name.as_ptr(), libc::RTLD_LAZY | libc::RTLD_LOCAL);
        if handle.is_null() {
            let reason = libc::dlerror();
            let reason = if reason.is_null() {
                "cannot be opened".to_string()
            } else {
                std::ffi::CStr::from_ptr(reason).to_string_lossy().into_owned()
            };
            return Err(reason);
        }
        let missing: Vec<&str> = C_API_FUNCTIONS
            .into_iter()
            .filter(|function| {
                let symbol = std::ffi::CString::new(*function).expect("no NUL in a function name");
                libc::dlsym(handle, symbol.as_ptr()).is_null()
            })
            .collect();
        libc::dlclose(handle);
        if !missing.is_empty() {
            let more = if missing.len() > 2 { format!(" and {} more", missing.len() - 2) } else { String::new() };
            return Err(format!(
                "not OpenVINO's C library (`libopenvino_c.so…`): it lacks {}{more}",
                missing[..missing.len().min(2)].join(", ")
            ));
        }
    }
    Ok(())
}

/// Loads the OpenVINO runtime once per process; later calls give the first call's outcome.
/// Any library that is not OpenVINO's C API is an error here, never a panic later.
fn load_runtime() -> Result<()> {
    static LOADED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    LOADED
        .get_or_init(|| {
            let path = library_path().map_err(|e| format!("{e:#}"))?;
            let cannot_load = |reason: String| format!("cannot load {}: {reason}", path.display());
            check_c_api(&path).map_err(cannot_load)?;
            std::panic::catch_unwind(|| openvino_sys::library::load_from(&path))
                .unwrap_or_else(|panic| Err(imgtype_images::decode::panic_message(&panic)))
                .map_err(cannot_load)
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

/// A compiled model and its one infer request; forward passes take turns on it.
struct Compiled {
    request: openvino::InferRequest,
    /// The request's input, kept between passes of the same batch size: a fresh one would be
    /// allocated and zeroed (page faults on ~19 MB at batch 32) every pass.
    input: Option<(i64, openvino::Tensor)>,
    // Kept alive as long as the request that runs it.
    _model: openvino::CompiledModel,
    _core: Core,
}

/// Our ONNX export compiled by OpenVINO. Decoded images are normalised straight into
/// OpenVINO's input buffer, so the forward pass is the whole of the work on top of decoding.
pub struct OpenVinoEngine {
    compiled: Mutex<Compiled>,
    kind: Kind,
    /// Convolutions in INT8 (the QDQ export), the rest in `kind`.
    int8: bool,
    classes: i64,
    size: i64,
}

impl OpenVinoEngine {
    /// `model` exported to ONNX and compiled for the CPU in `kind` (`Float` or `BFloat16`),
    /// on `threads` threads. Fails (never panics) when the runtime cannot be loaded.
    ///
    /// No libtorch op runs on this path but a softmax too small to go parallel: libtorch's
    /// OpenMP threads, which spin after each parallel op and took the cores from OpenVINO's
    /// when the batch was normalised in libtorch (batch-1 throughput 0.53× OpenVINO in
    /// Python), stay asleep.
    pub fn new(model: &ImageTypeClassifier, kind: Kind, threads: usize) -> Result<Self> {
        Self::compile(model, &imgtype_model::onnx::to_onnx(model), kind, false, threads)
    }

    /// `model`'s backbone convolutions in INT8 with the `ranges` measured on its weights
    /// (`imgtype_model::quantize`), every other layer in `kind`; the weights in the range this
    /// CPU's INT8 kernels add without overflowing.
    pub fn int8(model: &ImageTypeClassifier, ranges: &ActivationRanges, kind: Kind, threads: usize) -> Result<Self> {
        let weights = WeightRange::for_this_cpu();
        let why = if weights == WeightRange::Reduced { ": this CPU has no VNNI" } else { "" };
        tracing::info!("INT8 weights in {} bits{why}", weights.bits());
        let onnx = imgtype_model::onnx::to_onnx_int8(model, ranges, weights)?;
        Self::compile(model, &onnx, kind, true, threads)
    }

    fn compile(model: &ImageTypeClassifier, onnx: &[u8], kind: Kind, int8: bool, threads: usize) -> Result<Self> {
        load_runtime()?;
        let mut core = Core::new().context("OpenVINO")?;
        let precision = if kind == Kind::BFloat16 { "bf16" } else { "f32" };
        core.set_property(&DeviceType::CPU, &RwPropertyKey::HintInferencePrecision, precision)
            .context("OpenVINO: inference precision")?;
        core.set_property(&DeviceType::CPU, &RwPropertyKey::InferenceNumThreads, &threads.max(1).to_string())
            .context("OpenVINO: threads")?;
        core.set_property(&DeviceType::CPU, &RwPropertyKey::HintPerformanceMode, "LATENCY")
            .context("OpenVINO: performance hint")?;
        let network = core.read_model_from_buffer(onnx, None).context("OpenVINO cannot read our ONNX export")?;
        let mut compiled =
            core.compile_model(&network, DeviceType::CPU).context("OpenVINO cannot compile the model")?;
        let request = compiled.create_infer_request().context("OpenVINO: infer request")?;
        Ok(Self {
            compiled: Mutex::new(Compiled { request, input: None, _model: compiled, _core: core }),
            kind,
            int8,
            classes: model.class_names().len() as i64,
            size: model.input_size() as i64,
        })
    }

    /// One forward pass over `images` normalised images `[N, 3, S, S]`, written by `fill`
    /// into OpenVINO's own input buffer (no copy in between).
    fn run(&self, images: i64, fill: impl FnOnce(&mut [f32]) -> Result<()>) -> Result<Tensor> {
        let _section = crate::forksafe::enter();
        let mut compiled = crate::forksafe::lock(&self.compiled, "the model").map_err(|e| anyhow!(e))?;
        let Compiled { request, input, .. } = &mut *compiled;
        let tensor = match input {
            Some((batch, tensor)) if *batch == images => tensor,
            _ => {
                let shape = Shape::new(&[images, 3, self.size, self.size])?;
                let tensor = openvino::Tensor::new(ElementType::F32, &shape)?;
                request.set_input_tensor_by_index(0, &tensor)?;
                &mut input.insert((images, tensor)).1
            }
        };
        fill(tensor.get_data_mut::<f32>()?)?;
        request.infer()?;
        let output = request.get_output_tensor_by_index(0)?;
        let logits = output.get_data::<f32>()?;
        if logits.len() as i64 != images * self.classes {
            bail!("OpenVINO returned {} values for {images} images of {} classes", logits.len(), self.classes);
        }
        Ok(Tensor::from_slice(logits).view([images, self.classes]))
    }
}

impl InferenceEngine for OpenVinoEngine {
    fn logits(&self, batch: &Tensor) -> Result<Tensor> {
        let size = batch.size();
        if size.len() != 4 || size[1] != 3 || size[2] != self.size || size[3] != self.size {
            bail!("a batch of images is [N, 3, {0}, {0}], not {size:?}", self.size);
        }
        // OpenVINO reads plain NCHW memory; our batches are channels-last.
        let values = batch.f_to_kind(Kind::Float)?.f_contiguous()?;
        self.run(size[0], |buffer| Ok(values.f_copy_data(buffer, buffer.len())?))
    }

    fn logits_for_images(&self, images: &[RgbImage]) -> Result<Tensor> {
        let plane = (self.size * self.size) as usize;
        if let Some(image) = images.iter().find(|image| image.as_raw().len() != plane * 3) {
            bail!("the model takes {0}×{0} images, not {1}×{2}", self.size, image.width(), image.height());
        }
        let normalized = normalized_values();
        self.run(images.len() as i64, |buffer| {
            for (planes, image) in buffer.chunks_exact_mut(plane * 3).zip(images) {
                let (red, rest) = planes.split_at_mut(plane);
                let (green, blue) = rest.split_at_mut(plane);
                for (i, pixel) in image.as_raw().chunks_exact(3).enumerate() {
                    red[i] = normalized[0][pixel[0] as usize];
                    green[i] = normalized[1][pixel[1] as usize];
                    blue[i] = normalized[2][pixel[2] as usize];
                }
            }
            Ok(())
        })
    }

    fn describe(&self) -> String {
        let format = match (self.int8, self.kind == Kind::BFloat16) {
            (true, _) => "int8",
            (false, true) => "bf16",
            (false, false) => "fp32",
        };
        format!("openvino {format}")
    }

    fn kind(&self) -> Kind {
        self.kind
    }
}

/// Each channel's 256 pixel values normalised as `data::image::to_normalized_batch` does it
/// (`(p / 255 − mean) / std` in fp32), so both engines see the same numbers.
fn normalized_values() -> &'static [[f32; 256]; 3] {
    static TABLE: std::sync::OnceLock<[[f32; 256]; 3]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        std::array::from_fn(|channel| {
            let (mean, std) = (IMAGENET_MEAN[channel] as f32, IMAGENET_STD[channel] as f32);
            std::array::from_fn(|pixel| (pixel as f32 / 255.0 - mean) / std)
        })
    })
}
