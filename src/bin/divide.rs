//! `divide`: product CSV → leak-free train / validation / test split CSVs (divide_data.py).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use imgtype_base::Config;
use imgtype_cli::{usage_error, Ending};
use imgtype_dataset::split::{check_ratios, divide, DivideOptions};

#[derive(Parser)]
#[command(
    about = "Split the product CSV into train/validation/test image lists, by product and stratified by category"
)]
struct Args {
    /// Config whose settings the options below default to (data.csv_path, paths.data_dir, the
    /// data.*_ratio keys, data.random_state, data.base_image_path), as `train` reads it;
    /// default ./config.json when present, else the built-in defaults. Options override it;
    /// relative paths in it are from the working folder, as for `train`.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Product-level CSV (columns id, category_name, main_image, back_image, text_tag_image,
    /// neck_tag_image, other) [default: the config's data.csv_path, image_data.csv]
    #[arg(long)]
    input_file: Option<PathBuf>,
    /// Folder for train_data.csv, validation_data.csv, test_data.csv and
    /// data_split_summary.json [default: the config's paths.data_dir, data]
    #[arg(long)]
    output_dir: Option<PathBuf>,
    /// [default: the config's data.train_ratio, 0.8]
    #[arg(long, value_parser = ratio)]
    train_ratio: Option<f64>,
    /// [default: the config's data.val_ratio, 0.1]
    #[arg(long, value_parser = ratio)]
    val_ratio: Option<f64>,
    /// [default: the config's data.test_ratio, 0.1]
    #[arg(long, value_parser = ratio)]
    test_ratio: Option<f64>,
    /// Seed: the same value gives byte-identical split files [default: the config's
    /// data.random_state, 2025]
    #[arg(long)]
    random_state: Option<u64>,
    /// Decode every image and leave out the ones that are missing or broken
    #[arg(long)]
    validate_images: bool,
    /// Folder that relative image paths are resolved against (with --validate-images or
    /// --find-duplicates) [default: the config's data.base_image_path]
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
    /// With --find-duplicates: the largest structure-hash distance (bits of 63) of a candidate
    /// pair, each then confirmed by its fine detail; 0 finds exact copies only
    #[arg(long, default_value_t = imgtype_dataset::near_duplicates::DEFAULT_MAX_BITS, value_name = "BITS",
          value_parser = clap::value_parser!(u32).range(0..=63))]
    duplicate_distance: u32,
}

fn main() -> ExitCode {
    let args = Args::parse();
    imgtype_cli::init_logging();
    imgtype_cli::run_main(|| run(args))
}

fn run(args: Args) -> Result<Ending> {
    let (config, config_file) = Config::load_or_default(args.config.as_deref())?;
    let ratios = ratios(&args, &config, config_file.as_deref())?;
    let options = DivideOptions {
        input_file: args.input_file.unwrap_or(config.data.csv_path),
        output_dir: args.output_dir.unwrap_or(config.paths.data_dir),
        train_ratio: ratios[0],
        val_ratio: ratios[1],
        test_ratio: ratios[2],
        random_state: args.random_state.unwrap_or(config.data.random_state),
        validate_images: args.validate_images,
        image_base_path: args.image_base_path.or(config.data.base_image_path),
        relabel: args.relabel,
        find_duplicates: args.find_duplicates.then_some(args.duplicate_distance),
        config_file,
    };
    let summary = divide(&options)?;
    imgtype_cli::report::divide::print_split(&summary, &options.output_dir);
    Ok(Ending::Done)
}

/// A ratio on the command line: a number from 0 to 1.
fn ratio(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("a ratio is a number from 0 to 1, got `{text}`")),
    }
}

/// The three ratios, each from its option or else the config; they must sum to 1. When they
/// do not, the message says where each came from: all three options are a usage error.
fn ratios(args: &Args, config: &Config, config_file: Option<&Path>) -> Result<[f64; 3]> {
    let from_config = config_file.map(|f| f.display().to_string()).unwrap_or_else(|| "the default".into());
    let pick = |option: Option<f64>, flag: &str, key: &str, value: f64| match option {
        Some(r) => (r, format!("{r} ({flag})")),
        None => (value, format!("{value} ({from_config}'s data.{key})")),
    };
    let picked = [
        pick(args.train_ratio, "--train-ratio", "train_ratio", config.data.train_ratio),
        pick(args.val_ratio, "--val-ratio", "val_ratio", config.data.val_ratio),
        pick(args.test_ratio, "--test-ratio", "test_ratio", config.data.test_ratio),
    ];
    let ratios = picked.each_ref().map(|(r, _)| *r);
    // The library's rule decides (each ratio in 0..1 and their sum 1); this says where they came from.
    if check_ratios(ratios[0], ratios[1], ratios[2]).is_err() {
        let shown: Vec<&str> = picked.iter().map(|(_, shown)| shown.as_str()).collect();
        let message = format!("the ratios must sum to 1, got {}", shown.join(" + "));
        let all_given = args.train_ratio.is_some() && args.val_ratio.is_some() && args.test_ratio.is_some();
        return Err(if all_given { usage_error(message) } else { anyhow::anyhow!(message) });
    }
    Ok(ratios)
}
