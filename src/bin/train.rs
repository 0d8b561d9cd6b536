//! `train`: trains the classifier as a config says (main.py).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use imgtype::Config;

#[derive(Parser)]
#[command(about = "Train the EfficientNet-B0 image-type classifier; results go to results/run_YYYYMMDD_HHMMSS_<id>/")]
struct Args {
    /// Config file (defaults to ./config.json when present, else built-in defaults)
    #[arg(long)]
    config: Option<PathBuf>,
    /// Short run: 5 epochs, patience 3, 2 frozen epochs
    #[arg(long)]
    quick_test: bool,
    /// Folder with train_data.csv, validation_data.csv, test_data.csv (overrides paths.data_dir)
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Overrides training.epochs
    #[arg(long)]
    epochs: Option<usize>,
    /// Overrides training.batch_size
    #[arg(long)]
    batch_size: Option<usize>,
    /// Overrides system.device (auto, cpu, cuda, cuda:N, mps)
    #[arg(long)]
    device: Option<String>,
}

fn main() {
    let args = Args::parse();
    imgtype::logging::init("info");
    imgtype::cli::run_main(|| run(args));
}

fn run(args: Args) -> Result<()> {
    let config_path = args.config.clone().or_else(|| {
        let default = PathBuf::from("config.json");
        default.exists().then_some(default)
    });
    let mut config = match &config_path {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if args.quick_test {
        config.training.epochs = 5;
        config.training.patience = 3;
        config.model.freeze_backbone_epochs = 2;
    }
    if let Some(dir) = args.data_dir {
        config.paths.data_dir = dir;
    }
    if let Some(epochs) = args.epochs {
        config.training.epochs = epochs;
    }
    if let Some(batch_size) = args.batch_size {
        config.training.batch_size = batch_size;
    }
    if let Some(device) = args.device {
        config.system.device = device;
    }
    config.validate().context("invalid setting after command-line overrides")?;
    let outcome = imgtype::train::run_training(&config, config_path.as_deref())?;
    println!("run folder: {}", outcome.run_dir.display());
    if let Some(model) = &outcome.best_model {
        println!("best model: {} (epoch {})", model.display(), outcome.best_epoch.unwrap_or(0));
    }
    println!(
        "test accuracy: {:.4}  F1 macro: {:.4}  F1 weighted: {:.4}",
        outcome.test_metrics.accuracy, outcome.test_metrics.macro_avg.f1, outcome.test_metrics.weighted_avg.f1
    );
    Ok(())
}
