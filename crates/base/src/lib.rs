//! What every part of the image-type classifier stands on, and nothing that links libtorch or
//! decodes an image: the configuration (`config`), image keys read once (`keys`), the file
//! rules (`fsutil`: the one opener of files to read, atomic writes, folder locks), stopping
//! early (`stop`), progress reports (`progress`) and run names (`rundir`).

pub mod config;
pub mod fsutil;
pub mod keys;
pub mod progress;
pub mod rundir;
pub mod stop;

pub use config::Config;
pub use stop::{Outcome, StopFlag, StopReason, Stopped};

/// Keeps freed memory in the process for reuse. libtorch frees and reallocates the same
/// large activation buffers at every step; with glibc's defaults they go back to the kernel
/// each time and come back one page fault per page (measured here: 15–20% of a training
/// step, 10% of a `test` run). This sets glibc's mmap threshold to its fixed maximum (32 MiB)
/// and stops trimming the heap; peak memory is unchanged. Process-wide, so the binaries call
/// it first thing; an embedding program may too.
pub fn tune_memory_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
