//! Data: the product CSV, leak-free splits, split CSVs, image decoding and batching.

#[cfg(feature = "train")]
pub mod augment;
pub mod batch;
pub mod csv_records;
pub mod decode;
pub mod duplicates;
pub mod image;
pub mod near_duplicates;
mod open;
mod pillow_compat;
mod policy;
pub mod product;
pub mod records;
pub mod relabel;
#[cfg(feature = "remote")]
mod remote;
pub mod source;
pub mod split;
pub mod union_find;

pub use records::{read_split_csv, ImageRecord, SplitName};
pub use source::{ImageSource, SourcePolicy};
