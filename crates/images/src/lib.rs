//! Image I/O, with no libtorch: where image bytes come from (`source`: local files opened and
//! checked by `open`, CDN keys and URLs fetched by `remote`, both under the rules of
//! `policy`), defensive decoding (`decode`: size limits, truncation, panics, the JPEG scan
//! limit, the process-wide budget of decoded pixels in flight, reduced-DCT-scale JPEG
//! decoding, cheap readability screening; `pillow_compat`: files Pillow reads that the image
//! crate refuses, with `tiff_strips` for fax and LZMA TIFFs), resizing and the ImageNet normalisation constants (`image`), the split
//! CSVs' records (`records`) and parallel loading (`batch`).

pub mod batch;
pub mod decode;
pub mod image;
mod open;
mod pillow_compat;
mod policy;
pub mod records;
#[cfg(feature = "remote")]
mod remote;
pub mod source;
mod tiff_strips;

pub use records::{read_split_csv, split_records, ImageRecord, SplitName};
pub use source::{ImageSource, SourcePolicy};
