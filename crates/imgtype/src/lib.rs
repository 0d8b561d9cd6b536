//! Core library of the image-type classifier: config, data, model, train, eval, infer.
//! The `divide`, `train` and `test` binaries are thin front ends over it. See
//! ARCHITECTURE.md for the pipeline and where each kind of change goes.
//!
//! Cargo features: `train` (training), `batch` (the `test` binary's file-writing modes),
//! `remote` (images over HTTP(S)), `plots` (PNG pictures; implied by the first two). An
//! embedder of [`infer::ImageClassificationApi`] can turn them all off.

pub mod config;
pub mod data;
pub mod device;
pub mod eval;
pub mod fsutil;
pub mod infer;
pub mod loss;
pub mod model;
pub mod progress;
#[cfg(feature = "plots")]
pub mod report;
pub mod rundir;
pub mod stop;
#[cfg(feature = "train")]
pub mod train;

pub use config::Config;
pub use model::ImageTypeClassifier;
pub use stop::{Interrupted, StopFlag};
