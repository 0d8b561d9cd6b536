//! `divide`: product CSV → leak-free train / validation / test split CSVs (divide_data.py).

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use imgtype_dataset::split::{divide, format_summary_tables, DivideOptions};

#[derive(Parser)]
#[command(
    about = "Split the product CSV into train/validation/test image lists, by product and stratified by category"
)]
struct Args {
    /// Product-level CSV (columns id, category_name, main_image, back_image, text_tag_image, neck_tag_image, other)
    #[arg(long, default_value = "image_data.csv")]
    input_file: PathBuf,
    /// Folder for train_data.csv, validation_data.csv, test_data.csv and data_split_summary.json
    #[arg(long, default_value = "data")]
    output_dir: PathBuf,
    #[arg(long, default_value_t = 0.8)]
    train_ratio: f64,
    #[arg(long, default_value_t = 0.1)]
    val_ratio: f64,
    #[arg(long, default_value_t = 0.1)]
    test_ratio: f64,
    /// Seed: the same value gives byte-identical split files
    #[arg(long, default_value_t = 2025)]
    random_state: u64,
    /// Decode every image and leave out the ones that are missing or broken
    #[arg(long)]
    validate_images: bool,
    /// Folder that relative image paths are resolved against (with --validate-images or --find-duplicates)
    #[arg(long)]
    image_base_path: Option<PathBuf>,
    /// Reviewed corrections to apply: a CSV with image_path and image_type (a class, or
    /// `drop` to leave the image out); the product CSV is not changed
    #[arg(long, value_name = "CORRECTIONS.csv")]
    relabel: Option<PathBuf>,
    /// Find photos filed more than once (exact copies and near-duplicates: re-encoded, resized,
    /// slightly cropped or brightened), under one product or several: their products go to one
    /// split; OUTPUT_DIR/duplicates.csv lists them, label conflicts too
    #[arg(long)]
    find_duplicates: bool,
    /// With --find-duplicates: the largest structure-hash distance (bits of 63) of a
    /// near-duplicate; 0 finds exact copies only
    #[arg(long, default_value_t = imgtype_dataset::near_duplicates::DEFAULT_MAX_BITS, value_name = "BITS",
          value_parser = clap::value_parser!(u32).range(0..=63))]
    duplicate_distance: u32,
}

fn main() {
    let args = Args::parse();
    imgtype_cli::init_logging();
    imgtype_cli::run_main(|| run(args));
}

fn run(args: Args) -> Result<()> {
    let summary = divide(&DivideOptions {
        input_file: args.input_file,
        output_dir: args.output_dir.clone(),
        train_ratio: args.train_ratio,
        val_ratio: args.val_ratio,
        test_ratio: args.test_ratio,
        random_state: args.random_state,
        validate_images: args.validate_images,
        image_base_path: args.image_base_path,
        relabel: args.relabel,
        find_duplicates: args.find_duplicates.then_some(args.duplicate_distance),
    })?;
    print!("{}", format_summary_tables(&summary));
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
            args.output_dir.join("duplicates.csv").display()
        );
        for conflict in &duplicates.label_conflicts {
            println!("  label conflict in group {}: {}", conflict.group, conflict.image_types.join(" vs "));
        }
    }
    let leak_free = if args.find_duplicates { "no product and no duplicate photo" } else { "no product" };
    println!("\n{leak_free} is in two splits; files written to {}", args.output_dir.display());
    Ok(())
}
