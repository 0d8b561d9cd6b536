//! `train` features as a user meets them: resume gives the same run as no interruption,
//! SIGINT saves a resumable checkpoint, unreadable images are skipped and listed (or stop
//! the run past `data.max_bad_image_ratio`), and every artefact is written.

use std::path::{Path, PathBuf};

use imgtype_testkit::{copy_dir, ok, read_csv, repo_root, run, run_interrupted, run_python, sample_images, walk};

const TRAIN: &str = env!("CARGO_BIN_EXE_train");
const DIVIDE: &str = env!("CARGO_BIN_EXE_divide");

/// A work folder with the first `products` products of the sample split, and a config.
fn setup(products: usize, config: serde_json::Value) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let sample = std::fs::read_to_string(repo_root().join("image_data.csv")).unwrap();
    let subset: String = sample.lines().take(products + 1).map(|l| format!("{l}\n")).collect();
    std::fs::write(dir.path().join("products.csv"), subset).unwrap();
    ok(run(dir.path(), imgtype_testkit::binary(DIVIDE), &["--input-file", "products.csv", "--random-state", "11"]));
    let mut base = serde_json::json!({
        "data": {"base_image_path": sample_images()},
        "model": {"pretrained": false, "freeze_backbone_epochs": 1, "dropout_rate": 0.2},
        "training": {"batch_size": 16, "epochs": 4, "learning_rate": 0.002, "backbone_lr": 0.002, "warmup_epochs": 1, "use_ema": true, "ema_decay": 0.9},
        "augmentation": {"image_size": 32, "strength": "medium", "mixup_alpha": 0.2},
        "system": {"num_workers": 1, "num_threads": 1, "device": "cpu", "seed": 3}
    });
    merge(&mut base, config);
    std::fs::write(dir.path().join("config.json"), serde_json::to_string_pretty(&base).unwrap()).unwrap();
    dir
}

fn merge(base: &mut serde_json::Value, extra: serde_json::Value) {
    if let (Some(b), serde_json::Value::Object(e)) = (base.as_object_mut(), extra) {
        for (k, v) in e {
            match b.get_mut(&k) {
                Some(existing) if existing.is_object() && v.is_object() => merge(existing, v),
                _ => {
                    b.insert(k, v);
                }
            }
        }
    }
}

/// The run folder `train` printed, as a path from the test (train prints it relative to its work folder).
fn run_dir_from(work: &Path, stdout: &[u8]) -> PathBuf {
    let text = String::from_utf8_lossy(stdout);
    let line = text.lines().find_map(|l| l.strip_prefix("run folder: ")).unwrap_or_else(|| panic!("{text}"));
    work.join(line.trim())
}

fn metrics_rows(run_dir: &Path) -> Vec<Vec<String>> {
    read_csv(&run_dir.join("logs/metrics.csv")).1
}

#[test]
fn stop_and_resume_equals_an_uninterrupted_run() {
    let dir = setup(24, serde_json::json!({}));
    let work = dir.path();
    let straight = run_dir_from(work, &ok(run(work, TRAIN, &["--config", "config.json"])).stdout);
    // `system.num_threads` fixes the compute threads from the start, and the metadata says so.
    let metadata = imgtype_testkit::read_json(&straight.join("run_metadata.json"));
    assert_eq!(metadata["torch_threads"], 1, "{metadata}");
    assert!(metadata["device"].as_str().unwrap().contains("(1 threads)"), "{metadata}");

    let paused = ok(run(work, TRAIN, &["--config", "config.json", "--stop-after", "2"]));
    // The stop on stderr, as in every binary; the folder on stdout, as a finished run's.
    let stderr = String::from_utf8_lossy(&paused.stderr).to_string();
    assert!(stderr.contains("paused after 2 epoch(s)") && stderr.contains("train --resume"), "{stderr}");
    assert!(!String::from_utf8_lossy(&paused.stdout).contains("paused after"));
    let resumed_dir = run_dir_from(work, &paused.stdout);
    assert_eq!(metrics_rows(&resumed_dir).len(), 2);
    assert!(!resumed_dir.join("evaluation_results.json").exists());
    // Other split files (divided again, edited) are refused before anything is recorded; the
    // run goes on once they are back.
    let train_csv = work.join("data/train_data.csv");
    let original = std::fs::read(&train_csv).unwrap();
    std::fs::write(&train_csv, [original.as_slice(), b"\n"].concat()).unwrap();
    let refused = run(work, TRAIN, &["--resume", resumed_dir.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("are not those the run began with"), "{stderr}");
    assert!(!resumed_dir.join("final_results.json").exists(), "nothing recorded");
    std::fs::write(&train_csv, original).unwrap();
    let resumed = ok(run(work, TRAIN, &["--resume", resumed_dir.to_str().unwrap()]));
    assert!(String::from_utf8_lossy(&resumed.stdout).contains("test accuracy:"));

    let (a, b) = (metrics_rows(&straight), metrics_rows(&resumed_dir));
    assert_eq!(a.len(), 4);
    assert_eq!(b.len(), 4);
    // Columns: epoch, frozen, train_loss, train_acc, val_loss, val_acc, f1_macro, f1_weighted, lr_head, lr_backbone, …
    for (ra, rb) in a.iter().zip(&b) {
        assert_eq!(ra[..2], rb[..2]);
        assert_eq!(ra[8..10], rb[8..10], "learning rates differ: {ra:?} vs {rb:?}");
        for col in [2, 3, 4, 5, 6, 7] {
            let (x, y): (f64, f64) = (ra[col].parse().unwrap(), rb[col].parse().unwrap());
            assert!((x - y).abs() <= 1e-4 * x.abs().max(1.0), "column {col}: {x} vs {y}\n{ra:?}\n{rb:?}");
        }
    }
    let lrs: Vec<f64> = a.iter().map(|r| r[8].parse().unwrap()).collect();
    // Frozen epoch 1 (a one-epoch phase, warm-up at half rate), then the unfrozen phase
    // rebuilt: warm-up, then cosine over its 3 epochs.
    for (got, expected) in lrs.iter().zip([0.001, 0.001, 0.0015, 0.0005]) {
        assert!((got - expected).abs() < 1e-12, "learning rates {lrs:?}");
    }
    let eval = |d: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(d.join("evaluation_results.json")).unwrap()).unwrap()
    };
    let (ea, eb) = (eval(&straight), eval(&resumed_dir));
    assert_eq!(ea["metrics"]["confusion_matrix"], eb["metrics"]["confusion_matrix"]);
    assert_eq!(artefact_names(&straight), artefact_names(&resumed_dir), "same artefacts");
    let out = run(work, TRAIN, &["--resume", resumed_dir.to_str().unwrap()]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("already finished"));

    // TensorBoard: both invocations' event files, read by the tensorboard package, give the
    // metrics.csv values for every epoch, and the final test metrics.
    let scalars = read_tensorboard(&resumed_dir.join("logs"));
    let series = |tag: &str| scalars[tag].as_array().unwrap_or_else(|| panic!("no {tag} in {scalars}")).clone();
    for (tag, col) in [("train/loss", 2), ("train/accuracy", 3), ("lr/head", 8)] {
        let points = series(tag);
        assert_eq!(points.len(), 4, "{tag}: {points:?}");
        for (point, row) in points.iter().zip(&b) {
            let (step, value) = (point[0].as_i64().unwrap(), point[1].as_f64().unwrap());
            let expected: f64 = row[col].parse().unwrap();
            assert_eq!(step.to_string(), row[0]);
            assert!(
                (value - expected).abs() <= 1e-6 * expected.abs().max(1.0),
                "{tag} epoch {step}: {value} vs {expected}"
            );
        }
    }
    let accuracy = eb["metrics"]["accuracy"].as_f64().unwrap();
    let test_points = series("test/accuracy");
    assert_eq!(test_points.len(), 1);
    assert!((test_points[0][1].as_f64().unwrap() - accuracy).abs() < 1e-6);

    // A finished run whose final_results.json was removed (or recorded a failed resume) is not
    // stuck: `--resume` evaluates it again from its checkpoint, with the same figures.
    let final_results = resumed_dir.join("final_results.json");
    let before = imgtype_testkit::read_json(&final_results);
    std::fs::remove_file(&final_results).unwrap();
    let out = ok(run(work, TRAIN, &["--resume", resumed_dir.to_str().unwrap()]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("its final evaluation is done again"));
    let after = imgtype_testkit::read_json(&final_results);
    for key in ["status", "best_epoch", "epochs_run", "test_accuracy", "test_f1_weighted"] {
        assert_eq!(before[key], after[key], "{key}: {before} vs {after}");
    }
    assert_eq!(eval(&resumed_dir)["metrics"]["confusion_matrix"], ea["metrics"]["confusion_matrix"]);
    let out = run(work, TRAIN, &["--resume", resumed_dir.to_str().unwrap()]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("already finished"));
}

/// The files of a run folder, relative to it; each invocation's own TensorBoard event file
/// counts as one name.
fn artefact_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = walk(dir)
        .iter()
        .map(|p| p.strip_prefix(dir).unwrap().display().to_string())
        .map(|p| if p.starts_with("logs/events.out.tfevents.") { "logs/events.out.tfevents.*".to_string() } else { p })
        .collect();
    names.sort();
    names.dedup();
    names
}

fn read_tensorboard(dir: &Path) -> serde_json::Value {
    let output = run_python("tests/python/read_tensorboard.py", &[&dir]);
    serde_json::from_slice(&output.stdout).unwrap()
}

/// `--resume RUN --device D` continues a run on another device than it started on: a run
/// whose config names a GPU this machine lacks finishes on the CPU.
#[test]
fn a_run_resumes_on_another_device() {
    let dir = setup(24, serde_json::json!({"training": {"epochs": 2}}));
    let work = dir.path();
    let run_dir = run_dir_from(work, &ok(run(work, TRAIN, &["--config", "config.json", "--stop-after", "1"])).stdout);
    // As if started on a GPU machine.
    let config_path = run_dir.join("config.json");
    let mut config = imgtype_testkit::read_json(&config_path);
    config["system"]["device"] = "cuda:9".into();
    std::fs::write(&config_path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    let resumes = |dir: &Path| imgtype_testkit::read_json(&dir.join("run_metadata.json"))["resumed_at"].clone();
    let recorded = resumes(&run_dir);
    for device in [None, Some("cuda:7"), Some("mps")] {
        let mut args = vec!["--resume", run_dir.to_str().unwrap()];
        args.extend(device.iter().flat_map(|d| ["--device", *d]));
        let refused = run(work, TRAIN, &args);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success() && stderr.contains(device.unwrap_or("cuda:9")), "{stderr}");
    }
    // Refused before anything was touched: no failed status, no resume recorded.
    assert!(!run_dir.join("final_results.json").exists(), "a refused device does not fail the run");
    assert_eq!(resumes(&run_dir), recorded);
    let resumed = ok(run(work, TRAIN, &["--resume", run_dir.to_str().unwrap(), "--device", "cpu"]));
    assert!(String::from_utf8_lossy(&resumed.stdout).contains("test accuracy:"));
    assert_eq!(metrics_rows(&run_dir).len(), 2);
    assert_eq!(imgtype_testkit::read_json(&config_path)["system"]["device"], "cuda:9", "config.json keeps its device");
}

/// Training on a CUDA device with mixed precision, a checkpoint written there resumed on the
/// CPU, and the CPU's resumed on CUDA again: every epoch's loss finite, the run finished.
#[test]
fn cuda_checkpoints_move_between_cuda_and_the_cpu() {
    if !imgtype_testkit::cuda_test_runs(
        "cuda_checkpoints_move_between_cuda_and_the_cpu",
        imgtype::device::cuda_available(),
    ) {
        return;
    }
    let dir = setup(
        24,
        serde_json::json!({"training": {"epochs": 3}, "system": {"device": "cuda", "mixed_precision": true}}),
    );
    let work = dir.path();
    let train = imgtype_testkit::binary(TRAIN);
    let started = ok(run(work, &train, &["--config", "config.json", "--stop-after", "1"]));
    let run_dir = run_dir_from(work, &started.stdout);
    let metadata = imgtype_testkit::read_json(&run_dir.join("run_metadata.json"));
    assert!(metadata["device"].as_str().unwrap().contains("cuda"), "{metadata}");
    assert_eq!(metadata["training_precision"], "bf16", "{metadata}");
    let run_arg = run_dir.to_str().unwrap();
    let on_cpu = ok(run(work, &train, &["--resume", run_arg, "--device", "cpu", "--stop-after", "1"]));
    assert!(String::from_utf8_lossy(&on_cpu.stderr).contains("paused after 1 epoch(s)"));
    let finished = ok(run(work, &train, &["--resume", run_arg, "--device", "cuda"]));
    assert!(String::from_utf8_lossy(&finished.stdout).contains("test accuracy:"));
    let rows = metrics_rows(&run_dir);
    assert_eq!(rows.len(), 3);
    for row in &rows {
        let loss: f64 = row[2].parse().unwrap();
        assert!(loss.is_finite(), "epoch {}: train loss {loss}", row[0]);
    }
}

#[test]
fn sigint_saves_a_checkpoint_and_the_run_resumes() {
    let dir = setup(24, serde_json::json!({"training": {"epochs": 40}}));
    let work = dir.path();
    let (code, stdout, log) =
        run_interrupted(work, TRAIN, &["--config", "config.json"], |line| line.contains("epoch 1/40:"));
    assert_eq!(code, Some(130), "{log}");
    assert!(log.contains("checkpoint saved") && log.contains("train --resume"), "{log}");
    let run_dir = run_dir_from(work, stdout.as_bytes());
    let done = metrics_rows(&run_dir).len();
    assert!((1..40).contains(&done), "{done} epochs");
    // What a second signal during a checkpoint save leaves behind; --resume clears it.
    let stray = run_dir.join("checkpoints/.tmp-interrupted-save");
    std::fs::write(&stray, b"half a checkpoint").unwrap();
    let resumed = ok(run(work, TRAIN, &["--resume", run_dir.to_str().unwrap(), "--stop-after", "1"]));
    assert!(String::from_utf8_lossy(&resumed.stderr).contains(&format!("paused after {} epoch(s)", done + 1)));
    assert_eq!(metrics_rows(&run_dir).len(), done + 1);
    assert!(!stray.exists(), "--resume removes temp files of interrupted writes");
}

/// SIGINT in the middle of an epoch (at batch 3 of epoch 2), then `--resume`: the same
/// metrics.csv as a straight run, bar the timing columns, and the same test evaluation.
#[test]
fn sigint_mid_epoch_then_resume_equals_a_straight_run() {
    let dir = setup(24, serde_json::json!({"training": {"epochs": 3}, "logging": {"log_frequency": 1}}));
    let work = dir.path();
    let straight = run_dir_from(work, &ok(run(work, TRAIN, &["--config", "config.json"])).stdout);

    let (code, stdout, log) =
        run_interrupted(work, TRAIN, &["--config", "config.json"], |line| line.contains("epoch 2/3 3/"));
    assert_eq!(code, Some(130), "{log}");
    let run_dir = run_dir_from(work, stdout.as_bytes());
    assert_eq!(metrics_rows(&run_dir).len(), 1, "stopped inside epoch 2:\n{log}");
    let resumed = ok(run(work, TRAIN, &["--resume", run_dir.to_str().unwrap()]));
    let resumed_log = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed_log.contains("resuming") && resumed_log.contains("at epoch 2 batch"), "{resumed_log}");
    assert!(!resumed_log.contains("at epoch 2 batch 1\n"), "resumed inside the epoch: {resumed_log}");

    let (header, a) = read_csv(&straight.join("logs/metrics.csv"));
    let b = metrics_rows(&run_dir);
    assert_eq!(a.len(), 3);
    assert_eq!(b.len(), 3);
    let timing: Vec<usize> = header.iter().enumerate().filter(|(_, h)| h.contains("second")).map(|(i, _)| i).collect();
    assert!(!timing.is_empty(), "{header:?}");
    for (ra, rb) in a.iter().zip(&b) {
        for (col, (x, y)) in ra.iter().zip(rb).enumerate() {
            if !timing.contains(&col) {
                assert_eq!(x, y, "{}: {ra:?} vs {rb:?}", header[col]);
            }
        }
    }
    let eval = |d: &Path| imgtype_testkit::read_json(&d.join("evaluation_results.json"))["metrics"].clone();
    assert_eq!(eval(&straight), eval(&run_dir));
}

#[test]
fn inputs_are_checked_before_a_run_folder_exists_and_missing_classes_are_named() {
    let dir = setup(20, serde_json::json!({"training": {"epochs": 1}, "model": {"freeze_backbone_epochs": 0}}));
    let work = dir.path();
    let train_csv = std::fs::read_to_string(work.join("data/train_data.csv")).unwrap();
    // A class the config does not list: refused before any folder is made.
    std::fs::write(work.join("data/train_data.csv"), train_csv.replacen("full_shot", "shoe", 1)).unwrap();
    let out = run(work, TRAIN, &["--config", "config.json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("`shoe` is not one of the classes"), "{stderr}");
    assert!(!work.join("results").exists(), "no run folder for inputs that fail their checks");

    // No neck_label image to train on: an error unless allowed, which then warns.
    let without: String = train_csv.lines().filter(|l| !l.ends_with(",neck_label")).map(|l| format!("{l}\n")).collect();
    std::fs::write(work.join("data/train_data.csv"), without).unwrap();
    let out = run(work, TRAIN, &["--config", "config.json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("no `neck_label` image"), "{stderr}");
    let config_text = std::fs::read_to_string(work.join("config.json")).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&config_text).unwrap();
    config["data"]["allow_empty_train_classes"] = serde_json::json!(true);
    std::fs::write(work.join("config.json"), config.to_string()).unwrap();
    let out = ok(run(work, TRAIN, &["--config", "config.json"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("WARN") && stderr.contains("the train split has no `neck_label` image"), "{stderr}");
}

#[test]
fn unreadable_images_are_skipped_and_listed_or_stop_the_run() {
    let dir = setup(20, serde_json::json!({"training": {"epochs": 1}, "model": {"freeze_backbone_epochs": 0}}));
    let work = dir.path();
    // One train image made unreadable: a copy of the sample with a broken file.
    let images = work.join("images");
    copy_dir(&sample_images(), &images);
    let train_csv = std::fs::read_to_string(work.join("data/train_data.csv")).unwrap();
    let victim = train_csv.lines().nth(1).unwrap().split(',').nth(1).unwrap().to_string();
    std::fs::write(images.join(&victim), b"this is not a jpeg").unwrap();
    let config_text = std::fs::read_to_string(work.join("config.json")).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&config_text).unwrap();
    config["data"]["base_image_path"] = serde_json::json!(images);
    std::fs::write(work.join("config.json"), config.to_string()).unwrap();

    let out = run(work, TRAIN, &["--config", "config.json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("train split") && stderr.contains("max_bad_image_ratio") && stderr.contains(&victim),
        "{stderr}"
    );
    // The failed run's folder says why, for whoever finds it later.
    let failed_dir = imgtype_testkit::only_entry(&work.join("results"));
    let failed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(failed_dir.join("final_results.json")).unwrap()).unwrap();
    assert_eq!(failed["status"], "failed");
    assert!(failed["error"].as_str().unwrap().contains("max_bad_image_ratio"), "{failed}");
    let error_log = std::fs::read_to_string(failed_dir.join("logs/error.log")).unwrap();
    assert!(error_log.contains("ERROR") && error_log.contains("max_bad_image_ratio"), "{error_log}");
    std::fs::remove_dir_all(&failed_dir).unwrap();

    config["data"]["max_bad_image_ratio"] = serde_json::json!(0.2);
    std::fs::write(work.join("config.json"), config.to_string()).unwrap();
    let out = ok(run(work, TRAIN, &["--config", "config.json"]));
    let run_dir = run_dir_from(work, &out.stdout);
    let skipped = std::fs::read_to_string(run_dir.join("logs/skipped_images.csv")).unwrap();
    assert!(skipped.starts_with("split,image_path,reason\n") && skipped.contains(&victim), "{skipped}");
    let finals: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("final_results.json")).unwrap()).unwrap();
    assert_eq!(finals["skipped_images"], 1);
    assert_eq!(finals["status"], "finished");
    let errors = std::fs::read_to_string(run_dir.join("logs/error.log")).unwrap();
    assert!(errors.contains(&victim) && !errors.contains(" INFO "), "{errors}");
    for png in
        ["logs/training_curves.png", "confusion_matrix.png", "classification_report.png", "probability_analysis.png"]
    {
        let image = image::open(run_dir.join(png)).unwrap_or_else(|e| panic!("{png}: {e}"));
        assert!(image.width() >= 800 && image.height() >= 300, "{png}");
    }
}

#[test]
fn validation_settings_overrides_and_metadata_are_honoured() {
    let dir = setup(
        20,
        serde_json::json!({
            "model": {"freeze_backbone_epochs": 0},
            "training": {"epochs": 9, "patience": 1, "min_delta": 10.0, "early_stopping": true},
            "validation": {"val_frequency": 2, "metric": "accuracy", "save_last_model": false},
            "logging": {"save_frequency": 2, "log_level": "warn"}
        }),
    );
    let work = dir.path();
    // --epochs and --batch-size override the config and are recorded in the run's config.json.
    let out = ok(run(work, TRAIN, &["--config", "config.json", "--epochs", "8", "--batch-size", "8"]));
    let run_dir = run_dir_from(work, &out.stdout);
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(saved["training"]["epochs"], 8);
    assert_eq!(saved["training"]["batch_size"], 8);
    // Validation every 2nd epoch; min_delta 10 means no validation after the first improves,
    // so with patience 1 the run stops after the second validation (epoch 4).
    let rows = metrics_rows(&run_dir);
    assert_eq!(rows.len(), 4, "{rows:?}");
    for row in &rows {
        let epoch: usize = row[0].parse().unwrap();
        assert_eq!(row[4].is_empty(), epoch % 2 == 1, "val_loss present only on validated epochs: {row:?}");
    }
    let finals: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("final_results.json")).unwrap()).unwrap();
    assert_eq!(finals["stopped_early"], true);
    assert_eq!(finals["best_epoch"], 2);
    assert_eq!(finals["validation_metric"], "accuracy");
    assert!(run_dir.join("model/best_model.safetensors").is_file());
    assert!(!run_dir.join("model/last_model.safetensors").exists(), "save_last_model false");
    for epoch in [2, 4] {
        assert!(run_dir.join(format!("checkpoints/checkpoint_epoch_{epoch:03}.safetensors")).is_file());
    }
    assert!(!run_dir.join("checkpoints/checkpoint_epoch_001.safetensors").exists());
    assert!(work.join("models/best_model.safetensors").is_file(), "best model copied to paths.model_dir");
    let evaluation: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("evaluation_results.json")).unwrap()).unwrap();
    for key in ["accuracy", "macro_avg", "micro_avg", "weighted_avg", "per_class", "confusion_matrix", "roc_auc_macro"]
    {
        assert!(evaluation["metrics"].get(key).is_some(), "{key} missing");
    }
    let metadata: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("run_metadata.json")).unwrap()).unwrap();
    assert!(metadata["libtorch_version"].as_str().unwrap().starts_with("2.13.0"), "{metadata}");
    for key in ["device", "torch_threads", "cpu_cores", "data_workers", "imgtype_version", "start_time"] {
        assert!(!metadata[key].is_null(), "{key} missing in {metadata}");
    }
    // log_level warn: the per-epoch INFO lines are not logged.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("epoch 1/8:"), "{stderr}");
}

#[test]
fn quick_test_progress_lines_and_mixed_precision_on_cpu() {
    let dir = setup(20, serde_json::json!({"logging": {"log_frequency": 1}, "system": {"mixed_precision": true}}));
    let work = dir.path();
    let out = ok(run(work, TRAIN, &["--config", "config.json", "--quick-test", "--stop-after", "1"]));
    let run_dir = run_dir_from(work, &out.stdout);
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(saved["training"]["epochs"], 5);
    assert_eq!(saved["training"]["patience"], 3);
    assert_eq!(saved["model"]["freeze_backbone_epochs"], 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Not a terminal: one plain line per batch (log_frequency 1) and one per epoch.
    let batches = std::fs::read_to_string(work.join("data/train_data.csv"))
        .unwrap()
        .lines()
        .count()
        .saturating_sub(1)
        .div_ceil(16);
    for b in 1..=batches {
        assert!(stderr.contains(&format!("epoch 1/5 {b}/{batches} loss")), "batch line {b} missing:\n{stderr}");
    }
    assert!(stderr.contains("epoch 1/5: train loss"), "{stderr}");
    // system.mixed_precision: bf16 training where the CPU has it natively, else fp32 and a warning.
    if imgtype::device::has_native_bf16(tch::Device::Cpu) {
        assert!(stderr.contains("training in bf16"), "{stderr}");
    } else {
        assert!(stderr.contains("no native bf16 arithmetic; training in fp32"), "{stderr}");
    }
}

/// A train split one image past a whole number of batches: that image joins the last batch
/// instead of making a batch of one, whose BatchNorm variance (of a single value where the
/// backbone's map is 1×1 at 32 px) made every later evaluation NaN.
#[test]
fn a_last_image_alone_does_not_poison_batchnorm() {
    let dir = setup(
        22,
        serde_json::json!({
            "model": {"backbone": "mobilenet_v3_small", "freeze_backbone_epochs": 0},
            "training": {"epochs": 1, "use_ema": false},
            "augmentation": {"mixup_alpha": 0.0}
        }),
    );
    let work = dir.path();
    let train_csv = work.join("data/train_data.csv");
    let text = std::fs::read_to_string(&train_csv).unwrap();
    let rows: Vec<&str> = text.lines().collect();
    assert!(rows.len() > 17, "{} rows", rows.len());
    std::fs::write(&train_csv, rows[..18].join("\n") + "\n").unwrap(); // header + 17 images, batch 16
    let out = ok(run(work, TRAIN, &["--config", "config.json"]));
    let rows = metrics_rows(&run_dir_from(work, &out.stdout));
    let val_loss: f64 = rows[0][4].parse().unwrap();
    assert!(val_loss.is_finite(), "validation loss {val_loss}: {rows:?}");
}
