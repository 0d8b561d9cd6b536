//! What `divide` reports: `data_split_summary.json` (printed as tables by the front end).

use std::collections::BTreeMap;

use serde::Serialize;

use super::csv_records::SkippedRow;
use super::duplicates::DuplicateSummary;
use super::relabel::RelabelSummary;

#[derive(Debug, Serialize)]
pub struct SplitSummary {
    pub split_info: SplitInfo,
    pub data_counts: BTreeMap<String, Counts>,
    pub file_paths: BTreeMap<String, String>,
    pub categories: Vec<String>,
    pub image_type_distribution: BTreeMap<String, BTreeMap<String, usize>>,
    pub category_distribution: BTreeMap<String, BTreeMap<String, usize>>,
    pub dropped_images: Vec<DroppedImage>,
    /// Rows of the product CSV and the corrections file left out as malformed.
    pub skipped_rows: Vec<SkippedRow>,
    /// What `--relabel` changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relabel: Option<RelabelSummary>,
    /// What `--find-duplicates` found (the images are listed in `duplicates.csv`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicates: Option<DuplicateSummary>,
}

#[derive(Debug, Serialize)]
pub struct SplitInfo {
    pub created_at: String,
    pub source_file: String,
    pub random_state: u64,
    pub ratios: BTreeMap<String, f64>,
    pub split_method: String,
}

#[derive(Debug, Serialize)]
pub struct Counts {
    pub images: usize,
    pub products: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct DroppedImage {
    pub product_id: String,
    pub image_path: String,
    pub reason: String,
}
