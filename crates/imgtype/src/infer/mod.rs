//! Inference: the prediction API and [`Predictor`] (from `imgtype-infer`, re-exported here),
//! and the `test` binary's file-writing modes: a CSV of images, the whole dataset, shards and
//! their merge, the wrong-prediction reports, `--fit-thresholds` and `--int8-calibrate`.

mod columns;
mod csv_mode;
mod dataset_mode;
mod int8;
mod merge;
mod prefetch;
mod thresholds;
mod timing;
mod wrong_predictions;

use imgtype_dataset::shards;

pub use imgtype_infer::*;

pub use csv_mode::{run_csv, CsvReport, CsvRequest};
pub use dataset_mode::{run_dataset, DatasetReport};
pub use int8::{
    calibrate_model, calibration_records, int8_agreement, Int8Agreement, Int8Calibration, CALIBRATION_IMAGES,
};
pub use merge::merge_shards;
pub use shards::Shard;
pub use thresholds::{fit_thresholds, ThresholdFit};
pub use timing::TimingSummary;
