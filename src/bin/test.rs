//! `test`: predicts with a trained model over the splits, a CSV, or one image (test.py).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Parser;
use imgtype::config::{DeviceChoice, InferenceEngineChoice, Precision};
use imgtype::infer::{merge_shards, run_csv, run_dataset, CsvRequest, Predictor, Shard};
use imgtype::{Outcome, StopFlag};

#[derive(Parser)]
#[command(about = "Predict image types with a trained model: the whole dataset, a CSV of images, or one image")]
struct Args {
    /// Model file (.safetensors) or a run folder holding model/best_model.safetensors
    #[arg(long, required_unless_present = "merge_shards")]
    model_path: Option<PathBuf>,
    /// Predict one image and print the result
    #[arg(long, conflicts_with = "csv_path")]
    image_path: Option<OsString>,
    /// Predict the images listed in this CSV
    #[arg(long, requires = "output_path")]
    csv_path: Option<PathBuf>,
    /// Where the CSV mode (or --merge-shards) writes its rows
    #[arg(long)]
    output_path: Option<PathBuf>,
    /// Column of --csv-path that holds image paths
    #[arg(long, default_value = "image_path")]
    image_column: String,
    /// Split CSV folder for the whole-dataset mode (default: the model's paths.data_dir)
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Folder relative image paths are resolved against (default: the model's data.base_image_path)
    #[arg(long)]
    image_base_path: Option<PathBuf>,
    /// Folder for whole-dataset results (default: the model's paths.test_result_dir)
    #[arg(long)]
    output_dir: Option<PathBuf>,
    /// Predict only rows i with i mod N = K (K from 0), e.g. $JOB_COMPLETION_INDEX/N
    #[arg(long, value_name = "K/N")]
    shard: Option<Shard>,
    /// Merge *.shard-K-of-N.* result files into --output-path (no model needed)
    #[arg(long, num_args = 1.., requires = "output_path", conflicts_with_all = ["csv_path", "image_path"])]
    merge_shards: Vec<PathBuf>,
    /// Device (auto, cpu, cuda, cuda:N, mps)
    #[arg(long, default_value = "auto")]
    device: String,
    /// Print the single-image result (or the threshold fit) as JSON
    #[arg(long)]
    json: bool,
    /// CSV mode: exit with status 1 when any row is an ERROR row (all rows are still written)
    #[arg(long)]
    strict: bool,
    /// Fit per-class thresholds on the validation split (maximising the model's validation
    /// metric), report validation and test figures before and after, and write the model with
    /// them to --output-path (default: <model>_thresholds.safetensors beside it)
    #[arg(long, conflicts_with_all = ["csv_path", "image_path", "merge_shards", "shard"])]
    fit_thresholds: bool,
    /// Write the model as ONNX to this file (opset 17, dynamic batch, BatchNorm folded; class
    /// names and image size in its metadata) and exit
    #[arg(long, value_name = "OUT.onnx", conflicts_with_all = ["csv_path", "image_path", "merge_shards", "fit_thresholds"])]
    export_onnx: Option<PathBuf>,
    /// Inference engine (auto, openvino, libtorch; default: the model's system.inference_engine)
    #[arg(long)]
    engine: Option<String>,
    /// Number format (auto, fp32, bf16; default: the model's system.precision, `auto`: bf16
    /// where the CPU has AVX512-BF16 or AMX, or on CUDA)
    #[arg(long)]
    precision: Option<String>,
}

fn main() {
    let args = Args::parse();
    imgtype_cli::init_logging();
    imgtype_cli::run_main(|| run(args));
}

/// Ctrl-C / SIGTERM while batches are predicted: finish the batch, keep what is done. Before
/// that (loading the model, one image) a signal ends the process as usual.
fn stop_between_batches() -> StopFlag {
    imgtype_cli::stop_on_signals("finishing the current batch, then keeping what is done")
}

fn run(args: Args) -> Result<()> {
    if !args.merge_shards.is_empty() {
        let output = args.output_path.as_ref().expect("clap requires --output-path");
        let source = imgtype::data::ImageSource::local(args.image_base_path.clone());
        let rows = merge_shards(&args.merge_shards, output, &source)?;
        println!("{rows} rows merged into {}", output.display());
        return Ok(());
    }
    let device = imgtype::device::resolve_device(args.device.parse::<DeviceChoice>().context("--device")?)?;
    let model_path = args.model_path.as_ref().expect("clap requires --model-path");
    if let Some(output) = &args.export_onnx {
        let model_file = imgtype::infer::resolve_model_path(model_path)?;
        let output = imgtype::fsutil::check_output_file(output, &[&model_file])?;
        imgtype::model::onnx::export_model_file(&model_file, &output)?;
        println!("ONNX model (opset {}) written to {}", imgtype::model::onnx::OPSET, output.display());
        return Ok(());
    }
    let precision = args.precision.as_deref().map(parse_precision).transpose()?;
    let engine = args.engine.as_deref().map(str::parse::<InferenceEngineChoice>).transpose().context("--engine")?;
    let mut predictor = Predictor::load_with(model_path, device, precision, engine)?;
    predictor.set_base_image_path(args.image_base_path.clone());

    if let Some(image) = &args.image_path {
        return predict_one(&predictor, image, args.json);
    }
    if args.fit_thresholds {
        return fit_thresholds(&predictor, model_path, &args);
    }
    if let Some(csv_path) = &args.csv_path {
        let output = args.output_path.as_ref().expect("clap requires --output-path");
        let request = CsvRequest { csv_path, image_column: &args.image_column, output_path: output, shard: args.shard };
        let Some(report) = finished(run_csv(&predictor, &request, &stop_between_batches())?) else {
            return Ok(());
        };
        println!(
            "{} predictions ({} failed) written to {}; {:.1} images/s",
            report.rows,
            report.failed,
            report.output_path.display(),
            report.timing.images_per_second
        );
        if args.strict && report.failed > 0 {
            bail!(
                "--strict: {} of {} rows are ERROR rows (the reason is in the `error` column of {})",
                report.failed,
                report.rows,
                report.output_path.display()
            );
        }
        return Ok(());
    }
    let data_dir = args.data_dir.clone().unwrap_or_else(|| predictor.trained_with().paths.data_dir.clone());
    let output_root = args.output_dir.clone().unwrap_or_else(|| predictor.trained_with().paths.test_result_dir.clone());
    let Some(report) = finished(run_dataset(&predictor, &data_dir, &output_root, args.shard, &stop_between_batches())?)
    else {
        return Ok(());
    };
    for (split, accuracy) in &report.accuracy_by_split {
        println!("{split:<10} accuracy {accuracy:.4}");
    }
    println!(
        "{} images ({} failed), {:.2} ms per image, {:.1} images/s; results in {}",
        report.timing.images,
        report.failed,
        report.timing.mean_ms_per_image,
        report.timing.images_per_second,
        report.output_dir.display()
    );
    Ok(())
}

/// The report of a run that finished; a stopped one says so on stderr (exit status 130).
fn finished<T>(outcome: Outcome<T>) -> Option<T> {
    match outcome {
        Outcome::Finished(report) => Some(report),
        Outcome::Stopped(stopped) => {
            eprintln!("{stopped}");
            imgtype_cli::exit_if_interrupted(&stopped);
            None
        }
    }
}

fn fit_thresholds(predictor: &Predictor, model_path: &Path, args: &Args) -> Result<()> {
    let model_file = imgtype::infer::resolve_model_path(model_path)?;
    let output = args.output_path.clone().unwrap_or_else(|| {
        let stem = model_file.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
        model_file.with_file_name(format!("{stem}_thresholds.safetensors"))
    });
    let data_dir = args.data_dir.clone().unwrap_or_else(|| predictor.trained_with().paths.data_dir.clone());
    let fit = imgtype::infer::fit_thresholds(predictor, &model_file, &data_dir, &output)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&fit)?);
        return Ok(());
    }
    let shown: Vec<String> = fit.thresholds.iter().map(|(c, t)| format!("{c} {t:.2}")).collect();
    println!("thresholds: {}", if shown.is_empty() { "none (argmax is best)".into() } else { shown.join(", ") });
    println!("validation {}: {:.4} -> {:.4}", fit.metric, fit.validation_before, fit.validation_after);
    println!("test       {}: {:.4} -> {:.4}", fit.metric, fit.test_before, fit.test_after);
    println!("test       accuracy: {:.4} -> {:.4}", fit.test_accuracy_before, fit.test_accuracy_after);
    println!("model with thresholds: {}", fit.model_file.display());
    Ok(())
}

fn parse_precision(name: &str) -> Result<Precision> {
    serde_json::from_value(serde_json::Value::String(name.into()))
        .map_err(|_| anyhow::anyhow!("--precision `{name}`: use auto, fp32 or bf16"))
}

/// `--image-path`: a key as in the CSVs (relative, absolute, URL), or any local file name,
/// UTF-8 or not.
fn predict_one(predictor: &Predictor, image: &OsString, json: bool) -> Result<()> {
    let (label, outcome) = match image.to_str() {
        Some(key) => (key.to_string(), predictor.predict_keys(&[key.to_string()]).remove(0)),
        None => (image.to_string_lossy().into_owned(), predictor.predict_file(Path::new(image))),
    };
    match outcome {
        Ok(prediction) => {
            print!("{}", imgtype::infer::format_single(predictor, &label, &prediction, json));
            Ok(())
        }
        Err(reason) => bail!("{reason}"),
    }
}
