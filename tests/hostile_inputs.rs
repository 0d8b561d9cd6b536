//! What a hostile user hands the binaries, each case first seen breaking `main` (issue 17):
//! crafted `torch.save` files (a million levels deep, a billion laughs, views outside their
//! storage, a deflate bomb), model metadata that lies, configs of the wrong shape, output
//! paths that are the input, a device, a FIFO, a folder or a link, an unbalanced quote in a
//! CSV, duplicate columns. Every one gets exit status 1 and one `error:` line naming the file
//! (or one ERROR row), in bounded time and memory, and nothing already there is lost.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use imgtype::{Config, ImageTypeClassifier};
use imgtype_testkit::{ok, read_csv, run, run_measured, run_python, sample_images};

const TEST: &str = env!("CARGO_BIN_EXE_test");
const TRAIN: &str = env!("CARGO_BIN_EXE_train");

fn write_model(dir: &Path) -> PathBuf {
    let mut config = Config::default();
    config.augmentation.image_size = 32;
    config.inference.batch_size = 16;
    config.data.base_image_path = Some(sample_images());
    let path = dir.join("model.safetensors");
    ImageTypeClassifier::new(&config, tch::Device::Cpu).save(&path).unwrap();
    path
}

fn some_sample_keys(n: usize) -> Vec<String> {
    let folder = sample_images().join("product/unhashed");
    let mut keys: Vec<String> = std::fs::read_dir(folder)
        .unwrap()
        .map(|e| format!("product/unhashed/{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    keys.sort();
    keys.truncate(n);
    keys
}

/// The run failed with status 1 and its last stderr line is one `error:` line holding `needles`.
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

#[test]
fn crafted_torch_files_are_one_error_line_in_bounded_time_and_memory() {
    let dir = tempfile::tempdir().unwrap();
    run_python("scripts/make_hostile_models.py", &[&dir.path()]);
    let expectations: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("expectations.json")).unwrap()).unwrap();
    let image = sample_images().join(&some_sample_keys(1)[0]);
    for (name, reason) in expectations.as_object().unwrap() {
        let started = std::time::Instant::now();
        let args = ["--model-path", name.as_str(), "--image-path", image.to_str().unwrap()];
        let (out, peak_kib) = run_measured(dir.path(), TEST, &args);
        failed_with(&out, &[name, reason.as_str().unwrap()]);
        assert!(started.elapsed().as_secs() < 20, "{name}: {:?}", started.elapsed());
        assert!(peak_kib < 1_500_000, "{name}: peak {peak_kib} KiB");
    }
}

#[test]
fn model_metadata_that_lies_is_refused_on_load() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    let image = sample_images().join(&some_sample_keys(1)[0]);
    let (tensors, metadata) = imgtype::model::file::read_safetensors(&model).unwrap();
    let cases = [
        ("class_names", r#"["a","a","b","c"]"#, "more than once"),
        ("class_names", r#"["a","","b","c"]"#, "empty name"),
        ("image_size", "0", "`image_size`"),
        ("image_size", "100000", "`image_size`"),
        ("normalize_std", "[0,0,0]", "`normalize_std`"),
        ("normalize_mean", "[1,2]", "`normalize_mean`"),
        ("architecture", "resnet50", "not a backbone this tool knows"),
        ("architecture", "mobilenet_v2", "its config says efficientnet_b0"),
    ];
    for (i, (key, value, reason)) in cases.into_iter().enumerate() {
        let mut lying = metadata.clone();
        lying.insert(key.into(), value.into());
        let path = dir.path().join(format!("lying_{i}.safetensors"));
        imgtype::model::file::write_safetensors(&path, &tensors, lying).unwrap();
        let out =
            run(dir.path(), TEST, &["--model-path", path.to_str().unwrap(), "--image-path", image.to_str().unwrap()]);
        failed_with(&out, &[&format!("lying_{i}.safetensors"), reason]);
    }
    let mut config = serde_json::to_value(Config::default()).unwrap();
    config["augmentation"]["image_size"] = serde_json::json!(100000);
    let mut huge = metadata.clone();
    huge.insert("config".into(), config.to_string());
    let path = dir.path().join("huge_size.safetensors");
    imgtype::model::file::write_safetensors(&path, &tensors, huge).unwrap();
    let out = run(dir.path(), TEST, &["--model-path", path.to_str().unwrap(), "--image-path", image.to_str().unwrap()]);
    failed_with(&out, &["huge_size.safetensors", "between 16 and 1024"]);
}

#[test]
fn configs_of_the_wrong_shape_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (i, (text, reason)) in [
        ("[]", "the config must be a JSON object"),
        (r#"{"augmentation": [64]}"#, "`augmentation` must be a JSON object"),
        (r#"{"data": {"base_image_url": "ftp://cdn.test/x"}}"#, "only http and https"),
        (r#"{"data": {"max_image_bytes": 0}}"#, "data.max_image_bytes"),
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("config_{i}.json");
        std::fs::write(dir.path().join(&name), text).unwrap();
        let out = run(dir.path(), TRAIN, &["--config", &name]);
        failed_with(&out, &[&name, reason]);
    }
    assert!(!dir.path().join("results").exists());
}

/// Output paths that are the input, a device, a FIFO, a folder: refused before any prediction,
/// and the thing named is left as it was; a symbolic link is written through.
#[test]
fn output_paths_are_checked_before_any_prediction() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    let model = model.to_str().unwrap();
    let mut text = String::from("image_path\n");
    for key in some_sample_keys(3) {
        text.push_str(&key);
        text.push('\n');
    }
    std::fs::write(dir.path().join("in.csv"), &text).unwrap();
    std::fs::create_dir(dir.path().join("folder")).unwrap();
    std::os::unix::fs::symlink("in.csv", dir.path().join("in_link.csv")).unwrap();
    let fifo = std::ffi::CString::new(dir.path().join("fifo.csv").into_os_string().into_encoded_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    for (output, reason) in [
        ("in.csv", "is the input"),
        ("in_link.csv", "is the input"),
        ("folder", "is a folder"),
        ("/dev/full", "not a regular file"),
        ("/dev/null", "not a regular file"),
        ("fifo.csv", "not a regular file"),
    ] {
        let out = run(dir.path(), TEST, &["--model-path", model, "--csv-path", "in.csv", "--output-path", output]);
        failed_with(&out, &[output, reason]);
        assert!(!String::from_utf8_lossy(&out.stderr).contains("predict"), "predictions ran for {output}");
    }
    assert_eq!(std::fs::read_to_string(dir.path().join("in.csv")).unwrap(), text);
    assert!(std::fs::symlink_metadata(dir.path().join("fifo.csv")).unwrap().file_type().is_fifo());
    assert!(std::fs::symlink_metadata("/dev/full").unwrap().file_type().is_char_device());
    let leftovers: Vec<_> =
        imgtype_testkit::walk(dir.path()).into_iter().filter(|p| p.to_string_lossy().contains(".partial")).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // An earlier output, written through a link again.
    std::fs::write(dir.path().join("old.csv"), "image_path,predicted_class,confidence\nold.jpg,full_shot,0.9\n")
        .unwrap();
    std::os::unix::fs::symlink("old.csv", dir.path().join("out_link.csv")).unwrap();
    ok(run(dir.path(), TEST, &["--model-path", model, "--csv-path", "in.csv", "--output-path", "out_link.csv"]));
    assert!(std::fs::symlink_metadata(dir.path().join("out_link.csv")).unwrap().file_type().is_symlink());
    let (_, rows) = read_csv(&dir.path().join("old.csv"));
    assert_eq!(rows.len(), 3, "written through the link to its target");
}

/// One unbalanced `"` on row 2 of 300: one ERROR row, the other 299 predicted.
#[test]
fn an_unbalanced_quote_costs_one_row_and_duplicate_columns_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    let model = model.to_str().unwrap();
    let keys = some_sample_keys(300);
    assert_eq!(keys.len(), 300);
    let mut text = String::from("image_path,image_type\n");
    for (i, key) in keys.iter().enumerate() {
        let quote = if i == 1 { "\"" } else { "" };
        text.push_str(&format!("{quote}{key},full_shot\n"));
    }
    std::fs::write(dir.path().join("in.csv"), text).unwrap();
    let out = run(dir.path(), TEST, &["--model-path", model, "--csv-path", "in.csv", "--output-path", "out.csv"]);
    ok(out);
    let (header, rows) = read_csv(&dir.path().join("out.csv"));
    assert_eq!(rows.len(), 300);
    let predicted = header.iter().position(|h| h == "predicted_class").unwrap();
    let error = header.iter().position(|h| h == "error").unwrap();
    let errors: Vec<usize> = (0..300).filter(|&i| rows[i][predicted] == "ERROR").collect();
    assert_eq!(errors, vec![1]);
    assert!(rows[1][error].contains("row 3 has an unbalanced quote"), "{}", rows[1][error]);
    assert_eq!(rows[299][0], keys[299]);

    std::fs::write(dir.path().join("two.csv"), format!("image_path,x,image_path\n{},1,{}\n", keys[0], keys[1]))
        .unwrap();
    let out = run(dir.path(), TEST, &["--model-path", model, "--csv-path", "two.csv", "--output-path", "o.csv"]);
    failed_with(&out, &["two.csv", "2 `image_path` columns (columns 1, 3)"]);
}
