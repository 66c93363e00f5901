//! GPU discovery through cudarc's dynamically loaded driver API.
//!
//! The CUDA driver library is opened at run time, so a machine without NVIDIA software builds and
//! runs this code and simply reports [`GpuDiscovery::NoDriver`].

use serde::{Deserialize, Serialize};

/// One GPU as the driver reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuInfo {
    pub ordinal: u32,
    pub name: String,
    pub memory_bytes: u64,
    /// Compute capability as (major, minor), e.g. (9, 0) for Hopper.
    pub compute_capability: (u32, u32),
}

/// What discovery found: GPUs, or the reason there are none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GpuDiscovery {
    /// The driver loaded; the list may be empty.
    Found(Vec<GpuInfo>),
    /// No CUDA driver library could be loaded on this machine.
    NoDriver,
    /// The driver loaded but failed; the message says how.
    DriverError(String),
}

impl GpuDiscovery {
    /// The GPUs found, empty when there is no driver.
    pub fn gpus(&self) -> &[GpuInfo] {
        match self {
            GpuDiscovery::Found(gpus) => gpus,
            _ => &[],
        }
    }

    /// A short human-readable state, e.g. `"2 GPUs"` or `"no CUDA driver"`.
    pub fn summary(&self) -> String {
        match self {
            GpuDiscovery::Found(gpus) if gpus.is_empty() => "driver, 0 GPUs".to_string(),
            GpuDiscovery::Found(gpus) => gpus
                .iter()
                .map(|g| {
                    format!(
                        "{} ({} GiB, sm_{}{})",
                        g.name,
                        g.memory_bytes >> 30,
                        g.compute_capability.0,
                        g.compute_capability.1
                    )
                })
                .collect::<Vec<_>>()
                .join(", "),
            GpuDiscovery::NoDriver => "no CUDA driver".to_string(),
            GpuDiscovery::DriverError(e) => format!("CUDA driver error: {e}"),
        }
    }
}

/// Asks the CUDA driver, if one can be loaded, which GPUs this machine has.
pub fn discover_gpus() -> GpuDiscovery {
    use cudarc::driver::{result, sys};

    // SAFETY: `is_culib_present` only tries to dlopen the driver library and reports whether it
    // could; it touches no CUDA state.
    if !unsafe { sys::is_culib_present() } {
        return GpuDiscovery::NoDriver;
    }
    let describe = |e: result::DriverError| format!("{e:?}");
    if let Err(e) = result::init() {
        return GpuDiscovery::DriverError(describe(e));
    }
    let count = match result::device::get_count() {
        Ok(n) => n,
        Err(e) => return GpuDiscovery::DriverError(describe(e)),
    };
    let mut gpus = Vec::new();
    for ordinal in 0..count {
        let info = (|| -> Result<GpuInfo, result::DriverError> {
            let dev = result::device::get(ordinal)?;
            let name = result::device::get_name(dev)?;
            // SAFETY: `dev` is a valid device handle returned by the driver just above.
            let (memory, major, minor) = unsafe {
                (
                    result::device::total_mem(dev)?,
                    result::device::get_attribute(
                        dev,
                        sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
                    )?,
                    result::device::get_attribute(
                        dev,
                        sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
                    )?,
                )
            };
            Ok(GpuInfo {
                ordinal: ordinal as u32,
                name,
                memory_bytes: memory as u64,
                compute_capability: (major.max(0) as u32, minor.max(0) as u32),
            })
        })();
        match info {
            Ok(g) => gpus.push(g),
            Err(e) => return GpuDiscovery::DriverError(describe(e)),
        }
    }
    GpuDiscovery::Found(gpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_never_panics_and_summarises() {
        let found = discover_gpus();
        let summary = found.summary();
        assert!(!summary.is_empty());
        if matches!(found, GpuDiscovery::NoDriver) {
            assert!(found.gpus().is_empty());
            assert_eq!(summary, "no CUDA driver");
        }
    }
}
