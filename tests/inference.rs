//! `test` as a user runs it: CSV mode with unreadable rows, sharding and merging
//! (CSV and whole-dataset modes), bad inputs, and flat memory over large CSVs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use imgtype::{Config, ImageTypeClassifier};
use imgtype_testkit::{ok, read_csv, read_json, repo_root, run, run_measured, sample_images};

const TEST: &str = env!("CARGO_BIN_EXE_test");

/// An untrained 32 px model whose config points at the bundled sample images.
fn write_model(dir: &Path) -> PathBuf {
    let mut config = Config::default();
    config.augmentation.image_size = 32;
    config.inference.batch_size = 16;
    config.system.num_workers = 2;
    config.data.base_image_path = Some(sample_images());
    tch::manual_seed(5);
    let path = dir.join("model.safetensors");
    ImageTypeClassifier::new(&config, tch::Device::Cpu).save(&path).unwrap();
    path
}

fn run_test(dir: &Path, args: &[&str]) -> Output {
    run(dir, TEST, args)
}

/// The rows without the timing column, which differs from run to run.
fn without_timing(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let (header, rows) = read_csv(path);
    let skip = header.iter().position(|h| h == "inference_ms").unwrap();
    let strip = |v: &Vec<String>| v.iter().enumerate().filter(|(i, _)| *i != skip).map(|(_, s)| s.clone()).collect();
    (strip(&header), rows.iter().map(strip).collect())
}

fn as_refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn sample_split_rows(n: usize) -> Vec<(String, String, String)> {
    let (_, rows) = read_csv(&repo_root().join("image_data.csv"));
    let mut out = Vec::new();
    for row in rows {
        for key in row[2].split(['&', ',']).filter(|k| !k.is_empty() && *k != "nan") {
            out.push((row[0].clone(), key.to_string(), "full_shot".to_string()));
        }
        for key in row[4].split(['&', ',']).filter(|k| !k.is_empty() && *k != "nan") {
            out.push((row[0].clone(), key.to_string(), "care_label".to_string()));
        }
    }
    out.truncate(n);
    out
}

fn write_split_csv(path: &Path, rows: &[(String, String, String)]) {
    let mut text = String::from("product_id,image_path,image_type\n");
    for (p, i, t) in rows {
        text.push_str(&format!("{p},{i},{t}\n"));
    }
    std::fs::write(path, text).unwrap();
}

#[test]
fn csv_mode_keeps_every_row_and_shards_merge_back() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    let mut rows = sample_split_rows(40);
    rows.insert(3, ("P9".into(), "product/unhashed/does-not-exist.jpg".into(), "full_shot".into()));
    write_split_csv(&dir.path().join("input.csv"), &rows);
    let model = model.to_str().unwrap();

    ok(run_test(dir.path(), &["--model-path", model, "--csv-path", "input.csv", "--output-path", "all.csv"]));
    let (header, all) = read_csv(&dir.path().join("all.csv"));
    assert_eq!(all.len(), rows.len(), "one output row per input row");
    for column in [
        "image_path",
        "product_id",
        "true_class",
        "predicted_class",
        "confidence",
        "prob_care_label",
        "top_k",
        "correct",
        "inference_ms",
        "error",
    ] {
        assert!(header.iter().any(|h| h == column), "no {column} in {header:?}");
    }
    let error_col = header.iter().position(|h| h == "error").unwrap();
    assert_eq!(all[3][0], "product/unhashed/does-not-exist.jpg");
    assert_eq!(all[3][3], "ERROR");
    assert!(all[3][error_col].contains("does-not-exist"), "{:?}", all[3]);
    assert!(all.iter().enumerate().all(|(i, r)| i == 3 || r[error_col].is_empty()));

    for k in 0..3 {
        let shard = format!("{k}/3");
        ok(run_test(
            dir.path(),
            &["--model-path", model, "--csv-path", "input.csv", "--output-path", "part.csv", "--shard", &shard],
        ));
    }
    let shard_rows: usize =
        (0..3).map(|k| read_csv(&dir.path().join(format!("part.shard-{k}-of-3.csv"))).1.len()).sum();
    assert_eq!(shard_rows, rows.len());
    ok(run_test(
        dir.path(),
        &[
            "--merge-shards",
            "part.shard-2-of-3.csv",
            "part.shard-0-of-3.csv",
            "part.shard-1-of-3.csv",
            "--output-path",
            "merged.csv",
        ],
    ));
    assert_eq!(without_timing(&dir.path().join("merged.csv")), without_timing(&dir.path().join("all.csv")));

    let out = run_test(
        dir.path(),
        &["--merge-shards", "part.shard-0-of-3.csv", "part.shard-1-of-3.csv", "--output-path", "bad.csv"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("shard 2 of 3 is missing"));
    assert!(!dir.path().join("bad.csv").exists());
    // A shard file named but not there is named as such.
    let out = run_test(
        dir.path(),
        &["--merge-shards", "part.shard-0-of-3.csv", "gone.shard-2-of-3.csv", "--output-path", "bad.csv"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("gone.shard-2-of-3.csv: no such shard file"), "{stderr}");
    assert!(!dir.path().join("bad.csv").exists());

    // Each finished shard has a record beside it; the merge takes only the shards of one run,
    // as they were written.
    let record = read_json(&dir.path().join("part.shard-1-of-3.csv.json"));
    assert_eq!(
        (record["shard"].as_str(), record["rows"].as_u64(), record["input_rows"].as_u64()),
        (Some("1/3"), Some(14), Some(41))
    );
    let mut other_rows = sample_split_rows(40);
    other_rows.reverse();
    write_split_csv(&dir.path().join("other.csv"), &other_rows);
    ok(run_test(
        dir.path(),
        &["--model-path", model, "--csv-path", "other.csv", "--output-path", "other_part.csv", "--shard", "1/3"],
    ));
    let merge_error = |shards: [&str; 3]| {
        let mut args = vec!["--merge-shards"];
        args.extend(shards);
        args.extend(["--output-path", "bad.csv"]);
        let out = run_test(dir.path(), &args);
        assert!(!out.status.success() && !dir.path().join("bad.csv").exists());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let stderr = merge_error(["part.shard-0-of-3.csv", "other_part.shard-1-of-3.csv", "part.shard-2-of-3.csv"]);
    assert!(
        stderr.contains("part.shard-0-of-3.csv and other_part.shard-1-of-3.csv are not shards of one run"),
        "{stderr}"
    );
    // A shard without a record among recorded ones (its record removed, a file from elsewhere)
    // cannot be told to be of the same run: refused.
    std::fs::create_dir_all(dir.path().join("bare")).unwrap();
    std::fs::copy(dir.path().join("part.shard-2-of-3.csv"), dir.path().join("bare/part.shard-2-of-3.csv")).unwrap();
    let stderr = merge_error(["part.shard-0-of-3.csv", "part.shard-1-of-3.csv", "bare/part.shard-2-of-3.csv"]);
    assert!(
        stderr.contains("bare/part.shard-2-of-3.csv has no record beside it, but part.shard-0-of-3.csv has"),
        "{stderr}"
    );
    // None with a record (shards of an older version): merged, with a warning that says so.
    for k in [0, 1] {
        let name = format!("part.shard-{k}-of-3.csv");
        std::fs::copy(dir.path().join(&name), dir.path().join("bare").join(name)).unwrap();
    }
    let bare: Vec<String> = (0..3).map(|k| format!("bare/part.shard-{k}-of-3.csv")).collect();
    let mut args = vec!["--merge-shards"];
    args.extend(bare.iter().map(String::as_str));
    args.extend(["--output-path", "bare/merged.csv"]);
    let out = ok(run_test(dir.path(), &args));
    assert!(String::from_utf8_lossy(&out.stderr).contains("none of the 3 shards has a record beside it"));
    assert_eq!(without_timing(&dir.path().join("bare/merged.csv")), without_timing(&dir.path().join("merged.csv")));
    // A shard output that is a symbolic link is written through; its record lies beside the
    // name the merge is given, so the merge checks it.
    std::fs::create_dir_all(dir.path().join("target")).unwrap();
    std::fs::write(dir.path().join("target/first.csv"), "image_path,predicted_class\nold.jpg,full_shot\n").unwrap();
    std::os::unix::fs::symlink("target/first.csv", dir.path().join("linked.shard-0-of-3.csv")).unwrap();
    ok(run_test(
        dir.path(),
        &["--model-path", model, "--csv-path", "input.csv", "--output-path", "linked.csv", "--shard", "0/3"],
    ));
    assert!(
        dir.path().join("linked.shard-0-of-3.csv.json").is_file()
            && dir.path().join("linked.shard-0-of-3.csv").is_symlink()
    );
    let out = ok(run_test(
        dir.path(),
        &[
            "--merge-shards",
            "linked.shard-0-of-3.csv",
            "part.shard-1-of-3.csv",
            "part.shard-2-of-3.csv",
            "--output-path",
            "linked_merged.csv",
        ],
    ));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("record"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(without_timing(&dir.path().join("linked_merged.csv")), without_timing(&dir.path().join("merged.csv")));
    let edited = dir.path().join("part.shard-1-of-3.csv");
    let text = std::fs::read_to_string(&edited).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.swap(1, 2);
    std::fs::write(&edited, lines.join("\n") + "\n").unwrap();
    let stderr = merge_error(["part.shard-0-of-3.csv", "part.shard-1-of-3.csv", "part.shard-2-of-3.csv"]);
    assert!(stderr.contains("part.shard-1-of-3.csv changed after it was written"), "{stderr}");
    let stderr = merge_error(["part.shard-0-of-3.csv", "part.shard-1-of-3.csv.json", "part.shard-2-of-3.csv"]);
    assert!(
        stderr.contains("part.shard-1-of-3.csv.json: a JSON file (a shard's record or metrics), not shard rows"),
        "{stderr}"
    );
    // A shard's record is an input of the merge, never its output.
    let out = run_test(
        dir.path(),
        &[
            "--merge-shards",
            "part.shard-0-of-3.csv",
            "part.shard-2-of-3.csv",
            "--output-path",
            "part.shard-0-of-3.csv.json",
        ],
    );
    assert!(!out.status.success() && read_json(&dir.path().join("part.shard-0-of-3.csv.json"))["shard"] == "0/3");
    // An output name whose shards the merge would not read back is refused before anything runs.
    let out = run_test(
        dir.path(),
        &["--model-path", model, "--csv-path", "input.csv", "--output-path", "p.json", "--shard", "0/2"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("p.shard-0-of-2.json: --merge-shards would not read this name back"),
        "{stderr}"
    );
    // An output named as another output's working file (its `.partial` or that file's record,
    // a lock, a temp file) or as a shard's record is refused before anything runs: another
    // command may be writing it.
    for (name, says) in [
        ("p.csv.partial", "named as a working file of this tool"),
        ("p.csv.partial.json", "named as a working file of this tool"),
        (".p.csv.lock", "named as a working file of this tool"),
        (".tmp-p.csv-abcdef", "named as a working file of this tool"),
        ("p.shard-0-of-2.csv.json", "named as a shard's record"),
    ] {
        let out = run_test(dir.path(), &["--model-path", model, "--csv-path", "input.csv", "--output-path", name]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(says), "{name}: {stderr}");
        assert!(!dir.path().join(name).exists(), "{name}");
    }
    // A shard past the input's rows holds none (a job array wider than the input).
    ok(run_test(
        dir.path(),
        &["--model-path", model, "--csv-path", "input.csv", "--output-path", "wide.csv", "--shard", "45/50"],
    ));
    assert!(read_csv(&dir.path().join("wide.shard-45-of-50.csv")).1.is_empty());
    // A file name may say any N: the missing shards are listed, a few of them.
    std::fs::write(dir.path().join("x.shard-0-of-1000000000000.csv"), "").unwrap();
    let out = run_test(dir.path(), &["--merge-shards", "x.shard-0-of-1000000000000.csv", "--output-path", "bad.csv"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("shards 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 and 999999999989 more of 1000000000000 are missing"),
        "{stderr}"
    );
}

#[test]
fn dataset_mode_shards_merge_to_the_unsharded_results() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let rows = sample_split_rows(50);
    write_split_csv(&data.join("train_data.csv"), &rows[..30]);
    write_split_csv(&data.join("validation_data.csv"), &rows[30..40]);
    write_split_csv(&data.join("test_data.csv"), &rows[40..]);
    let model = model.to_str().unwrap();
    let args = |out: &str| {
        vec!["--model-path", model, "--data-dir", "data", "--output-dir", out]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>()
    };

    ok(run_test(dir.path(), &as_refs(&args("whole"))));
    let whole = std::fs::read_dir(dir.path().join("whole")).unwrap().next().unwrap().unwrap().path();
    for file in [
        "inference_results.csv",
        "wrong_train.csv",
        "wrong_valid.csv",
        "wrong_test.csv",
        "wrong_test.png",
        "metrics.json",
        "timing.json",
    ] {
        assert!(whole.join(file).is_file(), "{file} missing");
    }
    let timing: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(whole.join("timing.json")).unwrap()).unwrap();
    assert_eq!(timing["images"], 50);
    for key in ["images_per_second", "mean_ms_per_image", "p50_ms_per_image", "p95_ms_per_image", "model_load_seconds"]
    {
        assert!(timing[key].as_f64().unwrap() > 0.0, "{key}");
    }
    let png = image::open(whole.join("wrong_train.png")).unwrap();
    assert!(png.width() > 100 && png.height() > 100);

    let mut shard_files = Vec::new();
    for k in 0..2 {
        let mut a = args("sharded");
        a.extend(["--shard".to_string(), format!("{k}/2")]);
        ok(run_test(dir.path(), &as_refs(&a)));
    }
    for entry in std::fs::read_dir(dir.path().join("sharded")).unwrap() {
        let run = entry.unwrap().path();
        for f in std::fs::read_dir(&run).unwrap() {
            let f = f.unwrap().path();
            let name = f.file_name().unwrap().to_string_lossy().to_string();
            if name.starts_with("inference_results.shard-") && name.ends_with(".csv") {
                shard_files.push(f);
            }
        }
    }
    assert_eq!(shard_files.len(), 2);
    let merged_dir = dir.path().join("merged");
    std::fs::create_dir_all(&merged_dir).unwrap();
    let merged = merged_dir.join("inference_results.csv");
    let images = sample_images();
    let mut merge_args: Vec<&str> = vec!["--merge-shards"];
    merge_args.extend(shard_files.iter().map(|p| p.to_str().unwrap()));
    merge_args.extend(["--output-path", merged.to_str().unwrap(), "--image-base-path", images.to_str().unwrap()]);
    // An output named as one of the reports written beside it is refused before anything is
    // written (the report would replace the merged rows).
    let mut clash = merge_args.clone();
    let metrics = merged_dir.join("metrics.json");
    let position = clash.iter().position(|a| *a == "--output-path").unwrap() + 1;
    clash[position] = metrics.to_str().unwrap();
    let out = run_test(dir.path(), &clash);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("the merge writes its metrics.json report there"), "{stderr}");
    assert!(!metrics.exists());
    let out = ok(run_test(dir.path(), &merge_args));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("no record"), "dataset shards have records too");
    assert_eq!(without_timing(&merged), without_timing(&whole.join("inference_results.csv")));
    for wrong in ["wrong_train.csv", "wrong_valid.csv", "wrong_test.csv"] {
        assert_eq!(
            without_timing(&merged_dir.join(wrong)).1.len(),
            without_timing(&whole.join(wrong)).1.len(),
            "{wrong}"
        );
    }
    // Every merge into the folder writes the same report names: a second one, into another
    // output, while the first writes them, is refused before anything is written.
    let reports_lock = imgtype::fsutil::OutputLock::acquire(&metrics, "a merge's reports").unwrap();
    let other = merged_dir.join("other_results.csv");
    let mut second = merge_args.clone();
    second[position] = other.to_str().unwrap();
    let out = run_test(dir.path(), &second);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("metrics.json is in use by process"), "{stderr}");
    assert!(!other.exists());
    drop(reports_lock);
    // A merge that fails (a shard cut) leaves the earlier output and its reports as they were.
    let files_in = |dir: &Path| -> BTreeMap<PathBuf, Vec<u8>> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| (p.clone(), std::fs::read(p).unwrap()))
            .collect()
    };
    let written = files_in(&merged_dir);
    let cut = dir.path().join("cut").join(shard_files[1].file_name().unwrap());
    std::fs::create_dir_all(cut.parent().unwrap()).unwrap();
    let text = std::fs::read_to_string(&shard_files[1]).unwrap();
    std::fs::write(&cut, &text[..text.len() - text.lines().last().unwrap().len() - 1]).unwrap();
    let mut failing = merge_args.clone();
    failing[2] = cut.to_str().unwrap();
    assert!(!run_test(dir.path(), &failing).status.success());
    assert!(files_in(&merged_dir) == written, "the earlier merge's files are as they were");
}

#[test]
fn bad_inputs_name_the_problem_and_leave_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    let model_str = model.to_str().unwrap();
    let expect_error = |args: &[&str], needles: &[&str]| {
        let out = run_test(dir.path(), args);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "{args:?} succeeded");
        for needle in needles {
            assert!(stderr.contains(needle), "{args:?}: `{needle}` not in {stderr}");
        }
    };
    std::fs::write(dir.path().join("images.csv"), "path\nproduct/unhashed/x.jpg\n").unwrap();
    std::fs::write(dir.path().join("empty.csv"), "image_path\n").unwrap();

    expect_error(
        &["--model-path", "absent.safetensors", "--image-path", "x.jpg"],
        &["absent.safetensors", "does not exist"],
    );
    std::fs::write(dir.path().join("corrupt.safetensors"), b"\x10\x00\x00\x00\x00\x00\x00\x00garbage!").unwrap();
    expect_error(
        &["--model-path", "corrupt.safetensors", "--image-path", "x.jpg"],
        &["corrupt.safetensors", "not a valid safetensors"],
    );

    // Metadata with 3 class names over a 4-output model.
    let (tensors, mut metadata) = imgtype::model::file::read_safetensors(&model).unwrap();
    metadata.insert("class_names".into(), r#"["a","b","c"]"#.into());
    let mismatched = dir.path().join("mismatched.safetensors");
    imgtype::model::file::write_safetensors(&mismatched, &tensors, metadata).unwrap();
    expect_error(
        &["--model-path", mismatched.to_str().unwrap(), "--image-path", "x.jpg"],
        &["4 outputs", "3 class names"],
    );

    expect_error(
        &["--model-path", model_str, "--csv-path", "images.csv", "--output-path", "o1.csv"],
        &["images.csv", "image_path", "--image-column"],
    );
    expect_error(
        &["--model-path", model_str, "--csv-path", "empty.csv", "--output-path", "o2.csv"],
        &["empty.csv", "no rows"],
    );
    expect_error(
        &["--model-path", model_str, "--data-dir", "nowhere", "--output-dir", "results"],
        &["nowhere", "train_data.csv"],
    );
    for leftover in ["o1.csv", "o2.csv", "results"] {
        assert!(!dir.path().join(leftover).exists(), "{leftover} was left behind");
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Peak resident memory (KiB) of the `test` binary over a CSV of `rows` rows.
fn peak_rss_kib(dir: &Path, model: &Path, rows: usize) -> i64 {
    let keys = sample_split_rows(8);
    let mut text = String::from("image_path\n");
    for i in 0..rows {
        text.push_str(&keys[i % keys.len()].1);
        text.push('\n');
    }
    let input = dir.join(format!("big{rows}.csv"));
    std::fs::write(&input, text).unwrap();
    let model = model.to_str().unwrap();
    let output = format!("out{rows}.csv");
    let (out, peak_kib) = run_measured(
        dir,
        TEST,
        &["--model-path", model, "--csv-path", input.to_str().unwrap(), "--output-path", &output],
    );
    assert!(out.status.success(), "test binary failed on {rows} rows");
    assert_eq!(read_csv(&dir.join(format!("out{rows}.csv"))).1.len(), rows);
    peak_kib
}

#[test]
fn memory_stays_flat_over_a_large_csv() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    let small = peak_rss_kib(dir.path(), &model, 1_000);
    let large = peak_rss_kib(dir.path(), &model, 10_000);
    println!("peak RSS: 1000 rows {small} KiB, 10000 rows {large} KiB");
    assert!(large - small < 30 * 1024, "peak RSS grew from {small} KiB to {large} KiB");
}

/// Starts `test args…` in `dir`, sends SIGINT once stderr shows `trigger`, and returns
/// the exit code and stderr.
fn interrupt_when(dir: &Path, args: &[&str], trigger: &str) -> (Option<i32>, String) {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(TEST)
        .current_dir(dir)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = String::new();
    let mut sent = false;
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        if !sent && line.contains(trigger) {
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
            sent = true;
        }
        log.push_str(&line);
        log.push('\n');
    }
    (child.wait().unwrap().code(), log)
}

#[test]
fn an_interrupted_csv_run_keeps_its_rows_and_the_same_command_finishes_it() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    let keys = sample_split_rows(40);
    let rows: Vec<_> = (0..4000).map(|i| keys[i % keys.len()].clone()).collect();
    write_split_csv(&dir.path().join("input.csv"), &rows);
    let model = model.to_str().unwrap();
    ok(run_test(dir.path(), &["--model-path", model, "--csv-path", "input.csv", "--output-path", "straight.csv"]));

    let args = ["--model-path", model, "--csv-path", "input.csv", "--output-path", "resumed.csv"];
    let (code, log) = interrupt_when(dir.path(), &args, "predict 160/4000");
    assert_eq!(code, Some(130), "{log}");
    assert!(log.contains("resumed.csv.partial") && log.contains("run the same command again"), "{log}");
    assert!(!dir.path().join("resumed.csv").exists(), "the output appears only when complete");
    let partial = std::fs::read_to_string(dir.path().join("resumed.csv.partial")).unwrap();
    let kept = partial.lines().count() - 1;
    assert!((160..4000).contains(&kept), "{kept} rows kept");

    // Another version of the input (a label changed, the same image paths): its rows are not
    // taken over, and the partial file is left as it was.
    let input = std::fs::read_to_string(dir.path().join("input.csv")).unwrap();
    std::fs::write(dir.path().join("input.csv"), input.replacen(",full_shot", ",care_label", 1)).unwrap();
    let refused = run_test(dir.path(), &args);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("resumed.csv.partial was made with other settings"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(dir.path().join("resumed.csv.partial")).unwrap(), partial);
    std::fs::write(dir.path().join("input.csv"), input).unwrap();
    let resumed = ok(run_test(dir.path(), &args));
    assert!(String::from_utf8_lossy(&resumed.stderr).contains(&format!("{kept} of 4000 rows were done before")));
    assert_eq!(without_timing(&dir.path().join("resumed.csv")), without_timing(&dir.path().join("straight.csv")));
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.contains(".partial") || n.starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn an_interrupted_dataset_run_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    let keys = sample_split_rows(40);
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let many: Vec<_> = (0..3000).map(|i| keys[i % keys.len()].clone()).collect();
    write_split_csv(&data.join("train_data.csv"), &many);
    write_split_csv(&data.join("validation_data.csv"), &keys);
    write_split_csv(&data.join("test_data.csv"), &keys);
    let args = ["--model-path", model.to_str().unwrap(), "--data-dir", "data", "--output-dir", "results"];
    let (code, log) = interrupt_when(dir.path(), &args, "train 160/3000");
    assert_eq!(code, Some(130), "{log}");
    assert!(log.contains("interrupted"), "{log}");
    let left: Vec<_> = std::fs::read_dir(dir.path().join("results")).unwrap().collect();
    assert!(left.is_empty(), "no partial results folder: {left:?}");

    // A staging folder a killed `test` left is removed by the next run; one a live `test`
    // holds is not, and the results folder holds no lock file.
    let results = dir.path().join("results");
    let (killed, live) = (results.join(".run_20260101_000000_0badc0de.partial"), results.join(".run_live.partial"));
    std::fs::create_dir_all(&killed).unwrap();
    std::fs::write(killed.join("inference_results.csv"), "half").unwrap();
    let _held = imgtype::fsutil::FolderLock::acquire(&live, "predicting into it").unwrap();
    // A user's folders: named otherwise, or holding a folder (`test` writes files only).
    let users = [results.join(".run_backup.partial"), results.join(".run_20260101_000000_deadbeef.partial")];
    std::fs::create_dir_all(&users[0]).unwrap();
    std::fs::create_dir_all(users[1].join("thesis")).unwrap();
    let an_hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for folder in [&killed, &live, &users[0], &users[1]] {
        std::fs::File::open(folder).unwrap().set_modified(an_hour_ago).unwrap();
    }
    write_split_csv(&data.join("train_data.csv"), &keys);
    let out = ok(run_test(dir.path(), &args));
    assert!(String::from_utf8_lossy(&out.stderr).contains("left by an interrupted `test`"));
    assert!(!killed.exists() && live.exists() && users.iter().all(|u| u.exists()));
    let visible = |p: &PathBuf| !p.file_name().unwrap().to_string_lossy().starts_with('.');
    let finished = std::fs::read_dir(&results).unwrap().map(|e| e.unwrap().path()).find(visible);
    let finished = finished.expect("a results folder");
    assert!(finished.join("inference_results.csv").is_file() && !finished.join(".imgtype.lock").exists());
}

/// `test --export-onnx`: the model file as ONNX, which onnxruntime and OpenVINO run to our
/// logits; the model file itself is never the output.
#[test]
fn the_model_exports_to_onnx_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    let out = ok(run_test(dir.path(), &["--model-path", model.to_str().unwrap(), "--export-onnx", "model.onnx"]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("ONNX model (opset 17) written to model.onnx"), "{stdout}");
    let loaded = ImageTypeClassifier::load(&model, tch::Device::Cpu).unwrap();
    let input = tch::Tensor::randn([2, 3, 32, 32], (tch::Kind::Float, tch::Device::Cpu));
    let logits = tch::no_grad(|| loaded.forward_t(&input, false));
    let reference = dir.path().join("reference.safetensors");
    let tensors = [("input".to_string(), input), ("logits".to_string(), logits)];
    imgtype::model::file::write_safetensors(&reference, &tensors, Default::default()).unwrap();
    let names = serde_json::to_string(loaded.class_names()).unwrap();
    imgtype_testkit::run_python("tests/python/check_onnx.py", &[&dir.path().join("model.onnx"), &reference, &names]);

    let refused =
        run_test(dir.path(), &["--model-path", model.to_str().unwrap(), "--export-onnx", model.to_str().unwrap()]);
    assert!(!refused.status.success());
    assert!(ImageTypeClassifier::load(&model, tch::Device::Cpu).is_ok(), "the model file is untouched");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("error:") && stderr.contains("model.safetensors"), "{stderr}");
}

/// `--engine openvino` predicts what libtorch predicts (fp32: probabilities within 1e-4),
/// says which engine ran; without a loadable OpenVINO it warns once and runs libtorch.
#[test]
fn the_openvino_engine_agrees_with_libtorch_and_falls_back_without_its_library() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    write_split_csv(&dir.path().join("input.csv"), &sample_split_rows(24));
    let model = model.to_str().unwrap();
    let predict = |engine: &str, output: &str, library: Option<&str>| {
        let mut command = std::process::Command::new(TEST);
        command.current_dir(dir.path()).args(["--model-path", model, "--csv-path", "input.csv"]);
        command.args(["--output-path", output, "--engine", engine, "--precision", "fp32"]);
        if let Some(library) = library {
            command.env("IMGTYPE_OPENVINO_LIB", library);
        }
        let out = ok(command.output().unwrap());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let log = predict("libtorch", "torch.csv", None);
    assert!(log.contains("libtorch fp32"), "{log}");
    let log = predict("openvino", "openvino.csv", None);
    assert!(log.contains("openvino fp32"), "{log}");
    let (header, torch) = read_csv(&dir.path().join("torch.csv"));
    let (_, openvino) = read_csv(&dir.path().join("openvino.csv"));
    let probabilities: Vec<usize> = (0..header.len()).filter(|&i| header[i].starts_with("prob_")).collect();
    for (a, b) in torch.iter().zip(&openvino) {
        for &i in &probabilities {
            let (x, y): (f64, f64) = (a[i].parse().unwrap(), b[i].parse().unwrap());
            assert!((x - y).abs() <= 1e-4, "{}: {x} vs {y}", header[i]);
        }
    }
    let log = predict("openvino", "fallback.csv", Some("/nonexistent/libopenvino_c.so"));
    assert_eq!(log.matches("OpenVINO is not available").count(), 1, "{log}");
    assert!(log.contains("libtorch fp32"), "{log}");
    assert_eq!(without_timing(&dir.path().join("fallback.csv")), without_timing(&dir.path().join("torch.csv")));
}

/// `test --device cuda`: `auto` picks libtorch there (OpenVINO runs on the CPU only), fp32
/// probabilities lie within 1e-3 of the CPU's, and bf16 (`auto` on CUDA) decides as the CPU.
#[test]
fn cuda_test_runs_libtorch_and_predicts_as_the_cpu() {
    if !imgtype_testkit::cuda_test_runs(
        "cuda_test_runs_libtorch_and_predicts_as_the_cpu",
        imgtype::device::cuda_available(),
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    write_split_csv(&dir.path().join("input.csv"), &sample_split_rows(48));
    let predict = |device: &str, precision: &str, output: &str| {
        let out = ok(std::process::Command::new(imgtype_testkit::binary(TEST))
            .current_dir(dir.path())
            .args(["--model-path", model.to_str().unwrap(), "--csv-path", "input.csv", "--output-path", output])
            .args(["--device", device, "--precision", precision])
            .output()
            .unwrap());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    predict("cpu", "fp32", "cpu.csv");
    let log = predict("cuda", "fp32", "cuda.csv");
    assert!(log.contains("libtorch fp32") && !log.contains("openvino"), "{log}");
    let log = predict("cuda", "auto", "cuda_auto.csv");
    assert!(log.contains("libtorch bf16"), "{log}");

    let (header, cpu) = read_csv(&dir.path().join("cpu.csv"));
    let (_, cuda) = read_csv(&dir.path().join("cuda.csv"));
    let (_, cuda_bf16) = read_csv(&dir.path().join("cuda_auto.csv"));
    assert_eq!(cpu.len(), 48);
    let probabilities: Vec<usize> = (0..header.len()).filter(|&i| header[i].starts_with("prob_")).collect();
    let predicted = header.iter().position(|h| h == "predicted_class").unwrap();
    for (a, b) in cpu.iter().zip(&cuda) {
        assert_eq!(a[predicted], b[predicted]);
        for &i in &probabilities {
            let (x, y): (f64, f64) = (a[i].parse().unwrap(), b[i].parse().unwrap());
            assert!((x - y).abs() <= 1e-3, "{}: CPU {x} vs CUDA {y}", header[i]);
        }
    }
    let agree = cpu.iter().zip(&cuda_bf16).filter(|(a, b)| a[predicted] == b[predicted]).count();
    println!("CUDA bf16 decides as CPU fp32 on {agree} of 48 images");
    assert!(agree >= 45, "{agree} of 48");
}

/// A lock file left by another user's process that ended (one this user may read but not
/// write) is replaced, not a "Permission denied"; one a live process holds names that process.
#[test]
fn another_users_stale_lock_is_replaced_and_a_live_one_named() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path());
    write_split_csv(&dir.path().join("input.csv"), &sample_split_rows(5));
    let lock = dir.path().join(".out.csv.lock");
    std::fs::write(&lock, "process 1 on elsewhere since 2026-01-01 00:00:00\n").unwrap();
    std::fs::set_permissions(&lock, std::fs::Permissions::from_mode(0o444)).unwrap();
    // Root writes any file: as root, the command runs without its capabilities, as another
    // user's would.
    let root = std::fs::metadata(&lock).unwrap().uid() == 0;
    let without_capabilities =
        ["--securebits", "+noroot,+noroot_locked", "--bounding-set", "-all", "--inh-caps", "-all"];
    if root
        && !std::process::Command::new("setpriv")
            .args(without_capabilities)
            .arg("true")
            .status()
            .is_ok_and(|s| s.success())
    {
        eprintln!("skipped: running as root, and setpriv cannot drop capabilities here");
        return;
    }
    let run_as_another_user = || -> Output {
        let mut command = match root {
            true => {
                let mut c = std::process::Command::new("setpriv");
                c.args(without_capabilities).arg(TEST);
                c
            }
            false => std::process::Command::new(TEST),
        };
        let args = ["--model-path", model.to_str().unwrap(), "--csv-path", "input.csv", "--output-path", "out.csv"];
        command.current_dir(dir.path()).args(args).output().unwrap()
    };
    let live = std::fs::File::open(&lock).unwrap();
    live.try_lock().unwrap();
    let out = run_as_another_user();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("out.csv is in use by process 1 on elsewhere"), "{stderr}");
    assert!(!dir.path().join("out.csv").exists());
    drop(live);
    let out = ok(run_as_another_user());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("another user's lock file, left by a process that ended"), "{stderr}");
    assert_eq!(read_csv(&dir.path().join("out.csv")).1.len(), 5);
    assert!(!lock.exists(), "the lock goes when the command ends");
}
