//! Awkward inputs (scripts/make_awkward_corpus.py: decompression bombs, truncated data,
//! empty and mislabelled files, unusual but valid images, CSVs with encoding and quoting
//! trouble) through every entry point: `test` on one image and on a CSV, `divide
//! --validate-images`, training's screening, and the backend API from many threads. No
//! crash, the documented exit status, one clear line per bad input, bounded memory.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use imgtype::data::decode::{decode_bytes, DecodeLimits};
use imgtype::infer::ImageClassificationApi;
use imgtype::{Config, ImageTypeClassifier};
use imgtype_testkit::{ok, read_csv, read_json, run, run_measured, run_python};

const TEST: &str = env!("CARGO_BIN_EXE_test");
const DIVIDE: &str = env!("CARGO_BIN_EXE_divide");
const TRAIN: &str = env!("CARGO_BIN_EXE_train");
const CLASSES: [&str; 4] = ["care_label", "detail_shot", "full_shot", "neck_label"];

struct Corpus {
    dir: PathBuf,
    /// Image file → the reason text its error contains (`None` for images that must decode).
    images: BTreeMap<String, Option<String>>,
    sizes: BTreeMap<String, (u32, u32)>,
    model: PathBuf,
}

impl Corpus {
    fn images_dir(&self) -> PathBuf {
        self.dir.join("images")
    }

    fn bad(&self) -> BTreeSet<String> {
        self.images.iter().filter(|(_, r)| r.is_some()).map(|(n, _)| n.clone()).collect()
    }

    fn good(&self) -> Vec<String> {
        self.images.iter().filter(|(_, r)| r.is_none()).map(|(n, _)| n.clone()).collect()
    }
}

/// Generated once per test process; the model is untrained, 32 px, and finds the images
/// through its config's `data.base_image_path`.
fn corpus() -> &'static Corpus {
    static CORPUS: OnceLock<Corpus> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("awkward_corpus");
        let _ = std::fs::remove_dir_all(&dir);
        run_python("scripts/make_awkward_corpus.py", &[&dir]);
        let expectations = read_json(&dir.join("expectations.json"));
        let mut images = BTreeMap::new();
        let mut sizes = BTreeMap::new();
        for (name, entry) in expectations["images"].as_object().unwrap() {
            let reason = (entry["expect"] == "error").then(|| entry["reason"].as_str().unwrap_or("").to_string());
            images.insert(name.clone(), reason);
            if let Some(size) = entry["size"].as_array() {
                sizes.insert(name.clone(), (size[0].as_u64().unwrap() as u32, size[1].as_u64().unwrap() as u32));
            }
        }
        let mut config = Config::default();
        config.augmentation.image_size = 32;
        config.inference.batch_size = 8;
        config.system.num_workers = 2;
        config.data.base_image_path = Some(dir.join("images"));
        tch::manual_seed(3);
        let model = dir.join("model.safetensors");
        ImageTypeClassifier::new(&config, tch::Device::Cpu).save(&model).unwrap();
        Corpus { dir, images, sizes, model }
    })
}

#[test]
fn good_images_decode_to_their_size_and_bad_ones_say_why() {
    let corpus = corpus();
    // Read as every entry point reads images: through the source, whose reads are capped.
    let source = imgtype::data::ImageSource::local(Some(corpus.images_dir()));
    for (name, reason) in &corpus.images {
        let decoded = source.fetch(name).and_then(|bytes| decode_bytes(&bytes, name, DecodeLimits::default()));
        match (decoded, reason) {
            (Ok(image), None) => {
                assert_eq!(image.dimensions(), corpus.sizes[name], "{name} (EXIF orientation applied)")
            }
            (Err(e), Some(reason)) => {
                let message = format!("{e:#}");
                assert!(message.contains(name.as_str()) && message.contains(reason.as_str()), "{name}: {message}");
            }
            (Ok(_), Some(reason)) => panic!("{name} decoded, but should fail with `{reason}`"),
            (Err(e), None) => panic!("{name} should decode: {e:#}"),
        }
    }
}

#[test]
fn single_image_mode_predicts_or_gives_one_error_line_in_bounded_memory() {
    let corpus = corpus();
    let model = corpus.model.to_str().unwrap();
    let (_, baseline_kib) =
        run_measured(&corpus.images_dir(), TEST, &["--model-path", model, "--image-path", "plain.jpg"]);
    for (name, reason) in &corpus.images {
        let (out, peak_kib) = run_measured(&corpus.images_dir(), TEST, &["--model-path", model, "--image-path", name]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        match reason {
            None => {
                assert!(out.status.success(), "{name}: {stderr}");
                assert!(String::from_utf8_lossy(&out.stdout).starts_with(&format!("{name}: ")), "{name}");
            }
            Some(reason) => {
                assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
                let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
                assert_eq!(errors.len(), 1, "{name}: one error line\n{stderr}");
                assert!(errors[0].contains(name.as_str()) && errors[0].contains(reason.as_str()), "{name}: {stderr}");
            }
        }
        // Bombs are refused from the header: about the memory a small image takes (the
        // margin covers allocator noise when tests run in parallel; the 20000×20000 bomb
        // alone would need 400 MiB decoded).
        assert!(peak_kib < baseline_kib + 200 * 1024, "{name}: peak RSS {peak_kib} KiB vs {baseline_kib} KiB");
    }
}

#[test]
fn a_file_name_that_is_not_utf8_is_predicted() {
    use std::os::unix::ffi::OsStrExt;
    let corpus = corpus();
    let work = tempfile::tempdir().unwrap();
    let name = std::ffi::OsStr::from_bytes(b"caf\xe9.jpg");
    std::fs::copy(corpus.images_dir().join("plain.jpg"), work.path().join(name)).unwrap();
    let output = std::process::Command::new(TEST)
        .current_dir(work.path())
        .arg("--model-path")
        .arg(&corpus.model)
        .arg("--image-path")
        .arg(name)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.starts_with("caf\u{fffd}.jpg: "), "{stdout}");
}

#[test]
fn csv_mode_keeps_one_row_per_input_row_and_strict_fails_the_exit_status() {
    let corpus = corpus();
    let work = tempfile::tempdir().unwrap();
    let mut text = String::from("image_path,image_type\n");
    for (i, name) in corpus.images.keys().enumerate() {
        text.push_str(&format!("{name},{}\n", CLASSES[i % 4]));
    }
    std::fs::write(work.path().join("all.csv"), text).unwrap();
    let model = corpus.model.to_str().unwrap();
    let args = ["--model-path", model, "--csv-path", "all.csv", "--output-path", "out.csv"];
    ok(run(work.path(), TEST, &args));
    let (header, rows) = read_csv(&work.path().join("out.csv"));
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    assert_eq!(rows.len(), corpus.images.len());
    for (row, (name, reason)) in rows.iter().zip(&corpus.images) {
        assert_eq!(&row[col("image_path")], name);
        match reason {
            None => assert!(row[col("error")].is_empty() && row[col("predicted_class")] != "ERROR", "{name}: {row:?}"),
            Some(reason) => {
                assert_eq!(row[col("predicted_class")], "ERROR", "{name}");
                assert!(row[col("error")].contains(reason.as_str()), "{name}: {}", row[col("error")]);
            }
        }
    }
    let strict = run(work.path(), TEST, &[&args[..], &["--strict"]].concat());
    assert_eq!(strict.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&strict.stderr);
    assert!(stderr.contains(&format!("{} of {} rows are ERROR rows", corpus.bad().len(), rows.len())), "{stderr}");
    assert!(work.path().join("out.csv").exists(), "--strict still writes every row");
}

#[test]
fn awkward_csvs_give_error_rows_or_one_clear_error() {
    let corpus = corpus();
    let model = corpus.model.to_str().unwrap();
    let predict = |csv: &str| {
        let out = format!("out_{csv}");
        let output = run(&corpus.dir, TEST, &["--model-path", model, "--csv-path", csv, "--output-path", &out]);
        (output, corpus.dir.join(out))
    };
    for csv in ["bom.csv", "crlf.csv"] {
        let (output, out) = predict(csv);
        assert!(output.status.success(), "{csv}: {}", String::from_utf8_lossy(&output.stderr));
        let (header, rows) = read_csv(&out);
        assert_eq!(header[0], "image_path", "{csv}: the BOM is not part of the first column name");
        assert_eq!(rows.len(), 3, "{csv}");
        assert!(rows.iter().all(|r| r[header.len() - 1].is_empty()), "{csv}: {rows:?}");
    }
    let (output, out) = predict("field_counts.csv");
    assert!(output.status.success());
    let (header, rows) = read_csv(&out);
    let errors: Vec<&str> = rows.iter().map(|r| r[header.len() - 1].as_str()).collect();
    assert_eq!(errors[0], "");
    assert_eq!(errors[1], "row 3 has 4 fields, the header has 2");
    assert_eq!(errors[2], "row 4 has 1 fields, the header has 2");
    assert_eq!(errors[3], "");
    let (output, out) = predict("non_utf8.csv");
    assert!(output.status.success());
    let raw = std::fs::read(&out).unwrap();
    assert!(raw.windows(8).any(|w| w == b"caf\xe9.jpg"), "the path is written back byte for byte");
    let text = String::from_utf8_lossy(&raw);
    assert!(text.contains("row 3: the image path is not valid UTF-8"), "{text}");
    let (output, out) = predict("bad_quote.csv");
    assert!(output.status.success(), "an unbalanced quote gives an ERROR row, not a failed run");
    let (header, rows) = read_csv(&out);
    let errors: Vec<&str> = rows.iter().map(|r| r[header.len() - 1].as_str()).collect();
    assert_eq!(errors.len(), 3, "one output row per input row: {rows:?}");
    assert!(errors[0].is_empty() && errors[2].is_empty(), "{errors:?}");
    assert!(errors[1].contains("row 3 has an unbalanced quote"), "{errors:?}");
    for (csv, reason) in [
        ("empty.csv", "no header row"),
        ("header_only.csv", "header but no rows"),
        ("two_image_columns.csv", "2 `image_path` columns"),
    ] {
        let (output, out) = predict(csv);
        assert_eq!(output.status.code(), Some(1), "{csv}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(csv) && stderr.contains(reason), "{csv}: {stderr}");
        assert!(!out.exists() && !PathBuf::from(format!("{}.partial", out.display())).exists(), "{csv}");
    }
}

#[test]
fn divide_and_training_screening_leave_out_exactly_the_bad_images() {
    let corpus = corpus();
    let work = tempfile::tempdir().unwrap();
    let images = corpus.images_dir();
    // divide --validate-images: one product per image.
    let mut products = String::from("id,category_name,main_image,back_image,text_tag_image,neck_tag_image,other\n");
    for (i, name) in corpus.images.keys().enumerate() {
        products.push_str(&format!("p{i},top,,,,,{name}\n"));
    }
    std::fs::write(work.path().join("products.csv"), products).unwrap();
    let args = ["--input-file", "products.csv", "--validate-images", "--image-base-path", images.to_str().unwrap()];
    ok(run(work.path(), DIVIDE, &args));
    let summary = read_json(&work.path().join("data/data_split_summary.json"));
    let dropped: BTreeSet<String> = summary["dropped_images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["image_path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(dropped, corpus.bad());

    // Training screens every split: the bad images are listed as skipped, the rest train.
    let data = work.path().join("screen");
    std::fs::create_dir(&data).unwrap();
    let mut train = String::from("product_id,image_path,image_type\n");
    for (i, name) in corpus.images.keys().enumerate() {
        train.push_str(&format!("p{i},{name},{}\n", CLASSES[i % 4]));
    }
    std::fs::write(data.join("train_data.csv"), &train).unwrap();
    let good: String =
        corpus.good().iter().take(8).enumerate().map(|(i, n)| format!("q{i},{n},{}\n", CLASSES[i % 4])).collect();
    for split in ["validation_data.csv", "test_data.csv"] {
        std::fs::write(data.join(split), format!("product_id,image_path,image_type\n{good}")).unwrap();
    }
    let config = serde_json::json!({
        "data": {"base_image_path": images, "max_bad_image_ratio": 1.0},
        "model": {"pretrained": false, "freeze_backbone_epochs": 0},
        "training": {"epochs": 1, "batch_size": 8},
        "augmentation": {"image_size": 32},
        "paths": {"data_dir": data},
        "system": {"device": "cpu", "num_workers": 1}
    });
    std::fs::write(work.path().join("config.json"), config.to_string()).unwrap();
    let output = ok(run(work.path(), TRAIN, &["--config", "config.json"]));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let run_dir = work.path().join(stdout.lines().find_map(|l| l.strip_prefix("run folder: ")).unwrap());
    let (_, skipped) = read_csv(&run_dir.join("logs/skipped_images.csv"));
    let skipped: BTreeSet<String> = skipped.iter().map(|r| r[1].clone()).collect();
    assert_eq!(skipped, corpus.bad());
    assert_eq!(read_json(&run_dir.join("final_results.json"))["skipped_images"], corpus.bad().len());
}

/// Peak and current resident memory of this process, in KiB.
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)).unwrap().split_whitespace().next().unwrap().parse().unwrap()
    };
    (field("VmHWM:"), field("VmRSS:"))
}

#[test]
fn the_api_survives_every_bad_input_from_many_threads_with_flat_memory() {
    let corpus = corpus();
    let api = Arc::new(ImageClassificationApi::with_device(&corpus.model, tch::Device::Cpu).unwrap());
    let all: Vec<String> = corpus.images.keys().cloned().collect();
    let expected = api.predict(&all);
    for (result, (name, reason)) in expected.iter().zip(&corpus.images) {
        assert_eq!(&result.image_path, name);
        assert_eq!(result.predicted_class == "ERROR", reason.is_some(), "{name}: {result:?}");
    }
    // Mixed calls of a few images each, good and bad: 8 threads × 100 calls, three times.
    // Memory settles over the first rounds (allocator arenas and fragmentation of the
    // threads each call starts, measured: +39, +13, +4, +4, +1, +1 MiB per round); the
    // third round must add little.
    let calls: Vec<Vec<String>> =
        (0..16).map(|k| all.iter().skip(k % all.len()).step_by(5).take(6).cloned().collect()).collect();
    let single: Arc<Vec<_>> = Arc::new(calls.iter().map(|c| api.predict(c)).collect());
    let calls = Arc::new(calls);
    let round = |first: usize| {
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let (api, calls, single) = (api.clone(), calls.clone(), single.clone());
                std::thread::spawn(move || {
                    for i in first..first + 100 {
                        let k = (t * 7 + i) % calls.len();
                        assert_eq!(api.predict(&calls[k]), single[k], "thread {t}, call {i}");
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("no API call panics");
        }
        memory_kib()
    };
    let (_, rss_start) = memory_kib();
    round(0);
    let (_, rss_warm) = round(100);
    let (peak, rss_end) = round(200);
    eprintln!(
        "API load: 8 threads × 300 calls; RSS {rss_start} KiB at the start, {rss_warm} KiB after 1600 calls, \
         {rss_end} KiB after 2400 (peak {peak} KiB)"
    );
    assert!(rss_end < rss_warm + 16 * 1024, "RSS grew from {rss_warm} to {rss_end} KiB over the last 800 calls");
    assert_eq!(api.predict(&all), expected, "the same instance still predicts as before");
}
