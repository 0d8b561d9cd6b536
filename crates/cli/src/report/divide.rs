//! What `divide` prints: the split's tables, then one line per thing a user should know.

use std::collections::BTreeMap;
use std::path::Path;

use imgtype_dataset::split::SplitSummary;

/// Prints `summary` of a split written to `output_dir`.
pub fn print_split(summary: &SplitSummary, output_dir: &Path) {
    print!("{}", summary_tables(summary));
    if !summary.skipped_rows.is_empty() {
        println!(
            "\n{} malformed row(s) skipped: listed, with why, under skipped_rows in data_split_summary.json",
            summary.skipped_rows.len()
        );
    }
    if let Some(relabel) = &summary.relabel {
        println!(
            "\n{}: {} image(s) relabelled, {} dropped, {} row(s) matched no image (listed in data_split_summary.json)",
            relabel.corrections_file,
            relabel.relabelled.len(),
            relabel.dropped.len(),
            relabel.unmatched.len()
        );
    }
    if let Some(duplicates) = &summary.duplicates {
        println!(
            "\nduplicates: {} group(s) of the same photo ({} images), {} across products (kept in one split), {} label conflict(s); listed in {}",
            duplicates.groups,
            duplicates.images_in_groups,
            duplicates.groups_across_products,
            duplicates.label_conflicts.len(),
            output_dir.join("duplicates.csv").display()
        );
        for conflict in &duplicates.label_conflicts {
            println!("  label conflict in group {}: {}", conflict.group, conflict.image_types.join(" vs "));
        }
    }
    let leak_free = if summary.duplicates.is_some() { "no product and no duplicate photo" } else { "no product" };
    println!("\n{leak_free} is in two splits; files written to {}", output_dir.display());
}

/// The per-split tables `divide` prints.
fn summary_tables(summary: &SplitSummary) -> String {
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
