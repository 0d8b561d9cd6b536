//! `system.device`: auto (CUDA, then Apple MPS, then CPU) or an explicit device.

use anyhow::{bail, Result};
use tch::Device;

/// The device a config names, before checking what this machine has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceRequest {
    Auto,
    Cpu,
    Cuda(usize),
    Mps,
}

pub fn parse_device_name(name: &str) -> Result<DeviceRequest> {
    let lower = name.trim().to_ascii_lowercase();
    Ok(match lower.as_str() {
        "auto" => DeviceRequest::Auto,
        "cpu" => DeviceRequest::Cpu,
        "cuda" | "gpu" => DeviceRequest::Cuda(0),
        "mps" => DeviceRequest::Mps,
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(index)) => DeviceRequest::Cuda(index),
            _ => bail!("unknown device `{name}`; use auto, cpu, cuda, cuda:N or mps"),
        },
    })
}

/// Resolves a device name to a device this machine has, failing clearly when it has not.
pub fn resolve_device(name: &str) -> Result<Device> {
    match parse_device_name(name)? {
        DeviceRequest::Auto => Ok(if tch::Cuda::is_available() {
            Device::Cuda(0)
        } else if tch::utils::has_mps() {
            Device::Mps
        } else {
            Device::Cpu
        }),
        DeviceRequest::Cpu => Ok(Device::Cpu),
        DeviceRequest::Cuda(index) => {
            let count = tch::Cuda::device_count() as usize;
            if index >= count {
                bail!("system.device `{name}` requested, but this machine has {count} CUDA device(s)");
            }
            Ok(Device::Cuda(index))
        }
        DeviceRequest::Mps => {
            if !tch::utils::has_mps() {
                bail!("system.device `mps` requested, but Apple MPS is not available here");
            }
            Ok(Device::Mps)
        }
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
    fn names_parse_and_unavailable_devices_fail_clearly() {
        assert_eq!(parse_device_name("CUDA:2").unwrap(), DeviceRequest::Cuda(2));
        assert_eq!(parse_device_name("cuda").unwrap(), DeviceRequest::Cuda(0));
        assert!(parse_device_name("cuda:x").is_err());
        assert_eq!(resolve_device("cpu").unwrap(), Device::Cpu);
        let count = tch::Cuda::device_count() as usize;
        let err = resolve_device(&format!("cuda:{count}")).unwrap_err().to_string();
        assert!(err.contains(&format!("cuda:{count}")) && err.contains("CUDA device"), "{err}");
        let auto = resolve_device("auto").unwrap();
        assert_eq!(matches!(auto, Device::Cuda(_)), tch::Cuda::is_available());
    }
}
