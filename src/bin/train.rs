//! `train`: trains the classifier as a config says (main.py).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Parser;
use imgtype::config::DeviceChoice;
use imgtype::eval::label_issues::LabelQuality;
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
    /// Overrides system.device (auto, cpu, cuda, cuda:N, mps); with --resume, the device the run continues on
    #[arg(long, conflicts_with = "summarize")]
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
    /// With --sweep or --cross-validate: run only experiments (folds) i with i mod N = K (a job
    /// array's member K of N)
    #[arg(long, value_name = "K/N")]
    member: Option<imgtype::sweep::Member>,
    /// Train K models on product-grouped folds of every image of the three split files, each
    /// fold a run folder in results/cv_YYYYMMDD_HHMMSS_<id>/, and list the labels the
    /// out-of-fold predictions doubt (label_issues.csv); `--resume CV_DIR` continues one
    #[arg(long, value_name = "K", conflicts_with_all = ["resume", "sweep", "summarize", "stop_after"])]
    cross_validate: Option<usize>,
    /// With --cross-validate: its folder (default: a new one in paths.result_dir); the same
    /// command with the same folder continues it, as `--resume DIR` does
    #[arg(long, value_name = "DIR", requires = "cross_validate")]
    cv_dir: Option<PathBuf>,
    /// How label issues are ranked (cross-validation): self_confidence (p of the given label)
    /// or normalized_margin
    #[arg(long, value_name = "SCORE", default_value = "self_confidence")]
    rank_by: LabelQuality,
    /// Build a sweep's or a cross-validation's results from what has finished
    #[arg(long, value_name = "DIR", conflicts_with_all = ["config", "resume", "sweep"])]
    summarize: Option<PathBuf>,
}

fn main() {
    let args = Args::parse();
    imgtype_cli::init_logging();
    let stop = imgtype_cli::stop_on_signals("finishing the current step, then saving a checkpoint");
    imgtype_cli::run_main(|| run(args, stop));
}

fn run(args: Args, stop: StopFlag) -> Result<()> {
    if args.member.is_some() && args.sweep.is_none() && args.cross_validate.is_none() && !resumes_cv(&args) {
        anyhow::bail!("--member is for --sweep and --cross-validate");
    }
    if args.member.is_some() && args.cross_validate.is_some() && args.cv_dir.is_none() {
        anyhow::bail!(
            "--member with --cross-validate needs --cv-dir: every member of the job array must use one folder"
        );
    }
    if let Some(dir) = &args.summarize {
        if imgtype::crossval::is_cv_folder(dir) {
            let summary = imgtype::crossval::summarize(dir, args.rank_by)?;
            print_cv_summary(dir, &summary);
            return Ok(());
        }
        return summarize(dir);
    }
    if let Some(sweep) = &args.sweep {
        return run_sweep(sweep, &args, stop);
    }
    if let Some(dir) = args.resume.as_deref().filter(|d| d.join("images.csv").is_file() && !resumes_cv(&args)) {
        anyhow::bail!(
            "{} is a cross-validation folder whose set-up did not finish (no cv_plan.json): run the \
             `--cross-validate K` command again with `--cv-dir {}`",
            dir.display(),
            dir.display()
        );
    }
    if resumes_cv(&args) && args.device.is_some() {
        bail!(
            "--device with --resume of a cross-validation folder: its folds train on the device its cv_plan.json \
             names; resume without --device"
        );
    }
    if args.cross_validate.is_some() || resumes_cv(&args) {
        return cross_validate(&args, stop);
    }
    let folder = match &args.resume {
        Some(run_dir) => {
            let device = args.device.as_deref().map(str::parse::<DeviceChoice>).transpose().context("--device")?;
            RunFolder::reopen_on(run_dir, device)?
        }
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

fn resumes_cv(args: &Args) -> bool {
    args.resume.as_deref().is_some_and(imgtype::crossval::is_cv_folder)
}

fn cross_validate(args: &Args, stop: StopFlag) -> Result<()> {
    use imgtype::crossval::{CvOptions, CvReport};
    let options = CvOptions {
        folds: args.cross_validate.unwrap_or(0),
        cv_dir: args.cv_dir.clone(),
        member: args.member,
        quality: args.rank_by,
        train: TrainOptions { stop_after_epochs: None, stop },
    };
    let end = match &args.resume {
        Some(dir) => imgtype::crossval::resume_cross_validation(dir, options)?,
        None => imgtype::crossval::cross_validate(&effective_config(args)?.0, &options)?,
    };
    match end {
        Outcome::Finished(CvReport { cv_dir, ran, skipped, failed, summary }) => {
            println!("cross-validation folder: {}", cv_dir.display());
            println!("{ran} fold(s) trained, {skipped} finished earlier, {failed} failed");
            if let Some(summary) = &summary {
                print_cv_summary(&cv_dir, summary);
            }
            if failed > 0 {
                anyhow::bail!(
                    "{failed} fold(s) failed (see their run folders); `train --resume {}` retries them",
                    cv_dir.display()
                );
            }
        }
        Outcome::Stopped(stopped) => {
            if let Some(dir) = &stopped.kept_in {
                println!("cross-validation folder: {}", dir.display());
            }
            println!("{stopped}");
            imgtype_cli::exit_if_interrupted(&stopped);
        }
    }
    Ok(())
}

fn print_cv_summary(dir: &std::path::Path, summary: &imgtype::crossval::CvSummary) {
    let score = |v: Option<f64>| v.map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into());
    for f in &summary.folds {
        println!(
            "fold {:<3} {:<9} {:>5} held out  accuracy {}  F1 macro {}  F1 weighted {}",
            f.fold,
            f.status,
            f.held_out_images,
            score(f.accuracy),
            score(f.f1_macro),
            score(f.f1_weighted)
        );
    }
    let spread = |s: Option<imgtype::crossval::Spread>| {
        s.map(|s| format!("{:.4} ± {:.4}", s.mean, s.std)).unwrap_or_else(|| "-".into())
    };
    println!(
        "k-fold: accuracy {}  F1 macro {}  F1 weighted {}",
        spread(summary.accuracy),
        spread(summary.f1_macro),
        spread(summary.f1_weighted)
    );
    println!(
        "labels to review: {} of {} images with an out-of-fold prediction ({} by confident learning), ranked by {}",
        summary.label_issues,
        summary.oof_images,
        summary.confident_learning_issues,
        summary.ranked_by.as_str()
    );
    for c in summary.confusions.iter().filter(|c| c.listed > 0).take(5) {
        println!(
            "  labelled {} but looks like {}: {} listed ({} estimated)",
            c.given, c.suggested, c.listed, c.estimated
        );
    }
    if !summary.unfinished.is_empty() {
        println!("folds not finished: {:?}", summary.unfinished);
    }
    println!("results: {}", dir.join("cv_results.csv").display());
    println!("label issues: {} and {}", dir.join("label_issues.csv").display(), dir.join("label_issues.png").display());
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
