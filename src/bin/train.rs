//! `train`: trains the classifier as a config says (main.py).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use imgtype::config::DeviceChoice;
use imgtype::train::{RunFolder, TrainOptions};
use imgtype::Outcome;
use imgtype::{Config, StopFlag};

#[derive(Parser)]
#[command(about = "Train the EfficientNet-B0 image-type classifier; results go to results/run_YYYYMMDD_HHMMSS_<id>/")]
struct Args {
    /// Config file (defaults to ./config.json when present, else built-in defaults)
    #[arg(long, conflicts_with = "resume")]
    config: Option<PathBuf>,
    /// Continue an interrupted run from its latest checkpoint, in its own folder
    #[arg(long, value_name = "RUN_DIR")]
    resume: Option<PathBuf>,
    /// Short run: 5 epochs, patience 3, 2 frozen epochs
    #[arg(long, conflicts_with = "resume")]
    quick_test: bool,
    /// Folder with train_data.csv, validation_data.csv, test_data.csv (overrides paths.data_dir)
    #[arg(long, conflicts_with = "resume")]
    data_dir: Option<PathBuf>,
    /// Overrides training.epochs
    #[arg(long, conflicts_with = "resume")]
    epochs: Option<usize>,
    /// Overrides training.batch_size
    #[arg(long, conflicts_with = "resume")]
    batch_size: Option<usize>,
    /// Overrides system.device (auto, cpu, cuda, cuda:N, mps)
    #[arg(long, conflicts_with = "resume")]
    device: Option<String>,
    /// Stop after this many epochs of this invocation, resumably (for time-limited job slots)
    #[arg(long, value_name = "EPOCHS", conflicts_with = "sweep")]
    stop_after: Option<usize>,
    /// Run the experiments of a sweep file (the Python system's tuning script); running the
    /// same command again skips finished experiments and resumes an interrupted one
    #[arg(long, value_name = "SWEEP_JSON", conflicts_with_all = ["config", "resume", "summarize", "batch_size", "data_dir", "device"])]
    sweep: Option<PathBuf>,
    /// With --sweep: its folder (default tuning_results/<sweep file name>/)
    #[arg(long, value_name = "DIR", requires = "sweep")]
    sweep_dir: Option<PathBuf>,
    /// With --sweep: run only experiments i with i mod N = K (a job array's member K of N)
    #[arg(long, value_name = "K/N", requires = "sweep")]
    member: Option<imgtype::sweep::Member>,
    /// Build a sweep's results tables, best_config.json and picture from what has finished
    #[arg(long, value_name = "SWEEP_DIR", conflicts_with_all = ["config", "resume", "sweep"])]
    summarize: Option<PathBuf>,
}

fn main() {
    let args = Args::parse();
    imgtype_cli::init_logging();
    let stop = imgtype_cli::stop_on_signals("finishing the current step, then saving a checkpoint");
    imgtype_cli::run_main(|| run(args, stop));
}

fn run(args: Args, stop: StopFlag) -> Result<()> {
    if let Some(dir) = &args.summarize {
        return summarize(dir);
    }
    if let Some(sweep) = &args.sweep {
        return run_sweep(sweep, &args, stop);
    }
    let folder = match &args.resume {
        Some(run_dir) => RunFolder::reopen(run_dir)?,
        None => {
            let (config, config_path) = effective_config(&args)?;
            RunFolder::create(&config, config_path.as_deref())?
        }
    };
    imgtype_cli::attach_run_logs(&folder.logs_dir(), folder.config().logging.log_level)?;
    let options = TrainOptions { stop_after_epochs: args.stop_after, stop };
    match imgtype::train::train(folder, &options)? {
        Outcome::Finished(outcome) => {
            println!("run folder: {}", outcome.run_dir.display());
            if let Some(model) = &outcome.best_model {
                println!("best model: {} (epoch {})", model.display(), outcome.best_epoch.unwrap_or(0));
            }
            println!(
                "test accuracy: {:.4}  F1 macro: {:.4}  F1 weighted: {:.4}",
                outcome.test_metrics.accuracy, outcome.test_metrics.macro_avg.f1, outcome.test_metrics.weighted_avg.f1
            );
        }
        Outcome::Stopped(stopped) => {
            if let Some(run_dir) = &stopped.kept_in {
                println!("run folder: {}", run_dir.display());
            }
            println!("{stopped}");
            imgtype_cli::exit_if_interrupted(&stopped);
        }
    }
    Ok(())
}

fn run_sweep(sweep: &std::path::Path, args: &Args, stop: StopFlag) -> Result<()> {
    use imgtype::sweep::{EpochsOverride, SweepOptions, SweepReport};
    let epochs = match (args.quick_test, args.epochs) {
        (true, _) => Some(EpochsOverride::QUICK_TEST),
        (false, Some(n)) => Some(EpochsOverride(n)),
        (false, None) => None,
    };
    let options = SweepOptions {
        epochs,
        member: args.member,
        sweep_dir: args.sweep_dir.clone(),
        train: TrainOptions { stop_after_epochs: None, stop },
    };
    match imgtype::sweep::run_sweep(sweep, &options)? {
        Outcome::Finished(SweepReport { sweep_dir, ran, skipped, failed, summary }) => {
            println!("sweep folder: {}", sweep_dir.display());
            println!("{ran} experiment(s) run, {skipped} finished earlier, {failed} failed");
            if let Some(summary) = &summary {
                print_table(summary);
                println!("results: {}", sweep_dir.join("sweep_results.csv").display());
            }
            if failed > 0 {
                anyhow::bail!(
                    "{failed} experiment(s) failed (see their run folders); run the same command to retry them"
                );
            }
        }
        Outcome::Stopped(stopped) => {
            if let Some(sweep_dir) = &stopped.kept_in {
                println!("sweep folder: {}", sweep_dir.display());
            }
            println!("{stopped}");
            imgtype_cli::exit_if_interrupted(&stopped);
        }
    }
    Ok(())
}

fn summarize(dir: &std::path::Path) -> Result<()> {
    let summary = imgtype::sweep::summarize(dir)?;
    println!("sweep folder: {}", dir.display());
    print_table(&summary);
    Ok(())
}

fn print_table(summary: &imgtype::sweep::Summary) {
    for r in &summary.results {
        let score = |v: Option<f64>| v.map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into());
        println!(
            "{:<24} {:<9} val F1 weighted {}  test accuracy {}",
            r.name,
            r.status,
            score(r.val_f1_weighted),
            score(r.test_accuracy)
        );
    }
    if let Some(best) = &summary.best {
        println!("best: {best} (best_config.json)");
    }
    if !summary.missing.is_empty() {
        println!("not finished: {}", summary.missing.join(", "));
    }
}

/// The config file (or defaults) with the command-line overrides applied, and its path.
fn effective_config(args: &Args) -> Result<(Config, Option<PathBuf>)> {
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
    if let Some(dir) = &args.data_dir {
        config.paths.data_dir = dir.clone();
    }
    if let Some(epochs) = args.epochs {
        config.training.epochs = epochs;
    }
    if let Some(batch_size) = args.batch_size {
        config.training.batch_size = batch_size;
    }
    if let Some(device) = &args.device {
        config.system.device = device.parse::<DeviceChoice>().context("--device")?;
    }
    config.validate().context("invalid setting after command-line overrides")?;
    Ok((config, config_path))
}
