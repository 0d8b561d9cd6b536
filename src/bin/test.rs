//! `test`: predicts with a trained model over the splits, a CSV, or one image (test.py).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::{ArgGroup, Parser};
use imgtype::config::{DeviceChoice, InferenceEngineChoice, Precision};
use imgtype::infer::{merge_shards, run_csv, run_dataset, CsvRequest, Predictor, Shard};
use imgtype::{Outcome, StopFlag};
use imgtype_cli::report::test as report;
use imgtype_cli::Ending;

#[derive(Parser)]
#[command(about = "Predict image types with a trained model: the whole dataset, a CSV of images, or one image")]
#[command(group(ArgGroup::new("json_work").args(["image_path", "fit_thresholds"]).multiple(true)))]
#[command(group(ArgGroup::new("no_model_run").args(["merge_shards", "export_onnx", "int8_calibrate"]).multiple(true)))]
#[command(group(ArgGroup::new("image_csv").args(["csv_path", "int8_calibrate"])))]
struct Args {
    /// Model file (.safetensors) or a run folder holding model/best_model.safetensors
    #[arg(long, required_unless_present = "merge_shards", conflicts_with = "merge_shards")]
    model_path: Option<PathBuf>,
    /// Predict one image and print the result
    #[arg(long, conflicts_with = "csv_path")]
    image_path: Option<OsString>,
    /// Predict the images listed in this CSV
    #[arg(long, requires = "output_path")]
    csv_path: Option<PathBuf>,
    /// Where the CSV mode, --merge-shards, --fit-thresholds or --int8-calibrate writes
    #[arg(long, conflicts_with_all = ["image_path", "export_onnx"])]
    output_path: Option<PathBuf>,
    /// Column of --csv-path (or --int8-calibrate) that holds image paths [default: image_path]
    #[arg(long, requires = "image_csv", conflicts_with = "image_path")]
    image_column: Option<String>,
    /// Split CSV folder for the whole-dataset mode and --fit-thresholds (default: the model's
    /// paths.data_dir)
    #[arg(long, conflicts_with_all = ["image_path", "csv_path", "merge_shards", "export_onnx", "int8_calibrate"])]
    data_dir: Option<PathBuf>,
    /// Folder relative image paths are resolved against (default: the model's data.base_image_path)
    #[arg(long, conflicts_with = "export_onnx")]
    image_base_path: Option<PathBuf>,
    /// Folder for whole-dataset results (default: the model's paths.test_result_dir)
    #[arg(long, conflicts_with_all = ["image_path", "csv_path", "merge_shards", "export_onnx", "fit_thresholds", "int8_calibrate"])]
    output_dir: Option<PathBuf>,
    /// Predict only rows i with i mod N = K (K from 0), e.g. $JOB_COMPLETION_INDEX/N
    #[arg(long, value_name = "K/N", conflicts_with_all = ["image_path", "merge_shards", "export_onnx", "int8_calibrate"])]
    shard: Option<Shard>,
    /// Merge *.shard-K-of-N.* result files into --output-path (no model needed)
    #[arg(long, num_args = 1.., requires = "output_path", conflicts_with_all = ["csv_path", "image_path"])]
    merge_shards: Vec<PathBuf>,
    /// Device (auto, cpu, cuda, cuda:N, mps) [default: auto]
    #[arg(long, conflicts_with = "no_model_run")]
    device: Option<DeviceChoice>,
    /// Print the single-image result (or the threshold fit) as JSON
    #[arg(long, requires = "json_work")]
    json: bool,
    /// CSV mode: exit with status 1 when any row is an ERROR row (all rows are still written)
    #[arg(long, requires = "csv_path", conflicts_with_all = ["image_path", "int8_calibrate", "merge_shards"])]
    strict: bool,
    /// Fit per-class thresholds on the validation split (maximising the model's validation
    /// metric), report validation and test figures before and after, and write the model with
    /// them to --output-path (default: <model>_thresholds.safetensors beside it)
    #[arg(long, conflicts_with_all = ["csv_path", "image_path", "merge_shards", "shard"])]
    fit_thresholds: bool,
    /// Write the model as ONNX to this file (opset 17, dynamic batch, BatchNorm folded; class
    /// names and image size in its metadata) and exit; with `--precision int8`, in QDQ form
    /// (INT8 convolutions, for OpenVINO or ONNX Runtime) from the model file's INT8 ranges
    #[arg(long, value_name = "OUT.onnx", conflicts_with_all = ["csv_path", "image_path", "merge_shards", "fit_thresholds"])]
    export_onnx: Option<PathBuf>,
    /// Measure the model's INT8 activation ranges on the images this CSV lists (up to 300 rows
    /// spread over it; --image-column) and write the model with them to --output-path
    /// (default: <model>_int8.safetensors beside it), for `--precision int8`
    #[arg(long, value_name = "IMAGES.csv", conflicts_with_all = ["csv_path", "image_path", "merge_shards", "export_onnx", "fit_thresholds"])]
    int8_calibrate: Option<PathBuf>,
    /// Inference engine (auto, openvino, libtorch; default: the model's system.inference_engine)
    #[arg(long, conflicts_with = "no_model_run")]
    engine: Option<InferenceEngineChoice>,
    /// Number format (auto, fp32, bf16, int8; default: the model's system.precision, `auto`:
    /// bf16 where the CPU has AVX512-BF16 or AMX, or on CUDA; int8: OpenVINO, with the INT8
    /// ranges `train` or --int8-calibrate stores in the model file)
    #[arg(long, conflicts_with_all = ["merge_shards", "int8_calibrate"])]
    precision: Option<Precision>,
}

/// What a `test` command line asks for.
enum Mode<'a> {
    MergeShards {
        output: &'a Path,
    },
    ExportOnnx {
        model: &'a Path,
        output: &'a Path,
    },
    Int8Calibrate {
        model: &'a Path,
        csv: &'a Path,
        output: Option<&'a Path>,
    },
    /// Work that loads the model as a `Predictor`.
    Predict {
        model: &'a Path,
        task: Task<'a>,
    },
}

enum Task<'a> {
    OneImage(&'a OsString),
    FitThresholds,
    Csv { csv: &'a Path, output: &'a Path },
    Dataset,
}

impl Args {
    /// The mode; clap's relations have already refused the combinations that make none.
    fn mode(&self) -> Mode<'_> {
        let output = self.output_path.as_deref();
        if !self.merge_shards.is_empty() {
            return Mode::MergeShards { output: output.expect("clap requires --output-path") };
        }
        let model = self.model_path.as_deref().expect("clap requires --model-path");
        let task = match (&self.export_onnx, &self.image_path, &self.csv_path) {
            (Some(onnx), _, _) => return Mode::ExportOnnx { model, output: onnx },
            _ if self.int8_calibrate.is_some() => {
                let csv = self.int8_calibrate.as_deref().expect("checked");
                return Mode::Int8Calibrate { model, csv, output };
            }
            (None, Some(image), _) => Task::OneImage(image),
            (None, None, _) if self.fit_thresholds => Task::FitThresholds,
            (None, None, Some(csv)) => Task::Csv { csv, output: output.expect("clap requires --output-path") },
            (None, None, None) => Task::Dataset,
        };
        Mode::Predict { model, task }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    imgtype_cli::init_logging();
    imgtype_cli::run_main(|| run(&args))
}

/// Ctrl-C / SIGTERM while batches are predicted: finish the batch, keep what is done. Before
/// that (loading the model, one image) a signal ends the process as usual.
fn stop_between_batches() -> StopFlag {
    imgtype_cli::stop_on_signals("finishing the current batch, then keeping what is done")
}

fn run(args: &Args) -> Result<Ending> {
    let (model, task) = match args.mode() {
        Mode::MergeShards { output } => {
            let source = imgtype::data::ImageSource::local(args.image_base_path.clone());
            let rows = merge_shards(&args.merge_shards, output, &source)?;
            println!("{rows} rows merged into {}", output.display());
            return Ok(Ending::Done);
        }
        Mode::ExportOnnx { model, output } => {
            let model_file = imgtype::infer::resolve_model_path(model)?;
            let output = imgtype::fsutil::check_output_file(output, &[&model_file])?;
            imgtype::fsutil::check_replaceable(&output, imgtype::fsutil::Replaceable::Onnx)?;
            let int8 = match args.precision {
                None | Some(Precision::Fp32) => false,
                Some(Precision::Int8) => true,
                Some(other) => {
                    let message = format!("--export-onnx writes fp32 or int8, not {other:?}").to_lowercase();
                    return Err(imgtype_cli::usage_error(message));
                }
            };
            imgtype::model::onnx::export_model_file(&model_file, &output, int8)?;
            println!("ONNX model (opset {}) written to {}", imgtype::model::onnx::OPSET, output.display());
            return Ok(Ending::Done);
        }
        Mode::Int8Calibrate { model, csv, output } => return int8_calibrate(model, csv, output, args),
        Mode::Predict { model, task } => (model, task),
    };
    let device = imgtype::device::resolve_device(args.device.unwrap_or_default())?;
    let mut predictor = Predictor::load_with(model, device, args.precision, args.engine)?;
    predictor.set_base_image_path(args.image_base_path.clone());
    match task {
        Task::OneImage(image) => predict_one(&predictor, image, args.json),
        Task::FitThresholds => fit_thresholds(&predictor, model, args),
        Task::Csv { csv, output } => predict_csv(&predictor, csv, output, args),
        Task::Dataset => predict_dataset(&predictor, args),
    }
}

fn predict_csv(predictor: &Predictor, csv_path: &Path, output: &Path, args: &Args) -> Result<Ending> {
    let image_column = args.image_column.as_deref().unwrap_or("image_path");
    let request = CsvRequest { csv_path, image_column, output_path: output, shard: args.shard };
    let report = match run_csv(predictor, &request, &stop_between_batches())? {
        Outcome::Finished(report) => report,
        Outcome::Stopped(stopped) => return Ok(Ending::Stopped(stopped)),
    };
    report::print_csv(&report);
    if args.strict && report.failed > 0 {
        bail!(
            "--strict: {} of {} rows are ERROR rows (the reason is in the `error` column of {})",
            report.failed,
            report.rows,
            report.output_path.display()
        );
    }
    Ok(Ending::Done)
}

fn predict_dataset(predictor: &Predictor, args: &Args) -> Result<Ending> {
    let data_dir = args.data_dir.clone().unwrap_or_else(|| predictor.trained_with().paths.data_dir.clone());
    let output_root = args.output_dir.clone().unwrap_or_else(|| predictor.trained_with().paths.test_result_dir.clone());
    match run_dataset(predictor, &data_dir, &output_root, args.shard, &stop_between_batches())? {
        Outcome::Finished(report) => report::print_dataset(&report),
        Outcome::Stopped(stopped) => return Ok(Ending::Stopped(stopped)),
    }
    Ok(Ending::Done)
}

fn int8_calibrate(model_path: &Path, csv: &Path, output: Option<&Path>, args: &Args) -> Result<Ending> {
    let model_file = imgtype::infer::resolve_model_path(model_path)?;
    let output = output.map(Path::to_path_buf).unwrap_or_else(|| beside(&model_file, "int8"));
    let output = imgtype::fsutil::check_output_file(&output, &[&model_file, csv])?;
    imgtype::fsutil::check_replaceable(&output, imgtype::fsutil::Replaceable::Safetensors)?;
    let records = imgtype::infer::calibration_records(csv, args.image_column.as_deref().unwrap_or("image_path"))?;
    let cpu = imgtype::device::resolve_device(DeviceChoice::Cpu)?;
    let mut model = imgtype::ImageTypeClassifier::load(&model_file, cpu)?;
    let mut source = imgtype::data::ImageSource::from_config(&model.config().data);
    source.set_base_path(args.image_base_path.clone());
    let workers = model.config().system.decode_threads();
    let calibration = imgtype::infer::calibrate_model(&mut model, &records, &source, workers, &output)?;
    report::print_int8_calibration(&calibration);
    Ok(Ending::Done)
}

/// `<model stem>_<tag>.safetensors` beside the model file.
fn beside(model_file: &Path, tag: &str) -> PathBuf {
    let stem = model_file.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    model_file.with_file_name(format!("{stem}_{tag}.safetensors"))
}

fn fit_thresholds(predictor: &Predictor, model_path: &Path, args: &Args) -> Result<Ending> {
    let model_file = imgtype::infer::resolve_model_path(model_path)?;
    let output = args.output_path.clone().unwrap_or_else(|| beside(&model_file, "thresholds"));
    let data_dir = args.data_dir.clone().unwrap_or_else(|| predictor.trained_with().paths.data_dir.clone());
    let fit = imgtype::infer::fit_thresholds(predictor, &model_file, &data_dir, &output)?;
    report::print_threshold_fit(&fit, args.json);
    Ok(Ending::Done)
}

/// `--image-path`: a key as in the CSVs (relative, absolute, URL), or any local file name,
/// UTF-8 or not.
fn predict_one(predictor: &Predictor, image: &OsString, json: bool) -> Result<Ending> {
    let (label, outcome) = match image.to_str() {
        Some(key) => (key.to_string(), predictor.predict_keys(&[key.to_string()]).remove(0)),
        None => (image.to_string_lossy().into_owned(), predictor.predict_file(Path::new(image))),
    };
    match outcome {
        Ok(prediction) => {
            report::print_single(predictor, &label, &prediction, json);
            Ok(Ending::Done)
        }
        Err(reason) => bail!("{reason}"),
    }
}
