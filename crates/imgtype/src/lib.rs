//! Core library of the image-type classifier: config, data, model, train, eval, infer.
//! The `divide`, `train` and `test` binaries are thin front ends over it.

pub mod cli;
pub mod config;
pub mod data;
pub mod device;
pub mod eval;
pub mod fsutil;
pub mod infer;
pub mod logging;
pub mod loss;
pub mod model;
pub mod progress;
pub mod report;
pub mod rundir;
pub mod tensorboard;
pub mod train;

pub use config::Config;
pub use model::ImageTypeClassifier;
