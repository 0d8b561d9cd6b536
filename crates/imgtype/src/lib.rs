//! Training and the file-writing work of the image-type classifier (train, eval, loss,
//! report, sweep, crossval, the `test` binary's file modes), over the lower crates:
//! `imgtype-base` (config, file rules), `imgtype-images` (image I/O), `imgtype-dataset`
//! (what `divide` does), `imgtype-model` (networks, model files, devices) and
//! `imgtype-infer` (scoring, the prediction API). Their modules are re-exported here under
//! the names the binaries and tests use (`imgtype::config`, `imgtype::data::split`, ...). See
//! ARCHITECTURE.md for the pipeline and where each kind of change goes.

pub mod crossval;
pub mod data;
pub mod eval;
pub mod infer;
pub mod loss;
pub mod report;
pub mod sweep;
pub mod train;

pub use imgtype_base::{config, fsutil, keys, progress, rundir, stop, tune_memory_allocator};
pub use imgtype_base::{Config, Outcome, StopFlag, StopReason, Stopped};
pub use imgtype_infer::{forksafe, score};
pub use imgtype_model as model;
pub use imgtype_model::{device, threads, ImageTypeClassifier};
