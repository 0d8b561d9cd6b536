//! `train`: trains the classifier as a config says (main.py).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::builder::RangedU64ValueParser;
use clap::{ArgGroup, Parser};
use imgtype::config::DeviceChoice;
use imgtype::config::{MAX_BATCH_SIZE, MAX_EPOCHS};
use imgtype::crossval::{Judging, MAX_FOLDS, MAX_REPEATS};
use imgtype::eval::label_issues::LabelQuality;
use imgtype::train::{RunFolder, TrainOptions};
use imgtype::Outcome;
use imgtype::{Config, StopFlag};
use imgtype_cli::report::train as report;
use imgtype_cli::{usage_error, Ending};

#[derive(Parser)]
#[command(about = "Train the EfficientNet-B0 image-type classifier; results go to results/run_YYYYMMDD_HHMMSS_<id>/")]
#[command(group(ArgGroup::new("array_work").args(["sweep", "cross_validate", "resume"]).multiple(true)))]
#[command(group(ArgGroup::new("label_work").args(["cross_validate", "resume", "summarize"]).multiple(true)))]
struct Args {
    /// Config file (defaults to ./config.json when present, else built-in defaults)
    #[arg(long, conflicts_with = "resume")]
    config: Option<PathBuf>,
    /// Continue an interrupted run from its latest checkpoint, in its own folder; given a sweep's
    /// or a cross-validation's folder, continue it with the plan it records
    #[arg(long, value_name = "RUN_DIR")]
    resume: Option<PathBuf>,
    /// Short run: 5 epochs, patience 3, 2 frozen epochs (each experiment of a sweep alike)
    #[arg(long, conflicts_with_all = ["resume", "epochs"])]
    quick_test: bool,
    /// Folder with train_data.csv, validation_data.csv, test_data.csv (overrides paths.data_dir)
    #[arg(long, conflicts_with = "resume")]
    data_dir: Option<PathBuf>,
    /// Overrides training.epochs
    #[arg(long, conflicts_with = "resume", value_parser = count(MAX_EPOCHS))]
    epochs: Option<usize>,
    /// Overrides training.batch_size
    #[arg(long, conflicts_with = "resume", value_parser = count(MAX_BATCH_SIZE))]
    batch_size: Option<usize>,
    /// Overrides system.device (auto, cpu, cuda, cuda:N, mps); with --resume, the device the run continues on
    #[arg(long, conflicts_with = "summarize")]
    device: Option<DeviceChoice>,
    /// Stop after this many epochs of this invocation, resumably (for time-limited job slots)
    #[arg(long, value_name = "EPOCHS", conflicts_with = "sweep", value_parser = count(MAX_EPOCHS))]
    stop_after: Option<usize>,
    /// Run the experiments of a sweep file (the Python system's tuning script); running the
    /// same command again skips finished experiments and resumes an interrupted one
    #[arg(long, value_name = "SWEEP_JSON", conflicts_with_all = ["config", "resume", "summarize", "batch_size", "data_dir", "device"])]
    sweep: Option<PathBuf>,
    /// With --sweep: its folder (default tuning_results/<sweep file name>/)
    #[arg(long, value_name = "DIR", requires = "sweep")]
    sweep_dir: Option<PathBuf>,
    /// With --sweep, --cross-validate or --resume of their folders: run only experiments (folds)
    /// i with i mod N = K (a job array's member K of N)
    #[arg(long, value_name = "K/N", requires = "array_work")]
    member: Option<imgtype::sweep::Member>,
    /// Train K models on product-grouped folds of every image of the three split files, each
    /// fold a run folder in results/cv_YYYYMMDD_HHMMSS_<id>/, and list the labels the
    /// out-of-fold predictions doubt (label_issues.csv); `--resume CV_DIR` continues one
    #[arg(long, value_name = "K", conflicts_with_all = ["resume", "sweep", "summarize", "stop_after"],
          value_parser = RangedU64ValueParser::<usize>::new().range(2..=MAX_FOLDS as u64))]
    cross_validate: Option<usize>,
    /// With --cross-validate: repeat it R times with other folds and training seeds
    /// (`data.random_state` and `system.seed` + 0..R−1) and average each image's out-of-fold
    /// probabilities (R times the training; default 1)
    // `requires` alone lets it through beside an option that conflicts with --cross-validate.
    #[arg(long, value_name = "R", requires = "cross_validate", conflicts_with_all = ["resume", "summarize", "sweep"],
          value_parser = RangedU64ValueParser::<usize>::new().range(1..=MAX_REPEATS as u64))]
    repeats: Option<usize>,
    /// With --cross-validate: its folder (default: a new one in paths.result_dir); the same
    /// command with the same folder continues it, as `--resume DIR` does
    #[arg(long, value_name = "DIR", requires = "cross_validate", conflicts_with_all = ["resume", "summarize", "sweep"])]
    cv_dir: Option<PathBuf>,
    /// How label issues are ranked (cross-validation): self_confidence (p of the given label,
    /// the default) or normalized_margin
    #[arg(long, value_name = "SCORE", requires = "label_work")]
    rank_by: Option<LabelQuality>,
    /// How many nearest held-out images' labels (in the fold model's embedding space) are
    /// blended into each image's out-of-fold probabilities before label issues are judged
    /// (cross-validation; default 0: the models' probabilities alone)
    #[arg(long, value_name = "K", requires = "label_work",
          value_parser = RangedU64ValueParser::<usize>::new().range(0..=1000))]
    neighbours: Option<usize>,
    /// Build a sweep's or a cross-validation's results from what has finished
    #[arg(long, value_name = "DIR",
          conflicts_with_all = ["config", "resume", "sweep", "quick_test", "data_dir", "epochs", "batch_size", "stop_after", "member"])]
    summarize: Option<PathBuf>,
}

/// What a `train` command line asks for.
enum Mode<'a> {
    Summarize(&'a Path),
    Sweep(&'a Path),
    CrossValidate,
    ResumeCrossValidation(&'a Path),
    ResumeSweep(&'a Path),
    Resume(&'a Path),
    New,
}

impl Args {
    fn judging(&self) -> Judging {
        let default = Judging::default();
        Judging {
            quality: self.rank_by.unwrap_or(default.quality),
            neighbours: self.neighbours.unwrap_or(default.neighbours),
        }
    }

    /// The mode, and the usage errors clap cannot see (they depend on what a folder holds).
    fn mode(&self) -> Result<Mode<'_>> {
        if let Some(dir) = &self.summarize {
            return Ok(Mode::Summarize(dir));
        }
        if let Some(sweep) = &self.sweep {
            return Ok(Mode::Sweep(sweep));
        }
        let resumed_cv = self.resume.as_deref().filter(|dir| imgtype::crossval::is_cv_folder(dir));
        let resumed_sweep =
            self.resume.as_deref().filter(|dir| imgtype::fsutil::is_present(&dir.join(imgtype::sweep::PLAN_FILE)));
        let resumed_batch = resumed_cv.or(resumed_sweep);
        if self.member.is_some() && self.sweep.is_none() && self.cross_validate.is_none() && resumed_batch.is_none() {
            return Err(usage_error(
                "--member is for --sweep and --cross-validate (and --resume of a sweep or cross-validation folder)",
            ));
        }
        if self.member.is_some() && self.cross_validate.is_some() && self.cv_dir.is_none() {
            return Err(usage_error(
                "--member with --cross-validate needs --cv-dir: every member of the job array must use one folder",
            ));
        }
        if let Some(dir) = resumed_batch {
            let what = if resumed_cv.is_some() { "a cross-validation" } else { "a sweep" };
            let (file, unit) = match resumed_cv {
                Some(_) => (imgtype::crossval::CV_PLAN_FILE, "folds"),
                None => (imgtype::sweep::PLAN_FILE, "experiments"),
            };
            if self.device.is_some() {
                return Err(usage_error(format!(
                    "--device with --resume of {what} folder: its {unit} train on the device its {file} names; \
                     resume without --device"
                )));
            }
            if self.stop_after.is_some() {
                return Err(usage_error(format!(
                    "--stop-after with --resume of {what} folder: it is for one run; stop {what} with Ctrl-C (or \
                     SIGTERM) and `--resume` it again"
                )));
            }
            return Ok(match resumed_cv {
                Some(_) => Mode::ResumeCrossValidation(dir),
                None => Mode::ResumeSweep(dir),
            });
        }
        if let Some(dir) = self.resume.as_deref().filter(|dir| imgtype::fsutil::is_present(&dir.join("images.csv"))) {
            imgtype::crossval::check_plan_not_lost(dir)?;
            anyhow::bail!(
                "{} is a cross-validation folder whose set-up did not finish (no cv_plan.json): run the \
                 `--cross-validate K` command again with `--cv-dir {}`",
                dir.display(),
                dir.display()
            );
        }
        Ok(match (&self.resume, self.cross_validate) {
            (_, Some(_)) => Mode::CrossValidate,
            (Some(dir), None) => Mode::Resume(dir),
            (None, None) => Mode::New,
        })
    }
}

/// A count on the command line: 1 to `max`.
fn count(max: usize) -> RangedU64ValueParser<usize> {
    RangedU64ValueParser::<usize>::new().range(1..=max as u64)
}

fn main() -> ExitCode {
    let args = Args::parse();
    imgtype_cli::init_logging();
    let stop = imgtype_cli::stop_on_signals(match args.summarize {
        Some(_) => "stopping before the results are written",
        None => "finishing the current step, then saving a checkpoint",
    });
    imgtype_cli::run_main(|| run(&args, stop))
}

fn run(args: &Args, stop: StopFlag) -> Result<Ending> {
    let folder = match args.mode()? {
        Mode::Summarize(dir) => {
            let judging = args.neighbours.is_some() || args.rank_by.is_some();
            if judging && !imgtype::crossval::is_cv_folder(dir) {
                return Err(usage_error(format!(
                    "--neighbours and --rank-by judge a cross-validation's labels; {} is not a cross-validation folder",
                    dir.display()
                )));
            }
            return summarize(dir, args.judging(), &stop);
        }
        Mode::Sweep(sweep) => return run_sweep(Sweep::File(sweep), args, stop),
        Mode::ResumeSweep(dir) => return run_sweep(Sweep::Folder(dir), args, stop),
        Mode::CrossValidate => return cross_validate(args, None, stop),
        Mode::ResumeCrossValidation(dir) => return cross_validate(args, Some(dir), stop),
        Mode::Resume(run_dir) => RunFolder::reopen_on(run_dir, args.device)?,
        Mode::New => {
            let (config, config_path) = effective_config(args)?;
            RunFolder::create(&config, config_path.as_deref())?
        }
    };
    imgtype_cli::attach_run_logs(&folder.logs_dir(), folder.config().logging.log_level)?;
    let options = TrainOptions { stop_after_epochs: args.stop_after, stop };
    match imgtype::train::train(folder, &options)? {
        Outcome::Finished(outcome) => report::print_run(&outcome),
        Outcome::Stopped(stopped) => return Ok(stopped_in("run folder", stopped)),
    }
    Ok(Ending::Done)
}

/// A stop: the folder that holds what was kept on stdout (a script reads it as it reads a
/// finished run's), the stop itself for `run_main` to report.
fn stopped_in(what: &str, stopped: imgtype::Stopped) -> Ending {
    if let Some(dir) = &stopped.kept_in {
        println!("{what}: {}", dir.display());
    }
    Ending::Stopped(stopped)
}

fn summarize(dir: &Path, judging: Judging, stop: &StopFlag) -> Result<Ending> {
    if !dir.is_dir() {
        let what = if dir.exists() { "not a folder" } else { "no such folder" };
        anyhow::bail!("{}: {what} (--summarize takes a cross-validation or sweep folder)", dir.display());
    }
    if imgtype::crossval::is_cv_folder(dir) {
        let summary = match imgtype::crossval::summarize(dir, judging, stop)? {
            Outcome::Finished(summary) => summary,
            Outcome::Stopped(stopped) => return Ok(Ending::Stopped(stopped)),
        };
        report::print_cv_summary(dir, &summary);
    } else if dir.join(imgtype::sweep::PLAN_FILE).exists() {
        let summary = imgtype::sweep::summarize(dir)?;
        println!("sweep folder: {}", dir.display());
        report::print_sweep_table(&summary);
    } else {
        imgtype::crossval::check_plan_not_lost(dir)?;
        let (cv, sweep) = (imgtype::crossval::CV_PLAN_FILE, imgtype::sweep::PLAN_FILE);
        anyhow::bail!("{} is neither a cross-validation (no {cv}) nor a sweep (no {sweep})", dir.display());
    }
    Ok(Ending::Done)
}

/// A sweep to run: from its sweep file, or continued from its folder's plan.
enum Sweep<'a> {
    File(&'a Path),
    Folder(&'a Path),
}

fn run_sweep(sweep: Sweep, args: &Args, stop: StopFlag) -> Result<Ending> {
    use imgtype::sweep::{EpochsOverride, SweepOptions, SweepReport};
    let epochs = match (args.quick_test, args.epochs) {
        (true, _) => Some(EpochsOverride::QuickTest),
        (false, Some(n)) => Some(EpochsOverride::Epochs(n)),
        (false, None) => None,
    };
    let options = SweepOptions {
        epochs,
        member: args.member,
        sweep_dir: args.sweep_dir.clone(),
        train: TrainOptions { stop_after_epochs: None, stop },
    };
    let end = match sweep {
        Sweep::File(file) => imgtype::sweep::run_sweep(file, &options)?,
        Sweep::Folder(dir) => imgtype::sweep::resume_sweep(dir, &options)?,
    };
    match end {
        Outcome::Finished(SweepReport { sweep_dir, ran, skipped, failed, summary }) => {
            println!("sweep folder: {}", sweep_dir.display());
            println!("{ran} experiment(s) run, {skipped} finished earlier, {failed} failed");
            if let Some(summary) = &summary {
                report::print_sweep_table(summary);
                println!("results: {}", sweep_dir.join("sweep_results.csv").display());
            }
            if failed > 0 {
                anyhow::bail!(
                    "{failed} experiment(s) failed (see their run folders); the same command, or `train --resume {}`, \
                     retries them",
                    sweep_dir.display()
                );
            }
            Ok(Ending::Done)
        }
        Outcome::Stopped(stopped) => Ok(stopped_in("sweep folder", stopped)),
    }
}

fn cross_validate(args: &Args, resume: Option<&Path>, stop: StopFlag) -> Result<Ending> {
    use imgtype::crossval::{CvOptions, CvReport};
    let options = CvOptions {
        folds: args.cross_validate.unwrap_or(0),
        repeats: args.repeats.unwrap_or(1),
        cv_dir: args.cv_dir.clone(),
        member: args.member,
        judging: args.judging(),
        train: TrainOptions { stop_after_epochs: None, stop },
    };
    let end = match resume {
        Some(dir) => imgtype::crossval::resume_cross_validation(dir, options)?,
        None => imgtype::crossval::cross_validate(&effective_config(args)?.0, &options)?,
    };
    match end {
        Outcome::Finished(CvReport { cv_dir, ran, skipped, failed, summary }) => {
            println!("cross-validation folder: {}", cv_dir.display());
            println!("{ran} fold(s) trained, {skipped} finished earlier, {failed} failed");
            if let Some(summary) = &summary {
                report::print_cv_summary(&cv_dir, summary);
            }
            if failed > 0 {
                anyhow::bail!(
                    "{failed} fold(s) failed (see their run folders); `train --resume {}` retries them",
                    cv_dir.display()
                );
            }
            Ok(Ending::Done)
        }
        Outcome::Stopped(stopped) => Ok(stopped_in("cross-validation folder", stopped)),
    }
}

/// The config file (or defaults) with the command-line overrides applied, and its path.
fn effective_config(args: &Args) -> Result<(Config, Option<PathBuf>)> {
    let (mut config, config_path) = Config::load_or_default(args.config.as_deref())?;
    if args.quick_test {
        config.apply_quick_test();
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
    if let Some(device) = args.device {
        config.system.device = device;
    }
    config.validate().context("invalid setting after command-line overrides")?;
    Ok((config, config_path))
}
