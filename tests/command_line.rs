//! Command lines that cannot run end with exit status 2 and one `error:` on stderr, before
//! anything is read or written; the same for the three binaries (as clap's own usage errors).

use std::path::Path;
use std::process::Command;

const TRAIN: &str = env!("CARGO_BIN_EXE_train");
const TEST: &str = env!("CARGO_BIN_EXE_test");
const DIVIDE: &str = env!("CARGO_BIN_EXE_divide");

fn assert_usage_error(dir: &Path, binary: &str, args: &[&str], says: &str) {
    let out = Command::new(imgtype_testkit::binary(binary)).current_dir(dir).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(stderr.starts_with("error:") && stderr.contains(says), "{args:?}: {stderr}");
    assert!(out.stdout.is_empty(), "{args:?}: nothing on stdout");
    let left: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, ["model.safetensors"], "{args:?}: nothing written");
}

#[test]
fn usage_errors_exit_2_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    // Never loaded: each command line is refused first.
    std::fs::write(work.join("model.safetensors"), b"not read").unwrap();
    let cases: &[(&str, &[&str], &str)] = &[
        (TRAIN, &["--member", "0/2"], "--member"),
        (TRAIN, &["--member", "0/0"], "--member"),
        (TRAIN, &["--member", "1/2", "--cross-validate", "2"], "--cv-dir"),
        (TRAIN, &["--member", "0/2", "--resume", "results/run_x"], "--member is for --sweep"),
        (TRAIN, &["--quick-test", "--epochs", "3"], "--epochs"),
        (TRAIN, &["--device", "tpu"], "unknown device `tpu`"),
        (TRAIN, &["--cross-validate", "3", "--stop-after", "1"], "--stop-after"),
        (TEST, &["--model-path", "model.safetensors", "--device", "bogus"], "unknown device `bogus`"),
        (TEST, &["--model-path", "model.safetensors", "--engine", "onnxruntime"], "unknown inference engine"),
        (TEST, &["--model-path", "model.safetensors", "--precision", "fp64"], "unknown number format `fp64`"),
        (TEST, &["--model-path", "model.safetensors", "--csv-path", "a.csv"], "--output-path"),
        (TEST, &["--model-path", "model.safetensors", "--shard", "4/4"], "--shard"),
        (TEST, &[], "--model-path"),
        (TRAIN, &["--cross-validate", "1"], "--cross-validate"),
        (TRAIN, &["--epochs", "0"], "--epochs"),
        (TRAIN, &["--batch-size", "5000"], "--batch-size"),
        (TRAIN, &["--stop-after", "0"], "--stop-after"),
        (TRAIN, &["--summarize", "some_dir", "--quick-test"], "--quick-test"),
        (TRAIN, &["--rank-by", "normalized_margin"], "--cross-validate"),
        (TRAIN, &["--neighbours", "10"], "--cross-validate"),
        (TRAIN, &["--summarize", "some_dir", "--neighbours", "1001"], "--neighbours"),
        (TRAIN, &["--summarize", "some_dir", "--neighbours", "3"], "not a cross-validation folder"),
        (TRAIN, &["--summarize", "some_dir", "--repeats", "2"], "--repeats"),
        (TRAIN, &["--resume", "some_dir", "--cv-dir", "other"], "--cv-dir"),
        (TEST, &["--model-path", "model.safetensors", "--image-path", "a.jpg", "--shard", "0/4"], "--shard"),
        (TEST, &["--model-path", "model.safetensors", "--image-path", "a.jpg", "--strict"], "--strict"),
        (TEST, &["--model-path", "model.safetensors", "--image-path", "a.jpg", "--output-dir", "out"], "--output-dir"),
        (TEST, &["--model-path", "model.safetensors", "--export-onnx", "m.onnx", "--engine", "libtorch"], "--engine"),
        (TEST, &["--merge-shards", "p.shard-0-of-2.csv", "--output-path", "p.csv", "--device", "cpu"], "--device"),
        (TEST, &["--merge-shards", "p.shard-0-of-2.csv", "--output-path", "p.csv", "--strict"], "--strict"),
        (
            TEST,
            &["--merge-shards", "p.shard-0-of-2.csv", "--output-path", "p.csv", "--model-path", "m"],
            "--model-path",
        ),
        (TEST, &["--model-path", "model.safetensors", "--json"], "--json"),
        (
            TEST,
            &["--model-path", "model.safetensors", "--export-onnx", "m.onnx", "--precision", "bf16"],
            "fp32 or int8",
        ),
        (TEST, &["--model-path", "model.safetensors", "--int8-calibrate", "a.csv", "--device", "cpu"], "--device"),
        (
            TEST,
            &["--model-path", "model.safetensors", "--int8-calibrate", "a.csv", "--precision", "int8"],
            "--precision",
        ),
        (
            TEST,
            &["--model-path", "model.safetensors", "--int8-calibrate", "a.csv", "--image-path", "a.jpg"],
            "--image-path",
        ),
        (TEST, &["--model-path", "model.safetensors", "--image-column", "path"], "--image-column"),
        (TEST, &["--model-path", "model.safetensors", "--int8-calibrate", "a.csv", "--strict"], "--strict"),
        (DIVIDE, &["--train-ratio", "most"], "--train-ratio"),
        (DIVIDE, &["--train-ratio", "1.5"], "a ratio is a number from 0 to 1"),
        (DIVIDE, &["--train-ratio", "0.5", "--val-ratio", "0.1", "--test-ratio", "0.1"], "0.5 (--train-ratio) + 0.1"),
        (DIVIDE, &["--duplicate-distance", "64"], "--duplicate-distance"),
    ];
    for (binary, args, says) in cases {
        assert_usage_error(work, binary, args, says);
    }
}

/// `--help` is what was asked for: exit 0, the usage on stdout.
#[test]
fn help_is_not_an_error() {
    for binary in [TRAIN, TEST, DIVIDE] {
        let out = Command::new(imgtype_testkit::binary(binary)).arg("--help").output().unwrap();
        assert_eq!(out.status.code(), Some(0));
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage:"));
    }
}
