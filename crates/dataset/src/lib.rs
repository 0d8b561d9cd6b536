//! What `divide` does, with no libtorch: CSVs we did not write read so that a malformed row
//! costs only itself (`csv_records`), the product CSV with its products' parts and image
//! records (`product`), reviewed corrections (`relabel`), and the leak-free split (`split`),
//! in which products sharing a photo are linked by `duplicates` (near-duplicates by
//! `near_duplicates`, confirmed by `photo_match`; clusters by `union_find`) and kept in one split.
//! And the same rule dealt into folds for `train --cross-validate` (`folds`, in a folder laid out
//! as `cv_folder` says), whose held-out
//! probabilities tell which labels look wrong (`label_issues`: confident learning).

pub mod csv_partial;
pub mod csv_records;
pub mod cv_folder;
pub mod duplicates;
pub mod folds;
pub mod label_issues;
pub mod near_duplicates;
pub mod photo_match;
pub mod product;
pub mod relabel;
pub mod shards;
pub mod split;
pub mod split_summary;
pub mod union_find;
