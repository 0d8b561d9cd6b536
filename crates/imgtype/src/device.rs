//! `system.device`: the device a [`DeviceChoice`] names, on this machine.

use anyhow::{bail, Result};
use tch::Device;

use crate::config::DeviceChoice;

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
