//! Core library of the image-type classifier: config, data, model, train, eval, infer.
//! The `divide`, `train` and `test` binaries are thin front ends over it. See
//! ARCHITECTURE.md for the pipeline and where each kind of change goes.
//!
//! Cargo features: `train` (training), `batch` (the `test` binary's file-writing modes),
//! `remote` (images over HTTP(S)), `plots` (PNG pictures; implied by the first two). An
//! embedder of [`infer::ImageClassificationApi`] can turn them all off.

pub mod config;
#[cfg(feature = "train")]
pub mod crossval;
pub mod data;
pub mod device;
pub mod eval;
pub mod forksafe;
pub mod fsutil;
pub mod infer;
pub mod keys;
pub mod loss;
pub mod model;
pub mod progress;
#[cfg(feature = "plots")]
pub mod report;
pub mod rundir;
pub mod score;
pub mod stop;
#[cfg(feature = "train")]
pub mod sweep;
pub mod threads;
#[cfg(feature = "train")]
pub mod train;

pub use config::Config;

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
pub use model::ImageTypeClassifier;
pub use stop::{Outcome, StopFlag, StopReason, Stopped};
