//! The second hostile round (issue 26), each case first seen breaking `main`: model files
//! whose outputs are not numbers or whose sizes allocate terabytes, FIFOs where files belong,
//! the wrong OpenVINO library, `divide` asked to overwrite its own input or to read a device,
//! a corrections file with an unbalanced quote, a placeholder photo under a thousand
//! products, cross-validation folders that are damaged or still in use. Every one is one
//! `error:` line (or one warning and a result), in bounded time, and nothing of the user's is
//! lost.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use imgtype::{Config, ImageTypeClassifier};
use imgtype_testkit::{ok, read_csv, read_json, run, run_bounded, sample_images};

const TEST: &str = env!("CARGO_BIN_EXE_test");
const TRAIN: &str = env!("CARGO_BIN_EXE_train");
const DIVIDE: &str = env!("CARGO_BIN_EXE_divide");
const BOUND: Duration = Duration::from_secs(60);

fn write_model(dir: &Path) -> PathBuf {
    let mut config = Config::default();
    config.augmentation.image_size = 32;
    config.inference.batch_size = 16;
    config.data.base_image_path = Some(sample_images());
    let path = dir.join("model.safetensors");
    ImageTypeClassifier::new(&config, tch::Device::Cpu).save(&path).unwrap();
    path
}

fn sample_key() -> String {
    let folder = sample_images().join("product/unhashed");
    let mut names: Vec<String> =
        std::fs::read_dir(folder).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    format!("product/unhashed/{}", names[0])
}

/// A copy of the model at `model` with `edit` applied to its tensors and stored config.
fn edited_model(
    model: &Path,
    name: &str,
    edit_tensors: impl FnOnce(&mut Vec<(String, tch::Tensor)>),
    edit_config: impl FnOnce(&mut serde_json::Value),
) -> PathBuf {
    let (mut tensors, mut metadata) = imgtype::model::file::read_safetensors(model).unwrap();
    edit_tensors(&mut tensors);
    let mut config: serde_json::Value = serde_json::from_str(&metadata["config"]).unwrap();
    edit_config(&mut config);
    metadata.insert("config".into(), config.to_string());
    let path = model.with_file_name(name);
    imgtype::model::file::write_safetensors(&path, &tensors, metadata).unwrap();
    path
}

fn mkfifo(path: &Path) {
    let name = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o644) }, 0, "mkfifo {}", path.display());
}

/// Exit status 1 and one `error:` line, the last, holding every needle.
fn failed_with(out: &Output, needles: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "status {:?}: {stderr}", out.status);
    let last = stderr.lines().last().unwrap_or_default().to_string();
    assert!(last.starts_with("error: "), "last line: {last}");
    assert_eq!(stderr.matches("error: ").count(), 1, "{stderr}");
    for needle in needles {
        assert!(last.contains(needle), "`{needle}` not in {last}");
    }
    last
}

/// Row 1: a NaN bias, a temperature of 1e-40, weights that overflow: refused when loaded,
/// naming the cause; never every image "predicted" with confidence NaN.
#[test]
fn models_whose_outputs_are_not_numbers_are_refused_when_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    let image = sample_images().join(sample_key());
    let nan_bias = edited_model(
        &model,
        "nan_bias.safetensors",
        |tensors| {
            let bias = &mut tensors.iter_mut().find(|(n, _)| n == "classifier.5.bias").unwrap().1;
            let _ = bias.get(1).fill_(f64::NAN);
        },
        |_| {},
    );
    let cold = edited_model(&model, "cold.safetensors", |_| {}, |c| c["inference"]["temperature"] = 1e-40.into());
    // Finite logits of 3e37, which a valid temperature of 0.01 divides past fp32's range.
    let overflowing = edited_model(
        &model,
        "overflowing.safetensors",
        |tensors| {
            let bias = &mut tensors.iter_mut().find(|(n, _)| n == "classifier.5.bias").unwrap().1;
            let _ = bias.copy_(&tch::Tensor::from_slice(&[3e37f32, -3e37, 3e37, -3e37]));
        },
        |c| c["inference"]["temperature"] = 0.01.into(),
    );
    for (path, reason) in [
        (&nan_bias, "tensor `classifier.5.bias` holds NaN"),
        (&cold, "inference.temperature must be between 0.01 and 100"),
        (&overflowing, "output is not a number"),
    ] {
        let path = path.to_str().unwrap();
        for mode in [&["--image-path", image.to_str().unwrap(), "--json"][..], &["--export-onnx", "m.onnx"]] {
            let mut args = vec!["--model-path", path];
            args.extend(mode);
            let out = run_bounded(dir.path(), TEST, &args, &[], BOUND);
            failed_with(&out, &[path, reason]);
        }
    }
    assert!(!dir.path().join("m.onnx").exists());
}

/// Row 2: sizes from a model file are checked before anything is allocated.
#[test]
fn sizes_from_a_model_file_are_checked_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    std::fs::write(dir.path().join("in.csv"), format!("image_path\n{}\n", sample_key())).unwrap();
    for (name, key, value, reason) in [
        (
            "batch_1e12.safetensors",
            "inference",
            ("batch_size", serde_json::json!(1_000_000_000_000u64)),
            "inference.batch_size must be between 1 and 4096",
        ),
        ("batch_2e62.safetensors", "inference", ("batch_size", serde_json::json!(1u64 << 62)), "inference.batch_size"),
        (
            "workers.safetensors",
            "system",
            ("num_workers", serde_json::json!(1u64 << 40)),
            "system.num_workers is at most 256",
        ),
        (
            "hidden.safetensors",
            "model",
            ("hidden_dim", serde_json::json!(1i64 << 40)),
            "model.hidden_dim must be between 1 and 16384",
        ),
        (
            "timeout.safetensors",
            "data",
            ("download_timeout_secs", serde_json::json!(1e300)),
            "data.download_timeout_secs is at most 3600",
        ),
        (
            "threads.safetensors",
            "system",
            ("num_threads", serde_json::json!(257)),
            "system.num_threads must be between 1 and 256",
        ),
    ] {
        let path = edited_model(&model, name, |_| {}, |c| c[key][value.0] = value.1);
        let args = ["--model-path", path.to_str().unwrap(), "--csv-path", "in.csv", "--output-path", "out.csv"];
        let out = run_bounded(dir.path(), TEST, &args, &[], BOUND);
        failed_with(&out, &[name, reason]);
    }
    assert!(!dir.path().join("out.csv").exists());
}

/// A line over a mebibyte in an input CSV costs its own row (an ERROR row, a skipped product),
/// and a shard made of NUL bytes is refused after a bounded read, not merged into gigabytes.
#[test]
fn an_overlong_line_costs_its_row_and_a_shard_of_nul_bytes_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    let long = "x".repeat(1_100_000);
    std::fs::write(dir.path().join("in.csv"), format!("image_path\n{}\n{long}.jpg\n{}\n", sample_key(), sample_key()))
        .unwrap();
    let args = ["--model-path", model.to_str().unwrap(), "--csv-path", "in.csv", "--output-path", "out.csv"];
    ok(run_bounded(dir.path(), TEST, &args, &[], BOUND));
    let (header, rows) = read_csv(&dir.path().join("out.csv"));
    let (predicted, error) = (
        header.iter().position(|h| h == "predicted_class").unwrap(),
        header.iter().position(|h| h == "error").unwrap(),
    );
    assert_eq!(rows.len(), 3);
    assert_eq!(rows.iter().map(|r| r[predicted] == "ERROR").collect::<Vec<_>>(), [false, true, false]);
    assert!(rows[1][error].contains("row 3 is longer than 1048576 bytes"), "{}", rows[1][error]);

    let mut products = some_products(20);
    products.insert(3, format!("p_long,cat0,{}", "a.jpg&".repeat(200_000)));
    write_products(&dir.path().join("products.csv"), &products);
    let out = ok(run_bounded(dir.path(), DIVIDE, &["--input-file", "products.csv", "--output-dir", "out"], &[], BOUND));
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 malformed row(s) skipped"));

    let shard = dir.path().join("r.shard-0-of-1.csv");
    let file = std::fs::File::create(&shard).unwrap();
    std::io::Write::write_all(&mut &file, b"image_path,predicted_class\n").unwrap();
    file.set_len(80 << 20).unwrap();
    let out =
        run_bounded(dir.path(), TEST, &["--merge-shards", "r.shard-0-of-1.csv", "--output-path", "m.csv"], &[], BOUND);
    failed_with(&out, &["r.shard-0-of-1.csv", "line 2 is longer than"]);
    assert!(!dir.path().join("m.csv").exists());
}

/// Row 3: a FIFO where the model file belongs is refused at once, in every mode.
#[test]
fn a_fifo_as_the_model_path_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    mkfifo(&dir.path().join("model.safetensors"));
    mkfifo(&dir.path().join("model.pth"));
    let image = sample_images().join(sample_key());
    for model in ["model.safetensors", "model.pth"] {
        for mode in [&["--image-path", image.to_str().unwrap()][..], &["--export-onnx", "m.onnx"]] {
            let mut args = vec!["--model-path", model];
            args.extend(mode);
            let out = run_bounded(dir.path(), TEST, &args, &[], Duration::from_secs(20));
            failed_with(&out, &[model, "not a regular file"]);
        }
    }
}

/// Row 4: any library that is not OpenVINO's C API is one warning, and libtorch predicts.
#[test]
fn the_wrong_openvino_library_is_a_warning_and_libtorch_predicts() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    let image = sample_images().join(sample_key());
    let venv = imgtype_testkit::repo_root().join(".venv");
    let cxx = imgtype_testkit::walk(&venv)
        .into_iter()
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("libopenvino.so.")))
        .expect("the venv's OpenVINO C++ library");
    let args = ["--model-path", model.to_str().unwrap(), "--image-path", image.to_str().unwrap(), "--json"];
    let reference = ok(run_bounded(dir.path(), TEST, &args, &[("IMGTYPE_OPENVINO_LIB", "/nonexistent")], BOUND));
    let expected: serde_json::Value = serde_json::from_slice(&reference.stdout).unwrap();
    let libz = ["/lib/x86_64-linux-gnu/libz.so.1", "/usr/lib/x86_64-linux-gnu/libz.so.1"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("/etc/hostname");
    let fifo = dir.path().join("libopenvino_c.so.fifo");
    mkfifo(&fifo);
    for (library, reason) in [
        (cxx.to_str().unwrap(), "not OpenVINO's C library"),
        (fifo.to_str().unwrap(), "not a regular file"),
        (libz, "cannot load"),
        ("/etc/passwd", "cannot load"),
    ] {
        let out = ok(run_bounded(dir.path(), TEST, &args, &[("IMGTYPE_OPENVINO_LIB", library)], BOUND));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(reason) && stderr.contains("using libtorch"), "{library}: {stderr}");
        assert_eq!(stderr.matches("WARN").count(), 1, "{stderr}");
        let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(got["predicted_class"], expected["predicted_class"]);
    }
}

fn write_products(path: &Path, rows: &[String]) {
    let mut text = String::from("id,category_name,main_image,back_image,text_tag_image,neck_tag_image,other\n");
    for row in rows {
        text.push_str(row);
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

fn some_products(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("p{i},cat{},m{i}.jpg,,t{i}.jpg,,", i % 3)).collect()
}

/// Rows 8 and 9: `divide` never writes over what it reads (through a link too) and never
/// reads a device or waits on a FIFO; what was there is left byte for byte.
#[test]
fn divide_never_overwrites_its_inputs_nor_reads_devices() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    write_products(&dir.path().join("products.csv"), &some_products(30));
    ok(run(dir.path(), DIVIDE, &["--input-file", "products.csv", "--output-dir", "out"]));
    // The split files as the next command's inputs.
    std::fs::copy(dir.path().join("products.csv"), out.join("train_data.csv")).unwrap();
    std::fs::write(out.join("test_data.csv"), "image_path,image_type\nm1.jpg,care_label\n").unwrap();
    std::os::unix::fs::symlink(out.join("train_data.csv"), dir.path().join("link.csv")).unwrap();
    let before: Vec<(PathBuf, Vec<u8>)> = imgtype_testkit::walk(dir.path())
        .into_iter()
        .map(|p| (p.clone(), std::fs::read(&p).unwrap_or_default()))
        .collect();
    for (args, needles) in [
        (vec!["--input-file", "out/train_data.csv", "--output-dir", "out"], vec!["train_data.csv", "is the input"]),
        (vec!["--input-file", "link.csv", "--output-dir", "out"], vec!["train_data.csv", "is the input"]),
        (
            vec!["--input-file", "products.csv", "--output-dir", "out", "--relabel", "out/test_data.csv"],
            vec!["test_data.csv", "is the input"],
        ),
    ] {
        let output = run_bounded(dir.path(), DIVIDE, &args, &[], BOUND);
        failed_with(&output, &needles);
    }
    let after: Vec<(PathBuf, Vec<u8>)> = imgtype_testkit::walk(dir.path())
        .into_iter()
        .map(|p| (p.clone(), std::fs::read(&p).unwrap_or_default()))
        .collect();
    assert_eq!(before, after, "nothing was written");

    mkfifo(&dir.path().join("fifo.csv"));
    for (args, needles) in [
        (vec!["--input-file", "/dev/zero", "--output-dir", "o2"], vec!["/dev/zero", "not a regular file"]),
        (vec!["--input-file", "fifo.csv", "--output-dir", "o2"], vec!["fifo.csv", "not a regular file"]),
        (
            vec!["--input-file", "products.csv", "--output-dir", "o2", "--relabel", "/dev/zero"],
            vec!["/dev/zero", "not a regular file"],
        ),
        (
            vec!["--input-file", "products.csv", "--output-dir", "o2", "--relabel", "fifo.csv"],
            vec!["fifo.csv", "not a regular file"],
        ),
    ] {
        let output = run_bounded(dir.path(), DIVIDE, &args, &[], Duration::from_secs(20));
        failed_with(&output, &needles);
    }
}

/// Row 7, and the product CSV too: an unbalanced quote costs its own row, which is reported;
/// the rows after it are read.
#[test]
fn an_unbalanced_quote_in_a_corrections_or_product_csv_costs_its_own_row() {
    let dir = tempfile::tempdir().unwrap();
    let mut products = some_products(40);
    products.insert(5, "\"p_bad,cat0,x.jpg,,,,".into());
    write_products(&dir.path().join("products.csv"), &products);
    let mut corrections = String::from("image_path,image_type,notes\nm1.jpg,neck_label,checked\n");
    corrections.push_str("m2.jpg,drop,\"label 5 cm, see\n");
    for i in 3..30 {
        corrections.push_str(&format!("m{i}.jpg,detail_shot,ok\n"));
    }
    std::fs::write(dir.path().join("fixes.csv"), corrections).unwrap();
    let args = ["--input-file", "products.csv", "--output-dir", "out", "--relabel", "fixes.csv"];
    let out = ok(run_bounded(dir.path(), DIVIDE, &args, &[], BOUND));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("28 image(s) relabelled, 0 dropped"), "{stdout}");
    assert!(stdout.contains("2 malformed row(s) skipped"), "{stdout}");
    let summary = read_json(&dir.path().join("out/data_split_summary.json"));
    let skipped = summary["skipped_rows"].as_array().unwrap();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(skipped[0]["file"].as_str().unwrap().ends_with("products.csv") && skipped[0]["line"] == 7, "{skipped:?}");
    assert!(skipped[1]["file"].as_str().unwrap().ends_with("fixes.csv") && skipped[1]["line"] == 3, "{skipped:?}");
    assert!(skipped.iter().all(|s| s["reason"].as_str().unwrap().contains("unbalanced quote")));
    let images: usize = ["train", "validation", "test"]
        .iter()
        .map(|s| summary["data_counts"][s]["images"].as_u64().unwrap() as usize)
        .sum();
    assert_eq!(images, 80, "40 products of 2 images, the malformed one left out");
}

/// Row 6 and what it hides: a placeholder photo under a thousand products is grouped in
/// linear work, the splits it empties are warned about, and a later plain `divide` removes
/// the `duplicates.csv` it no longer stands behind.
#[test]
fn a_placeholder_under_a_thousand_products_and_a_stale_duplicates_file() {
    let dir = tempfile::tempdir().unwrap();
    let photo = sample_images().join(sample_key());
    std::fs::copy(&photo, dir.path().join("placeholder.jpg")).unwrap();
    let mut rows: Vec<String> = (0..1000).map(|i| format!("p{i},cat{},placeholder.jpg,,,,", i % 4)).collect();
    rows.push("q1,cat0,placeholder_copy.jpg,,,,".into());
    std::fs::copy(&photo, dir.path().join("placeholder_copy.jpg")).unwrap();
    write_products(&dir.path().join("products.csv"), &rows);
    let args = ["--input-file", "products.csv", "--output-dir", "out", "--find-duplicates", "--image-base-path", "."];
    let started = std::time::Instant::now();
    let out = ok(run_bounded(dir.path(), DIVIDE, &args, &[], BOUND));
    let seconds = started.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the validation split is empty") && stderr.contains("placeholder"), "{stderr}");
    let (_, duplicates) = read_csv(&dir.path().join("out/duplicates.csv"));
    assert_eq!(duplicates.len(), 1001, "one group of every product");
    assert!(duplicates.iter().all(|row| row[0] == "1"));
    eprintln!("1001 products sharing one photo: divide --find-duplicates took {seconds:.2} s");

    ok(run(dir.path(), DIVIDE, &["--input-file", "products.csv", "--output-dir", "out"]));
    assert!(!dir.path().join("out/duplicates.csv").exists(), "the stale duplicates.csv is removed");
    // A file of that name that is not our report is left alone.
    std::fs::write(dir.path().join("out/duplicates.csv"), "mine\n").unwrap();
    let out = ok(run(dir.path(), DIVIDE, &["--input-file", "products.csv", "--output-dir", "out"]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a report of `divide --find-duplicates`"));
    assert_eq!(std::fs::read_to_string(dir.path().join("out/duplicates.csv")).unwrap(), "mine\n");
}

/// A cross-validation folder as `prepare` leaves it, made by hand: a plan over `folds` folds
/// of 2 images each, its images.csv, nothing trained.
fn handmade_cv_folder(dir: &Path, folds: usize, listed: usize) -> PathBuf {
    let cv = dir.join("cv");
    std::fs::create_dir_all(&cv).unwrap();
    let plan = serde_json::json!({
        "base_config": serde_json::to_value(Config::default()).unwrap(),
        "folds": folds,
        "data_fingerprint": "0000000000000000",
        "images": listed * 2,
        "fold_images": vec![2; listed],
    });
    std::fs::write(cv.join("cv_plan.json"), plan.to_string()).unwrap();
    let mut images = String::from("fold,image_path,product_id,image_type,split\n");
    for fold in 1..=listed {
        for i in 0..2 {
            images.push_str(&format!("{fold},f{fold}_{i}.jpg,p{fold}{i},care_label,train\n"));
        }
    }
    std::fs::write(cv.join("images.csv"), images).unwrap();
    cv
}

/// Rows 10 and 11: a plan that does not add up is one error line (not an index out of
/// bounds); a fold's config.json that is a FIFO or a link to /dev/zero never blocks.
#[test]
fn damaged_cross_validation_folders_are_one_error_line_in_bounded_time() {
    let dir = tempfile::tempdir().unwrap();
    let cv = handmade_cv_folder(dir.path(), 3, 2);
    let cv_arg = cv.to_str().unwrap();
    for args in [vec!["--summarize", cv_arg], vec!["--resume", cv_arg]] {
        let out = run_bounded(dir.path(), TRAIN, &args, &[], BOUND);
        failed_with(&out, &["cv_plan.json", "`folds` is 3 but `fold_images` lists 2 folds"]);
    }
    let cv = handmade_cv_folder(&dir.path().join("second"), 2, 2);
    for (fold, special) in [(1, "fifo"), (2, "zero")] {
        let run_dir = cv.join(format!("fold_{fold}/run_20260101_000000_0000000{fold}"));
        std::fs::create_dir_all(&run_dir).unwrap();
        match special {
            "fifo" => mkfifo(&run_dir.join("config.json")),
            _ => std::os::unix::fs::symlink("/dev/zero", run_dir.join("config.json")).unwrap(),
        }
        mkfifo(&run_dir.join("final_results.json"));
    }
    let out = run_bounded(dir.path(), TRAIN, &["--summarize", cv.to_str().unwrap()], &[], BOUND);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code() == Some(0) || out.status.code() == Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // A finished fold whose metrics table is a FIFO is counted as damaged; the summary goes on.
    let cv = handmade_cv_folder(&dir.path().join("third"), 2, 2);
    let run_dir = cv.join("fold_1/run_20260101_000000_00000001");
    std::fs::create_dir_all(run_dir.join("logs")).unwrap();
    std::fs::write(run_dir.join("config.json"), Config::default().to_json_pretty()).unwrap();
    let finished = serde_json::json!({
        "run_id": "run_20260101_000000_00000001", "status": "finished", "best_epoch": 1,
        "validation_metric": "f1_weighted", "best_validation_score": 0.5, "epochs_run": 1,
        "stopped_early": false, "best_model": null, "test_accuracy": 0.5, "test_f1_macro": 0.5,
        "test_f1_weighted": 0.5, "test_roc_auc_macro": null, "skipped_images": 0
    });
    std::fs::write(run_dir.join("final_results.json"), finished.to_string()).unwrap();
    mkfifo(&run_dir.join("logs/metrics.csv"));
    // Round three: a final_results.json that cannot be read is damage, not a fold at work.
    let second_run = cv.join("fold_2/run_20260101_000000_00000002");
    std::fs::create_dir_all(&second_run).unwrap();
    std::fs::write(second_run.join("config.json"), Config::default().to_json_pretty()).unwrap();
    std::os::unix::fs::symlink("/dev/zero", second_run.join("final_results.json")).unwrap();
    let out = run_bounded(dir.path(), TRAIN, &["--summarize", cv.to_str().unwrap()], &[], BOUND);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("fold 1:") && stderr.contains("counted as damaged"), "{stderr}");
    assert!(stderr.contains("fold 2:") && stderr.contains("final_results.json"), "{stderr}");
    assert!(!stderr.contains("not finished yet: [2]"), "{stderr}");
    assert!(!stderr.lines().any(|l| l.starts_with("error:") && l.contains("metrics.csv")), "{stderr}");

    // A cv_plan.json that is a FIFO is said to be one, not "missing".
    let cv = handmade_cv_folder(&dir.path().join("fourth"), 2, 2);
    std::fs::remove_file(cv.join("cv_plan.json")).unwrap();
    mkfifo(&cv.join("cv_plan.json"));
    for args in [vec!["--summarize", cv.to_str().unwrap()], vec!["--resume", cv.to_str().unwrap()]] {
        let out = run_bounded(dir.path(), TRAIN, &args, &[], BOUND);
        failed_with(&out, &["cv_plan.json", "not a regular file"]);
    }
}

/// A run folder as training leaves it after its first checkpoint, made by hand (the
/// checkpoint's content is never reached here).
fn handmade_run_folder(parent: &Path) -> PathBuf {
    let run_dir = parent.join("run_20260101_000000_00000001");
    std::fs::create_dir_all(run_dir.join("checkpoints")).unwrap();
    std::fs::write(run_dir.join("config.json"), Config::default().to_json_pretty()).unwrap();
    std::fs::write(run_dir.join("checkpoints/latest_checkpoint.safetensors"), b"not read").unwrap();
    run_dir
}

/// Row 12 and row 11's `run_metadata.json`: a run folder another process trains in is never
/// resumed a second time; its files stay as they were.
#[test]
fn a_run_folder_in_use_is_not_resumed_twice() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = handmade_run_folder(dir.path());
    mkfifo(&run_dir.join("run_metadata.json"));
    let lock = imgtype::fsutil::FolderLock::acquire(&run_dir, "testing").unwrap();
    let before = imgtype_testkit::walk(&run_dir);
    let out = run_bounded(dir.path(), TRAIN, &["--resume", run_dir.to_str().unwrap()], &[], BOUND);
    failed_with(&out, &["is in use by process", &std::process::id().to_string(), "not resuming its training"]);
    assert_eq!(imgtype_testkit::walk(&run_dir), before);
    drop(lock);
    // Unlocked, the FIFO in place of run_metadata.json is a warning, not a hang; the checkpoint
    // (not a real one) is then what fails.
    let out = run_bounded(dir.path(), TRAIN, &["--resume", run_dir.to_str().unwrap()], &[], BOUND);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("run_metadata.json") && stderr.contains("not a regular file"), "{stderr}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
}

/// A class named `ERROR` would make its rows look like failures in every output.
#[test]
fn a_class_named_error_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), r#"{"data": {"class_names": ["ok", "ERROR"]}}"#).unwrap();
    let out = run(dir.path(), TRAIN, &["--config", "config.json"]);
    failed_with(&out, &["config.json", "`ERROR`", "no class may be called that"]);
}

/// Sweeps, cross-validations and the copy of the best model never write over a user's file:
/// a new sweep or cross-validation folder that already holds other files is refused, and so
/// is a `paths.model_dir` whose `best_model.safetensors` is the weights the run starts from.
#[test]
fn sweeps_cross_validations_and_the_best_model_copy_never_overwrite_a_users_file() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    write_products(&work.join("products.csv"), &some_products(30));
    ok(run(work, DIVIDE, &["--input-file", "products.csv", "--output-dir", "data"]));
    std::fs::write(
        work.join("config.json"),
        r#"{"data": {"csv_path": "products.csv"}, "model": {"pretrained": false}}"#,
    )
    .unwrap();
    std::fs::create_dir_all(work.join("mine")).unwrap();
    std::fs::write(work.join("mine/label_issues.csv"), "my reviewed labels\n").unwrap();
    let out =
        run_bounded(work, TRAIN, &["--config", "config.json", "--cross-validate", "2", "--cv-dir", "mine"], &[], BOUND);
    failed_with(&out, &["mine already holds label_issues.csv", "not a cross-validation folder"]);
    let sweep = r#"{"base_config": "config.json", "experiments": [{"name": "a", "overrides": {}}]}"#;
    std::fs::write(work.join("sweep.json"), sweep).unwrap();
    let out = run_bounded(work, TRAIN, &["--sweep", "sweep.json", "--sweep-dir", "mine"], &[], BOUND);
    failed_with(&out, &["mine already holds label_issues.csv", "not a sweep folder"]);
    assert_eq!(std::fs::read_to_string(work.join("mine/label_issues.csv")).unwrap(), "my reviewed labels\n");
    assert_eq!(std::fs::read_dir(work.join("mine")).unwrap().count(), 1, "nothing added");

    // Fine-tuning from last time's shared copy: the run would replace its own starting point.
    std::fs::create_dir_all(work.join("models")).unwrap();
    let model = write_model(&work.join("models"));
    std::fs::rename(&model, work.join("models/best_model.safetensors")).unwrap();
    let before = std::fs::read(work.join("models/best_model.safetensors")).unwrap();
    std::fs::write(
        work.join("tune.json"),
        r#"{"data": {"csv_path": "products.csv"}, "model": {"pretrained": true, "pretrained_weights": "models/best_model.safetensors"}}"#,
    )
    .unwrap();
    let out = run_bounded(work, TRAIN, &["--config", "tune.json"], &[], BOUND);
    failed_with(&out, &["paths.model_dir", "best_model.safetensors is the input"]);
    assert_eq!(std::fs::read(work.join("models/best_model.safetensors")).unwrap(), before);
    assert!(!work.join("results").exists(), "no run folder was made");
}

/// Round three: a run that diverges (learning rate and weight decay at the top of their
/// ranges) fails with one line naming the weight, writes `"status": "failed"`, and leaves the
/// earlier good model in `paths.model_dir` as it was; values past the ranges are refused.
#[test]
fn a_diverging_run_fails_and_keeps_the_good_model() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let sample = std::fs::read_to_string(imgtype_testkit::repo_root().join("image_data.csv")).unwrap();
    std::fs::write(work.join("products.csv"), sample.lines().take(25).map(|l| format!("{l}\n")).collect::<String>())
        .unwrap();
    ok(run(work, DIVIDE, &["--input-file", "products.csv", "--random-state", "11"]));
    let config = |training: serde_json::Value| {
        serde_json::json!({
            "data": {"base_image_path": sample_images()},
            "model": {"pretrained": false, "freeze_backbone_epochs": 0},
            "training": training,
            "augmentation": {"image_size": 32},
            "system": {"num_workers": 1, "num_threads": 1, "device": "cpu"}
        })
        .to_string()
    };
    std::fs::write(work.join("good.json"), config(serde_json::json!({"batch_size": 16, "epochs": 1}))).unwrap();
    ok(run(work, TRAIN, &["--config", "good.json"]));
    let good_model = std::fs::read(work.join("models/best_model.safetensors")).unwrap();

    let diverging =
        serde_json::json!({"batch_size": 16, "epochs": 3, "learning_rate": 10, "backbone_lr": 10, "weight_decay": 10});
    std::fs::write(work.join("bad.json"), config(diverging)).unwrap();
    let out = run(work, TRAIN, &["--config", "bad.json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("training diverged in epoch 1") && stderr.contains("holds NaN or infinite"), "{stderr}");
    assert_eq!(
        std::fs::read(work.join("models/best_model.safetensors")).unwrap(),
        good_model,
        "the good model is kept"
    );
    let statuses: Vec<String> = std::fs::read_dir(work.join("results"))
        .unwrap()
        .map(|e| read_json(&e.unwrap().path().join("final_results.json"))["status"].as_str().unwrap().to_string())
        .collect();
    assert!(statuses.contains(&"failed".to_string()) && statuses.contains(&"finished".to_string()), "{statuses:?}");

    for (key, value) in [("learning_rate", 1e308), ("weight_decay", 11.0)] {
        std::fs::write(work.join("huge.json"), config(serde_json::json!({"batch_size": 16, key: value}))).unwrap();
        let out = run(work, TRAIN, &["--config", "huge.json"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(&format!("training.{key} must be at most 10")), "{stderr}");
    }
}
