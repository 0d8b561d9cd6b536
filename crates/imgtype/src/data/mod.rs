//! Data: the product CSV, leak-free splits, split CSVs, image decoding and batching.

pub mod augment;
pub mod batch;
pub mod image;
pub mod product;
pub mod records;
pub mod source;
pub mod split;

pub use records::{read_split_csv, ImageRecord, SplitName};
pub use source::ImageSource;
