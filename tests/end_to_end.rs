//! divide → train → test with the real binaries on a small subset of the bundled
//! sample, in a temp folder, checking what each writes.

use std::collections::HashSet;
use std::path::Path;

use imgtype_testkit::{ok, only_entry, read_csv, read_json, repo_root, run};

const DIVIDE: &str = env!("CARGO_BIN_EXE_divide");
const TRAIN: &str = env!("CARGO_BIN_EXE_train");
const TEST: &str = env!("CARGO_BIN_EXE_test");

#[test]
fn divide_train_test_on_a_sample_subset() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    // The first 30 products of the bundled sample.
    let sample = std::fs::read_to_string(repo_root().join("image_data.csv")).unwrap();
    let subset: String = sample.lines().take(31).map(|l| format!("{l}\n")).collect();
    std::fs::write(work.join("products.csv"), subset).unwrap();
    let images = repo_root().join("sample_images");
    let config = serde_json::json!({
        "data": {"base_image_path": images},
        "model": {"pretrained": false, "freeze_backbone_epochs": 1, "dropout_rate": 0.2},
        "training": {"batch_size": 16, "epochs": 2, "learning_rate": 0.002, "backbone_lr": 0.002},
        "augmentation": {"image_size": 48},
        // Thresholds, so the decision rule is more than argmax: training's test evaluation
        // and `test` must apply the same one.
        "inference": {"batch_size": 32, "return_top_k": 2, "class_thresholds": {"full_shot": 0.99, "detail_shot": 0.99, "care_label": 0.99}},
        "logging": {"log_frequency": 2},
        "system": {"num_workers": 2, "device": "cpu"}
    });
    std::fs::write(work.join("config.json"), serde_json::to_string_pretty(&config).unwrap()).unwrap();

    ok(run(work, DIVIDE, &["--input-file", "products.csv", "--random-state", "3"]));
    let train_out = ok(run(work, TRAIN, &["--config", "config.json"]));
    let stdout = String::from_utf8_lossy(&train_out.stdout);
    let stderr = String::from_utf8_lossy(&train_out.stderr);
    assert!(stdout.contains("test accuracy:"), "{stdout}");
    // Not a terminal: plain progress lines and per-epoch summaries.
    assert!(stderr.contains("epoch 1/2") && stderr.contains("epoch 2/2"), "{stderr}");
    assert!(stderr.contains("backbone unfrozen"), "{stderr}");

    let run_dir = only_entry(&work.join("results"));
    check_run_folder(work, &run_dir);
    let best = run_dir.join("model/best_model.safetensors");
    check_dataset_mode(work, &run_dir);
    check_csv_and_single_image_modes(work, &best);
}

/// What `train` wrote: folder layout, effective config, metadata, evaluation, history, logs.
fn check_run_folder(work: &Path, run_dir: &Path) {
    let name = run_dir.file_name().unwrap().to_string_lossy().to_string();
    assert!(name.starts_with("run_") && name.len() == "run_YYYYMMDD_HHMMSS_12345678".len(), "{name}");
    for sub in ["model", "logs", "checkpoints"] {
        assert!(run_dir.join(sub).is_dir(), "{sub}/ missing");
    }
    let saved_config = read_json(&run_dir.join("config.json"));
    assert_eq!(saved_config["augmentation"]["image_size"], 48);
    assert_eq!(saved_config["training"]["epochs"], 2);
    let metadata = read_json(&run_dir.join("run_metadata.json"));
    assert_eq!(metadata["run_id"], name.as_str());
    assert!(metadata["device"].as_str().unwrap().starts_with("cpu"));
    let evaluation = read_json(&run_dir.join("evaluation_results.json"));
    let accuracy = evaluation["metrics"]["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&accuracy));
    assert!(evaluation["metrics"]["macro_avg"]["f1"].is_number());
    assert!(evaluation["metrics"]["weighted_avg"]["f1"].is_number());
    // The Python system's flat keys, with the same values.
    let m = &evaluation["metrics"];
    assert_eq!(m["f1_macro"], m["macro_avg"]["f1"]);
    assert_eq!(m["precision_weighted"], m["weighted_avg"]["precision"]);
    assert_eq!(m["recall_micro"], m["micro_avg"]["recall"]);
    assert_eq!(m["auc_macro"], m["roc_auc_macro"]);
    assert_eq!(m["auc_weighted"], m["roc_auc_weighted"]);
    // The temperature fitted on the validation split, reported and stored in the best model.
    let calibration = &evaluation["calibration"];
    let temperature = calibration["temperature"].as_f64().unwrap();
    assert!(temperature > 0.05 && temperature < 20.0, "{calibration}");
    let validation_rows = read_csv(&work.join("data/validation_data.csv")).1.len() as u64;
    assert_eq!(calibration["validation"]["images"].as_u64(), Some(validation_rows), "{calibration}");
    for split in ["validation", "test"] {
        for key in ["ece_before", "ece_after"] {
            assert!((0.0..=1.0).contains(&calibration[split][key].as_f64().unwrap()), "{calibration}");
        }
    }
    let stored = imgtype::model::ModelFile::read(&run_dir.join("model/best_model.safetensors")).unwrap();
    assert_eq!(stored.metadata.config.inference.temperature, temperature);
    assert!(run_dir.join("reliability_diagram.png").is_file());
    let confusion = evaluation["metrics"]["confusion_matrix"].as_array().unwrap();
    assert_eq!(confusion.len(), 4);
    let test_rows = read_csv(&work.join("data/test_data.csv")).1.len() as u64;
    let counted: u64 = confusion.iter().flat_map(|r| r.as_array().unwrap()).map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(counted, test_rows, "every test image scored");
    let history = read_json(&run_dir.join("logs/training_results.json"));
    assert_eq!(history["history"].as_array().unwrap().len(), 2);
    assert_eq!(history["history"][0]["backbone_frozen"], true);
    assert_eq!(history["history"][1]["backbone_frozen"], false);
    assert_eq!(read_csv(&run_dir.join("logs/metrics.csv")).1.len(), 2);
    let app_log = std::fs::read_to_string(run_dir.join("logs/application.log")).unwrap();
    assert!(app_log.contains("epoch 2/2"), "{app_log}");
    assert!(run_dir.join("logs/error.log").exists());
    assert!(run_dir.join("checkpoints/latest_checkpoint.safetensors").is_file());
    assert!(run_dir.join("model/best_model.safetensors").is_file());
}

/// Whole-dataset mode, from the run folder: one row per image, wrong-prediction files.
fn check_dataset_mode(work: &Path, run_dir: &Path) {
    let test_out = ok(run(work, TEST, &["--model-path", run_dir.to_str().unwrap()]));
    assert!(String::from_utf8_lossy(&test_out.stdout).contains("test       accuracy"));
    let result_dir = only_entry(&work.join("test_result"));
    // One decision rule: training's final test evaluation and `test` agree on the test split.
    let training_eval = read_json(&run_dir.join("evaluation_results.json"))["metrics"].clone();
    let test_metrics = read_json(&result_dir.join("metrics.json"))["test"].clone();
    assert_eq!(training_eval["accuracy"], test_metrics["accuracy"]);
    assert_eq!(training_eval["confusion_matrix"], test_metrics["confusion_matrix"]);
    let (header, rows) = read_csv(&result_dir.join("inference_results.csv"));
    let total: usize = ["train_data.csv", "validation_data.csv", "test_data.csv"]
        .iter()
        .map(|f| read_csv(&work.join("data").join(f)).1.len())
        .sum();
    assert_eq!(rows.len(), total, "one row per image of the three splits");
    let col = |name: &str| header.iter().position(|h| h == name).unwrap_or_else(|| panic!("no {name} in {header:?}"));
    let (true_col, pred_col, conf_col, split_col) =
        (col("true_class"), col("predicted_class"), col("confidence"), col("split"));
    for c in ["prob_care_label", "prob_detail_shot", "prob_full_shot", "prob_neck_label", "top_k", "inference_ms"] {
        col(c);
    }
    // inference_ms is each image's own time, not a batch average copied onto every row.
    let ms_col = col("inference_ms");
    let distinct: HashSet<&str> = rows.iter().map(|r| r[ms_col].as_str()).collect();
    assert!(
        distinct.len() > rows.len() / 2,
        "{} distinct inference_ms values over {} rows",
        distinct.len(),
        rows.len()
    );
    let probability_cols: Vec<usize> =
        ["prob_care_label", "prob_detail_shot", "prob_full_shot", "prob_neck_label"].iter().map(|c| col(c)).collect();
    let classes = ["care_label", "detail_shot", "full_shot", "neck_label"];
    let not_argmax = rows
        .iter()
        .filter(|r| {
            let p: Vec<f64> = probability_cols.iter().map(|&c| r[c].parse().unwrap()).collect();
            let argmax = (0..4).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap();
            r[pred_col] != classes[argmax]
        })
        .count();
    assert!(not_argmax > 0, "the thresholds changed no prediction: the test proves nothing");
    for (split, short) in [("train", "train"), ("validation", "valid"), ("test", "test")] {
        let (wrong_header, wrong) = read_csv(&result_dir.join(format!("wrong_{short}.csv")));
        assert_eq!(wrong_header, header);
        let expected = rows.iter().filter(|r| r[split_col] == split && r[true_col] != r[pred_col]).count();
        assert_eq!(wrong.len(), expected, "wrong_{short}.csv holds exactly the wrong predictions");
        assert!(wrong.iter().all(|r| r[true_col] != r[pred_col]));
        let confidences: Vec<f64> = wrong.iter().map(|r| r[conf_col].parse().unwrap()).collect();
        assert!(confidences.windows(2).all(|w| w[0] >= w[1]), "wrong_{short}.csv not sorted: {confidences:?}");
    }
}

/// CSV mode on the test split, then single-image mode with JSON output.
fn check_csv_and_single_image_modes(work: &Path, best: &Path) {
    let test_rows = read_csv(&work.join("data/test_data.csv")).1.len() as u64;
    let output = work.join("predictions.csv");
    ok(run(
        work,
        TEST,
        &[
            "--model-path",
            best.to_str().unwrap(),
            "--csv-path",
            "data/test_data.csv",
            "--output-path",
            output.to_str().unwrap(),
        ],
    ));
    let (csv_header, csv_rows) = read_csv(&output);
    assert_eq!(csv_rows.len() as u64, test_rows);
    assert!(csv_header.contains(&"true_class".to_string()) && csv_header.contains(&"correct".to_string()));
    let first_image = &read_csv(&work.join("data/test_data.csv")).1[0][1];
    let single = ok(run(work, TEST, &["--model-path", best.to_str().unwrap(), "--image-path", first_image, "--json"]));
    let single: serde_json::Value = serde_json::from_slice(&single.stdout).unwrap();
    let classes: HashSet<&str> = ["care_label", "detail_shot", "full_shot", "neck_label"].into();
    assert!(classes.contains(single["predicted_class"].as_str().unwrap()));
    let total_probability: f64 =
        single["probabilities"].as_object().unwrap().values().map(|v| v.as_f64().unwrap()).sum();
    assert!((total_probability - 1.0).abs() < 1e-4);
    assert_eq!(single["top_k"].as_array().unwrap().len(), 2);
}

#[test]
fn train_reports_a_bad_config_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.json"), r#"{"training": {"optimizer": "adagrad"}}"#).unwrap();
    let output = run(dir.path(), TRAIN, &["--config", "bad.json"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("bad.json") && stderr.contains("training.optimizer") && stderr.contains("adagrad"),
        "{stderr}"
    );
    assert!(!dir.path().join("results").exists(), "no run folder for a config that does not validate");
}

/// On a model trained on the bundled sample, bf16 inference (the default where the CPU has
/// it) and the OpenVINO engine (fp32 and bf16) take the decisions libtorch fp32 takes: argmax
/// agreement ≥ 99.5% over every image of the three splits; INT8 (the ranges `train` stored)
/// ≥ 95%, its accuracy within 3 points.
#[test]
fn reduced_precision_decides_as_fp32_on_a_trained_model() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let mut config = demo_config();
    config["training"]["epochs"] = serde_json::json!(8);
    let run_dir = divide_and_train(work, &config);
    let engines =
        [("libtorch", "fp32"), ("libtorch", "bf16"), ("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8")];
    let predictions: Vec<Predictions> =
        engines.iter().map(|(engine, precision)| predict_splits(work, &run_dir, engine, precision)).collect();
    // INT8 by the model: training is repeatable only on a quiet machine (libtorch gives up cores
    // to other jobs), and each model quantises differently: this recipe's model agreed on 376
    // of 376 three times alone and on 368 beside another build; of eight 12-epoch demo models
    // one agreed on 357 (README, "Agreement with fp32"). A broken INT8 path agrees on far fewer.
    for (index, least, within) in [(1, 0.995, 0.01), (2, 0.995, 0.01), (3, 0.995, 0.01), (4, 0.95, 0.03)] {
        let name = format!("{} {}", engines[index].0, engines[index].1);
        predictions[index].check_against(&predictions[0], &name, least, within);
    }
    // train checked INT8 against its own evaluation (libtorch, `auto`) on the test images, as
    // `test` decides them (a near tie may go the other way in another batch: within one).
    let auto = predict_splits(work, &run_dir, "libtorch", "auto");
    let test_rows: Vec<usize> = (0..auto.split.len()).filter(|&i| auto.split[i] == "test").collect();
    let agree = test_rows.iter().filter(|&&i| auto.predicted[i] == predictions[4].predicted[i]).count();
    let checked = &imgtype_testkit::read_json(&run_dir.join("final_results.json"))["int8_test_agreement"];
    assert_eq!(checked["images"], test_rows.len(), "{checked}");
    assert!(checked["same_class"].as_u64().unwrap().abs_diff(agree as u64) <= 1, "{checked} / {agree}");
}

/// The demo config on the bundled sample, its paths absolute.
fn demo_config() -> serde_json::Value {
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo_root().join("configs/demo.json")).unwrap()).unwrap();
    config["data"]["base_image_path"] = serde_json::json!(repo_root().join("sample_images"));
    config["data"]["csv_path"] = serde_json::json!(repo_root().join("image_data.csv"));
    config
}

/// `divide` of the bundled products into `work/data`, then `train` with `config`; the run folder.
fn divide_and_train(work: &Path, config: &serde_json::Value) -> std::path::PathBuf {
    std::fs::write(work.join("config.json"), config.to_string()).unwrap();
    let products = repo_root().join("image_data.csv");
    ok(run(work, DIVIDE, &["--input-file", products.to_str().unwrap(), "--random-state", "2025"]));
    ok(run(work, TRAIN, &["--config", "config.json"]));
    only_entry(&work.join("results"))
}

/// The predicted and the true class of every image of the three splits, by one engine.
struct Predictions {
    predicted: Vec<String>,
    truth: Vec<String>,
    /// Each image's split file: train, validation or test.
    split: Vec<String>,
}

impl Predictions {
    /// Asserts that at least `least` of the decisions are `reference`'s, and the accuracy is
    /// within `within` of it.
    fn check_against(&self, reference: &Predictions, name: &str, least: f64, within: f64) {
        let total = reference.predicted.len();
        assert_eq!(self.predicted.len(), total, "{name}: as many predictions");
        let agree = reference.predicted.iter().zip(&self.predicted).filter(|(a, b)| a == b).count();
        let (accuracy, reference_accuracy) = (self.accuracy(), reference.accuracy());
        println!(
            "{name} vs fp32: {agree} of {total} predictions agree; accuracy {accuracy:.4} vs {reference_accuracy:.4}"
        );
        assert!(agree as f64 >= least * total as f64, "{name}: {agree} of {total}");
        assert!((accuracy - reference_accuracy).abs() <= within, "{name}: accuracy {accuracy} vs {reference_accuracy}");
    }

    fn accuracy(&self) -> f64 {
        let correct = self.predicted.iter().zip(&self.truth).filter(|(p, t)| p == t).count();
        correct as f64 / self.predicted.len() as f64
    }
}

/// `test` over every split of `work/data` with `model`, on `engine` in `precision`.
fn predict_splits(work: &Path, model: &Path, engine: &str, precision: &str) -> Predictions {
    let stem = model.file_stem().unwrap().to_string_lossy();
    let (out, data) = (work.join(format!("{stem}-{engine}-{precision}")), work.join("data"));
    let args = [
        "--model-path",
        model.to_str().unwrap(),
        "--precision",
        precision,
        "--engine",
        engine,
        "--data-dir",
        data.to_str().unwrap(),
        "--output-dir",
        out.to_str().unwrap(),
    ];
    ok(run(work, TEST, &args));
    let results = only_entry(&out);
    let timing = imgtype_testkit::read_json(&results.join("timing.json"));
    if precision != "auto" {
        assert_eq!(timing["engine"], format!("{engine} {precision}"), "timing.json names the engine");
    }
    let (header, rows) = read_csv(&results.join("inference_results.csv"));
    let column = |name: &str| header.iter().position(|h| h == name).unwrap();
    let (predicted, truth, split) = (column("predicted_class"), column("true_class"), column("split"));
    Predictions {
        predicted: rows.iter().map(|r| r[predicted].clone()).collect(),
        truth: rows.iter().map(|r| r[truth].clone()).collect(),
        split: rows.iter().map(|r| r[split].clone()).collect(),
    }
}

/// MobileNetV3 in INT8 (its hard-swish layers and depthwise convolutions are where INT8
/// without bias correction breaks), and a model file without INT8 ranges: refused for
/// `--precision int8` with the command that measures them, which then makes it servable.
#[test]
fn int8_on_a_trained_mobilenet_v3_and_an_uncalibrated_model_file() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let mut config = demo_config();
    config["model"]["backbone"] = serde_json::json!("mobilenet_v3_large");
    // torchvision's MobileNetV3 BatchNorm momentum is 0.01: its running statistics need
    // about a thousand steps before eval mode predicts what training learnt.
    config["training"]["batch_size"] = serde_json::json!(8);
    config["training"]["epochs"] = serde_json::json!(30);
    config["training"]["patience"] = serde_json::json!(30);
    config["training"]["learning_rate"] = serde_json::json!(0.001);
    config["training"]["backbone_lr"] = serde_json::json!(0.001);
    let run_dir = divide_and_train(work, &config);
    let images = repo_root().join("sample_images");
    let fp32 = predict_splits(work, &run_dir, "libtorch", "fp32");
    assert!(fp32.accuracy() >= 0.8, "the model learnt something: accuracy {}", fp32.accuracy());
    // Training on two threads is not repeatable, so each run judges another model. On a 2-core
    // Zen 4 with VNNI (±127 weights) it met 98% and 1 point in two runs and missed in two
    // (370 and 364 of 376 agreeing, 1.6 and 3.2 points lower); weights that overflow (±127
    // without VNNI) agreed on 350.
    predict_splits(work, &run_dir, "openvino", "int8").check_against(&fp32, "MobileNetV3 int8", 0.96, 0.04);

    // The last model is saved during training, without INT8 ranges.
    let last = run_dir.join("model/last_model.safetensors");
    let refused =
        run(work, TEST, &["--model-path", last.to_str().unwrap(), "--precision", "int8", "--image-path", "x.jpg"]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("no") && stderr.contains("--int8-calibrate"), "{stderr}");
    let onnx = work.join("last.onnx");
    let export =
        ["--model-path", last.to_str().unwrap(), "--export-onnx", onnx.to_str().unwrap(), "--precision", "int8"];
    assert_eq!(run(work, TEST, &export).status.code(), Some(1), "no QDQ export without ranges");
    assert!(!onnx.exists());

    // Written beside the model file unless --output-path says where.
    let calibrated = run_dir.join("model/last_model_int8.safetensors");
    let train_csv = work.join("data/train_data.csv");
    let calibrate = [
        "--model-path",
        last.to_str().unwrap(),
        "--int8-calibrate",
        train_csv.to_str().unwrap(),
        "--image-base-path",
        images.to_str().unwrap(),
    ];
    let stdout = String::from_utf8(ok(run(work, TEST, &calibrate)).stdout).unwrap();
    assert!(stdout.contains("measured on 300 images") && stdout.contains(calibrated.to_str().unwrap()), "{stdout}");
    let last_fp32 = predict_splits(work, &last, "libtorch", "fp32");
    let last_int8 = predict_splits(work, &calibrated, "openvino", "int8");
    last_int8.check_against(&last_fp32, "calibrated last model int8", 0.98, 0.01);
    let export =
        ["--model-path", calibrated.to_str().unwrap(), "--export-onnx", onnx.to_str().unwrap(), "--precision", "int8"];
    ok(run(work, TEST, &export));
    let bytes = std::fs::read(&onnx).unwrap();
    let count = |op: &[u8]| bytes.windows(op.len()).filter(|w| *w == op).count();
    assert!(count(b"QuantizeLinear") >= 40, "a QDQ graph: {} QuantizeLinear", count(b"QuantizeLinear"));
    // 7-bit weights, whatever this CPU: the file may be served on one without VNNI.
    assert_eq!(count(b"7-bit weights"), 1, "the export's metadata names its weights' range");
}
