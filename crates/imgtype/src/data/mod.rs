//! Data, under the names the rest of this crate and the binaries use: image I/O from
//! `imgtype-images`, the product CSV, splits and duplicates from `imgtype-dataset`, and
//! training's augmentation (here: it runs on tensors).

pub mod augment;

pub use imgtype_dataset::{csv_records, duplicates, folds, near_duplicates, product, relabel, split, union_find};
pub use imgtype_images::{batch, decode, image, records, source};
pub use imgtype_images::{read_split_csv, split_records, ImageRecord, ImageSource, SourcePolicy, SplitName};
