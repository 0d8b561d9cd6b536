//! The third hostile round, each case first seen breaking `main`: outputs given as the files a
//! command reads (its model, an image its CSV lists, the split files thresholds are fitted
//! on), which were replaced with exit status 0. Every one is now one `error:` line before any
//! work, and the file is as it was.

use std::path::{Path, PathBuf};
use std::process::Output;

use imgtype::{Config, ImageTypeClassifier};
use imgtype_testkit::{ok, run, sample_images};

const TEST: &str = env!("CARGO_BIN_EXE_test");
const TRAIN: &str = env!("CARGO_BIN_EXE_train");
const DIVIDE: &str = env!("CARGO_BIN_EXE_divide");

/// An untrained model at 32 px over the bundled images.
fn write_model(dir: &Path) -> PathBuf {
    let mut config = Config::default();
    config.augmentation.image_size = 32;
    config.inference.batch_size = 16;
    config.data.base_image_path = Some(dir.to_path_buf());
    let path = dir.join("model.safetensors");
    ImageTypeClassifier::new(&config, tch::Device::Cpu).save(&path).unwrap();
    path
}

/// The first bundled photo, copied into `dir` as `photo.jpg`.
fn copy_photo(dir: &Path) -> PathBuf {
    let folder = sample_images().join("product/unhashed");
    let mut names: Vec<PathBuf> = std::fs::read_dir(folder).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort();
    let photo = dir.join("photo.jpg");
    std::fs::copy(&names[0], &photo).unwrap();
    photo
}

/// `test` in `dir` with `args` is refused with one `error:` line saying all of `needles`.
fn refused(dir: &Path, args: &[&str], needles: &[&str]) {
    let out: Output = run(dir, TEST, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert!(needles.iter().all(|n| stderr.contains(n)), "{args:?}: {stderr}");
}

#[test]
fn an_output_path_never_replaces_a_file_the_command_reads_or_a_users_other_file() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let model = write_model(work);
    let photo = copy_photo(work);
    std::fs::write(work.join("in.csv"), "image_path\nphoto.jpg\n").unwrap();
    std::fs::write(work.join("notes.txt"), "my notes\n").unwrap();
    std::os::unix::fs::symlink("model.safetensors", work.join("link.csv")).unwrap();
    let kept = |path: &Path| std::fs::read(path).unwrap();
    let (model_bytes, photo_bytes) = (kept(&model), kept(&photo));
    fn csv_mode(output: &str) -> [&str; 6] {
        ["--model-path", "model.safetensors", "--csv-path", "in.csv", "--output-path", output]
    }
    // The model it runs, directly or through a link: named as the input.
    refused(work, &csv_mode("model.safetensors"), &["is the input model.safetensors"]);
    refused(work, &csv_mode("link.csv"), &["link.csv is the input model.safetensors"]);
    // An image its CSV lists, a user's other file: not what CSV mode writes.
    for output in ["photo.jpg", "notes.txt"] {
        refused(
            work,
            &csv_mode(output),
            &[&format!("output path {output} holds a file that is not a predictions CSV")],
        );
    }
    // An archive holding an earlier output (a tar: NUL bytes, then its header) is not one.
    let tar = b"preds.csv\0\0\0\0image_path,predicted_class\n\0\0";
    std::fs::write(work.join("backup.tar"), tar).unwrap();
    refused(work, &csv_mode("backup.tar"), &["backup.tar holds a file that is not a predictions CSV"]);
    // An ONNX export replaces only an ONNX model.
    for output in ["photo.jpg", "notes.txt"] {
        let args = ["--model-path", "model.safetensors", "--export-onnx", output];
        refused(work, &args, &[&format!("output path {output} holds a file that is not an ONNX model")]);
    }
    for _ in 0..2 {
        ok(run(work, TEST, &["--model-path", "model.safetensors", "--export-onnx", "model.onnx"]));
    }
    assert_eq!((kept(&model), kept(&photo)), (model_bytes.clone(), photo_bytes));
    assert_eq!(kept(&work.join("backup.tar")), tar);
    assert_eq!(kept(&work.join("notes.txt")), b"my notes\n");
    // A name whose working files would be too long for the file system is refused before any
    // work, saying so (it failed after predicting, naming the `.partial.json`).
    let long = format!("{}.csv", "p".repeat(240));
    refused(work, &csv_mode(&long), &["its file name has 244 bytes", "at most 242 bytes"]);
    ok(run(work, TEST, &csv_mode(&format!("{}.csv", "p".repeat(238)))));
    // Its own earlier predictions are replaced, as before.
    ok(run(work, TEST, &csv_mode("out.csv")));
    ok(run(work, TEST, &csv_mode("out.csv")));
    // A label that is not one of the model's classes is unknown, not a wrong prediction.
    std::fs::write(
        work.join("labelled.csv"),
        "image_path,image_type\nphoto.jpg,bogus\nphoto.jpg,\nphoto.jpg,full_shot\n",
    )
    .unwrap();
    let args = ["--model-path", "model.safetensors", "--csv-path", "labelled.csv", "--output-path", "labelled_out.csv"];
    ok(run(work, TEST, &args));
    let (header, rows) = imgtype_testkit::read_csv(&work.join("labelled_out.csv"));
    let correct = header.iter().position(|h| h == "correct").unwrap();
    let predicted = header.iter().position(|h| h == "predicted_class").unwrap();
    assert_eq!((rows[0][correct].as_str(), rows[1][correct].as_str()), ("", ""));
    assert_eq!(rows[2][correct], (rows[2][predicted] == "full_shot").to_string());

    // Thresholds fitted on split files are never written over them, nor over a CSV.
    std::fs::create_dir_all(work.join("data")).unwrap();
    for split in ["train", "validation", "test"] {
        std::fs::write(work.join(format!("data/{split}_data.csv")), "product_id,image_path,image_type\n").unwrap();
    }
    std::os::unix::fs::symlink("data/validation_data.csv", work.join("val_link.safetensors")).unwrap();
    fn fit(output: &str) -> [&str; 7] {
        ["--model-path", "model.safetensors", "--fit-thresholds", "--data-dir", "data", "--output-path", output]
    }
    refused(work, &fit("data/test_data.csv"), &["is the input data/test_data.csv"]);
    refused(work, &fit("val_link.safetensors"), &["is the input data/validation_data.csv"]);
    refused(work, &fit("out.csv"), &["out.csv holds a file that is not a safetensors model file"]);
    for split in ["train", "validation", "test"] {
        assert_eq!(kept(&work.join(format!("data/{split}_data.csv"))), b"product_id,image_path,image_type\n");
    }
    // INT8 ranges are written to a model file, never over the predictions.
    let calibrate = ["--model-path", "model.safetensors", "--int8-calibrate", "in.csv", "--output-path", "out.csv"];
    refused(work, &calibrate, &["out.csv holds a file that is not a safetensors model file"]);
    assert_eq!(kept(&model), model_bytes);
}

/// `train` on split files whose train split lacks a class stops before a run folder exists,
/// as the README's failure table says (one was left behind, holding a failed run).
#[test]
fn a_class_without_training_images_is_refused_before_a_run_folder_exists() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    std::fs::create_dir_all(work.join("data")).unwrap();
    let rows = |classes: &[&str]| -> String {
        let rows: Vec<String> = classes.iter().enumerate().map(|(i, c)| format!("P{i},p{i}.jpg,{c}\n")).collect();
        format!("product_id,image_path,image_type\n{}", rows.concat())
    };
    let all = ["care_label", "detail_shot", "full_shot", "neck_label"];
    std::fs::write(work.join("data/train_data.csv"), rows(&all[..3])).unwrap();
    std::fs::write(work.join("data/validation_data.csv"), rows(&all)).unwrap();
    std::fs::write(work.join("data/test_data.csv"), rows(&all)).unwrap();
    let config = serde_json::json!({
        "data": {"base_image_path": sample_images()},
        "model": {"pretrained": false, "backbone": "mobilenet_v3_small"},
        "system": {"device": "cpu"}
    });
    std::fs::write(work.join("config.json"), config.to_string()).unwrap();
    let out = run(work, TRAIN, &["--config", "config.json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("the train split has no `neck_label` image"), "{stderr}");
    let results: Vec<_> = std::fs::read_dir(work.join("results")).map(|d| d.flatten().collect()).unwrap_or_default();
    assert!(results.is_empty(), "{results:?}");
}

/// A `divide` killed while it replaces the split files leaves some new and some old (a train
/// split from one random state, validation and test from another: thousands of products in two
/// splits), which `train` took. The folder is now marked until `divide` finishes: every reader
/// of split files refuses it, and the next `divide` finishes it and removes the killed one's
/// temp files.
#[test]
fn a_killed_divide_leaves_split_files_nothing_trains_on_until_divide_runs_again() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let mut csv = String::from("id,category_name,main_image,back_image,text_tag_image,neck_tag_image,other\n");
    for n in 0..60_000 {
        csv.push_str(&format!("p{n},c{},m{n}.jpg,b{n}.jpg,t{n}.jpg,k{n}.jpg,\n", n % 7));
    }
    std::fs::write(work.join("products.csv"), csv).unwrap();
    let divide = |seed: &str| {
        std::process::Command::new(DIVIDE)
            .current_dir(work)
            .args(["--input-file", "products.csv", "--output-dir", "data", "--random-state", seed])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    assert!(divide("1").wait().unwrap().success());
    let marker = work.join("data/.divide-unfinished");
    assert!(!marker.exists(), "a finished divide leaves no mark");
    let mut child = divide("2");
    let started = std::time::Instant::now();
    while !marker.exists() && started.elapsed() < std::time::Duration::from_secs(60) {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(marker.exists(), "killed before it finished");
    let config = serde_json::json!({"data": {"base_image_path": "."}, "model": {"pretrained": false}});
    std::fs::write(work.join("config.json"), config.to_string()).unwrap();
    let out = run(work, TRAIN, &["--config", "config.json", "--data-dir", "data"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("a `divide` into data did not finish (it left .divide-unfinished there)"), "{stderr}");
    assert!(!work.join("results").exists());
    // A folder of links to the marked folder's files is refused too.
    std::fs::create_dir_all(work.join("linked")).unwrap();
    for split in ["train", "validation", "test"] {
        let name = format!("{split}_data.csv");
        std::os::unix::fs::symlink(format!("../data/{name}"), work.join("linked").join(&name)).unwrap();
    }
    let out = run(work, TRAIN, &["--config", "config.json", "--data-dir", "linked"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let says = format!("a `divide` into {} did not finish", work.join("data").canonicalize().unwrap().display());
    assert!(out.status.code() == Some(1) && stderr.contains(&says), "{stderr}");
    // Run again, it finishes: no mark, none of the killed one's temp files, the files of one split.
    assert!(divide("2").wait().unwrap().success());
    let names: Vec<String> = std::fs::read_dir(work.join("data"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(names.is_empty(), "{names:?}");
    let summary = imgtype_testkit::read_json(&work.join("data/data_split_summary.json"));
    assert_eq!(summary["split_info"]["random_state"], 2);
}

/// A file put at the output path while the rows are made (after the check before any work) is
/// not replaced either: the output is checked again before the finished rows are renamed to it,
/// and they are kept in the `.partial`.
#[test]
fn a_file_put_at_the_output_path_while_predicting_is_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    write_model(work);
    copy_photo(work);
    std::fs::write(work.join("in.csv"), format!("image_path\n{}", "photo.jpg\n".repeat(6000))).unwrap();
    let mut child = std::process::Command::new(TEST)
        .current_dir(work)
        .args(["--model-path", "model.safetensors", "--csv-path", "in.csv", "--output-path", "race.csv"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !work.join("race.csv.partial").exists() && started.elapsed() < std::time::Duration::from_secs(60) {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    std::fs::write(work.join("race.csv"), "my notes\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("race.csv holds a file that is not a predictions CSV"), "{stderr}");
    assert!(stderr.contains("the predictions are kept in race.csv.partial"), "{stderr}");
    assert_eq!(std::fs::read(work.join("race.csv")).unwrap(), b"my notes\n");
    let kept = std::fs::read_to_string(work.join("race.csv.partial")).unwrap();
    assert_eq!(kept.lines().count(), 6001);
}
