//! `system.device`: the device a [`DeviceChoice`] names, on this machine; and the number
//! format (`system.precision`) the model runs in on it.

use std::os::unix::ffi::OsStrExt;

use anyhow::{bail, Result};
use tch::{Device, Kind};

use imgtype_base::config::{DeviceChoice, Precision, SystemConfig};

/// Resolves a device choice to a device this machine has, failing clearly when it has not.
pub fn resolve_device(choice: DeviceChoice) -> Result<Device> {
    if matches!(choice, DeviceChoice::Auto | DeviceChoice::Cuda(_)) {
        load_cuda_support();
    }
    match choice {
        DeviceChoice::Auto => Ok(if tch::Cuda::is_available() {
            Device::Cuda(0)
        } else if tch::utils::has_mps() {
            Device::Mps
        } else {
            Device::Cpu
        }),
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Cuda(index) => {
            let index = index.unwrap_or(0);
            let count = tch::Cuda::device_count() as usize;
            if index >= count {
                bail!("system.device `{choice}` requested, but this machine has {count} CUDA device(s)");
            }
            Ok(Device::Cuda(index))
        }
        DeviceChoice::Mps => {
            if !tch::utils::has_mps() {
                bail!("system.device `mps` requested, but Apple MPS is not available here");
            }
            Ok(Device::Mps)
        }
    }
}

// libtorch_cpu's exported `at::globalContext()` and `at::Context::setAllowTF32CuDNN(bool)`, by
// their Itanium-mangled names (tch wraps neither).
#[allow(improper_ctypes)]
extern "C" {
    #[link_name = "_ZN2at13globalContextEv"]
    fn at_global_context() -> *mut std::ffi::c_void;
    #[link_name = "_ZN2at7Context17setAllowTF32CuDNNEb"]
    fn at_context_set_allow_tf32_cudnn(context: *mut std::ffi::c_void, allow: bool);
}

/// Loads libtorch's CUDA half, `libtorch_cuda.so`, once, where an NVIDIA driver is present;
/// true when it is loaded. tch names that library at link time but calls none of its symbols,
/// so the linker's `--as-needed` drops it and a binary would never see a GPU. Linking it
/// always would cost every CPU-only process about 0.2 s and 390 MB resident at start (`test`
/// with it preloaded: 0.26 → 0.47 s, 118 → 511 MB), so it is loaded here instead, when a
/// device other than the CPU may be used. It must load before libtorch first asks whether CUDA
/// exists (libtorch keeps that answer): [`resolve_device`] is the first such question in the
/// binaries and the Python module. Tests and examples link it directly (build.rs).
pub fn load_cuda_support() -> bool {
    static LOADED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *LOADED.get_or_init(|| {
        let driver = ["/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia/version"];
        if !driver.iter().any(|p| std::path::Path::new(p).exists()) {
            return false;
        }
        match libtorch_lib_dir().map(|dir| dir.join("libtorch_cuda.so")) {
            Some(library) if library.is_file() => match load_library_globally(&library) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!("an NVIDIA driver is present but libtorch's CUDA library does not load: {e}");
                    false
                }
            },
            // A CPU-only libtorch.
            _ => false,
        }
    })
}

/// Whether libtorch sees a CUDA device, its CUDA library loaded first where a driver is present.
pub fn cuda_available() -> bool {
    load_cuda_support();
    tch::Cuda::is_available()
}

/// The folder of the libtorch this process runs (where libtorch_cpu.so was loaded from).
fn libtorch_lib_dir() -> Option<std::path::PathBuf> {
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr only reads the loader's tables for an address inside libtorch_cpu.
    let found = unsafe { libc::dladdr(at_global_context as *const std::ffi::c_void, &mut info) };
    if found == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dli_fname is a NUL-terminated path owned by the loader.
    let path = unsafe { std::ffi::CStr::from_ptr(info.dli_fname) };
    let path = std::path::PathBuf::from(std::ffi::OsStr::from_bytes(path.to_bytes()));
    path.canonicalize().ok()?.parent().map(|p| p.to_path_buf())
}

/// dlopen with RTLD_GLOBAL, as the loader would have loaded a linked library: its static
/// initialisers register the CUDA kernels and hooks with libtorch. The handle is never closed.
pub fn load_library_globally(library: &std::path::Path) -> std::result::Result<(), String> {
    let name = std::ffi::CString::new(library.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: dlopen on a C string; dlerror's message is copied before any other dl call.
    unsafe {
        if libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL).is_null() {
            let reason = libc::dlerror();
            return Err(if reason.is_null() {
                format!("{}: dlopen failed", library.display())
            } else {
                std::ffi::CStr::from_ptr(reason).to_string_lossy().into_owned()
            });
        }
    }
    Ok(())
}

/// Whether cuDNN may run fp32 convolutions in TF32 (10-bit mantissa) on Ampere and newer GPUs.
/// PyTorch allows it by default (`torch.backends.cudnn.allow_tf32`), so `precision: auto`
/// keeps that speed; `precision: fp32` asks for fp32 and gets it (logits within 1e-3 of the
/// CPU's). The setter is libtorch's own (declared above): present in libtorch 2.11 and 2.13,
/// and a libtorch without it fails at link time, not at run time.
pub fn allow_tf32_convolutions(allow: bool) {
    // SAFETY: globalContext() returns libtorch's process-wide context, never null; the setter
    // stores one flag (a member function: `this` first under the Itanium C++ ABI).
    unsafe { at_context_set_allow_tf32_cudnn(at_global_context(), allow) }
}

/// Applies `system.precision` and `system.benchmark` to cuDNN when `device` is a CUDA device.
pub fn configure_cuda(system: &SystemConfig, device: Device) {
    if matches!(device, Device::Cuda(_)) {
        tch::Cuda::cudnn_set_benchmark(system.benchmark);
        allow_tf32_convolutions(system.precision != Precision::Fp32);
    }
}

/// The CPU features that decide the fast paths (recorded in each run's metadata).
pub fn cpu_features() -> Vec<&'static str> {
    let mut found = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        for (name, present) in [
            ("avx2", std::arch::is_x86_feature_detected!("avx2")),
            ("fma", std::arch::is_x86_feature_detected!("fma")),
            ("avx512f", std::arch::is_x86_feature_detected!("avx512f")),
            ("avx512_bf16", std::arch::is_x86_feature_detected!("avx512bf16")),
        ] {
            if present {
                found.push(name);
            }
        }
        // AMX is not in std's detection yet; the kernel lists it.
        let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        if flags.lines().any(|l| l.starts_with("flags") && l.split_whitespace().any(|f| f == "amx_bf16")) {
            found.push("amx_bf16");
        }
    }
    found
}

/// Whether bfloat16 arithmetic runs natively: a CPU with AVX512-BF16 or AMX, or a CUDA
/// device (Ampere or newer; older GPUs should set `system.precision` to `fp32`).
pub fn has_native_bf16(device: Device) -> bool {
    match device {
        Device::Cpu => cpu_features().iter().any(|f| *f == "avx512_bf16" || *f == "amx_bf16"),
        Device::Cuda(_) => true,
        Device::Mps | Device::Vulkan => false,
    }
}

/// The number format of inference (test, the API, evaluation during training) in libtorch,
/// and of the layers INT8 leaves unquantised: `int8` computes the rest as `auto` does.
pub fn inference_kind(precision: Precision, device: Device) -> Kind {
    match precision {
        Precision::Fp32 => Kind::Float,
        Precision::Bf16 => Kind::BFloat16,
        Precision::Auto | Precision::Int8 if has_native_bf16(device) => Kind::BFloat16,
        Precision::Auto | Precision::Int8 => Kind::Float,
    }
}

/// The number format of the training step's forward pass (weights stay fp32).
pub fn training_kind(system: &SystemConfig, device: Device) -> Kind {
    match system.precision {
        Precision::Fp32 => Kind::Float,
        Precision::Bf16 => Kind::BFloat16,
        Precision::Auto | Precision::Int8 if system.mixed_precision && has_native_bf16(device) => Kind::BFloat16,
        Precision::Auto | Precision::Int8 => Kind::Float,
    }
}

pub fn describe_device(device: Device) -> String {
    match device {
        Device::Cpu => format!("cpu ({} threads)", tch::get_num_threads()),
        Device::Cuda(i) => format!("cuda:{i}"),
        Device::Mps => "mps".into(),
        Device::Vulkan => "vulkan".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_devices_fail_clearly() {
        assert_eq!(resolve_device(DeviceChoice::Cpu).unwrap(), Device::Cpu);
        let count = tch::Cuda::device_count() as usize;
        let err = resolve_device(DeviceChoice::Cuda(Some(count))).unwrap_err().to_string();
        assert!(err.contains(&format!("cuda:{count}")) && err.contains("CUDA device"), "{err}");
        let auto = resolve_device(DeviceChoice::Auto).unwrap();
        assert_eq!(matches!(auto, Device::Cuda(_)), tch::Cuda::is_available());
    }

    /// The CUDA half of libtorch loads beside the CPU half (where the wheel ships one) without
    /// disturbing CPU work; a library that is not there is named in the error.
    #[test]
    fn libtorch_cuda_loads_from_the_running_libtorch() {
        let dir = libtorch_lib_dir().expect("libtorch_cpu's folder");
        assert!(dir.join("libtorch_cpu.so").is_file(), "{}", dir.display());
        let cuda = dir.join("libtorch_cuda.so");
        if cuda.is_file() {
            load_library_globally(&cuda).unwrap();
            let t = tch::Tensor::from_slice(&[1.0f32, 2.0]);
            assert_eq!((&t * 2).sum(tch::Kind::Float).double_value(&[]), 6.0);
        }
        let err = load_library_globally(&dir.join("libtorch_nothing.so")).unwrap_err();
        assert!(err.contains("libtorch_nothing.so"), "{err}");
        allow_tf32_convolutions(true);
    }
}
