//! `system.device`: the device a [`DeviceChoice`] names, on this machine; and the number
//! format (`system.precision`) the model runs in on it.

use anyhow::{bail, Result};
use tch::{Device, Kind};

use crate::config::{DeviceChoice, Precision, SystemConfig};

/// Resolves a device choice to a device this machine has, failing clearly when it has not.
pub fn resolve_device(choice: DeviceChoice) -> Result<Device> {
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

/// The number format of inference (test, the API, evaluation during training).
pub fn inference_kind(precision: Precision, device: Device) -> Kind {
    match precision {
        Precision::Fp32 => Kind::Float,
        Precision::Bf16 => Kind::BFloat16,
        Precision::Auto if has_native_bf16(device) => Kind::BFloat16,
        Precision::Auto => Kind::Float,
    }
}

/// The number format of the training step's forward pass (weights stay fp32).
pub fn training_kind(system: &SystemConfig, device: Device) -> Kind {
    match system.precision {
        Precision::Fp32 => Kind::Float,
        Precision::Bf16 => Kind::BFloat16,
        Precision::Auto if system.mixed_precision && has_native_bf16(device) => Kind::BFloat16,
        Precision::Auto => Kind::Float,
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
}
