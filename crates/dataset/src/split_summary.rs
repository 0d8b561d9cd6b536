//! What `divide` reports: `data_split_summary.json` and the tables it prints.

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

/// The per-split tables `divide` prints.
pub fn format_summary_tables(summary: &SplitSummary) -> String {
    let splits = ["train", "validation", "test"];
    let mut out = String::new();
    let mut table = |title: &str, dist: &BTreeMap<String, BTreeMap<String, usize>>| {
        let mut keys: Vec<&String> = dist.values().flat_map(|m| m.keys()).collect();
        keys.sort();
        keys.dedup();
        out.push_str(&format!("\n{title}\n{:<20}", ""));
        for s in splits {
            out.push_str(&format!("{s:>12}"));
        }
        out.push('\n');
        for k in keys {
            out.push_str(&format!("{:<20}", k.replace(|c: char| c.is_control(), " ")));
            for s in splits {
                out.push_str(&format!("{:>12}", dist.get(s).and_then(|m| m.get(k)).copied().unwrap_or(0)));
            }
            out.push('\n');
        }
    };
    table("images per type", &summary.image_type_distribution);
    table("products per category", &summary.category_distribution);
    out.push_str(&format!("\n{:<20}", "total images"));
    for s in splits {
        out.push_str(&format!("{:>12}", summary.data_counts[s].images));
    }
    out.push_str(&format!("\n{:<20}", "total products"));
    for s in splits {
        out.push_str(&format!("{:>12}", summary.data_counts[s].products));
    }
    out.push('\n');
    out
}
