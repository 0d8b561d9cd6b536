//! Helpers for tests that compare against the PyTorch reference in the project venv.

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repo root")
}

/// The venv's Python (set-up records it as IMGTYPE_PYTHON in .cargo/config.toml).
pub fn python() -> PathBuf {
    std::env::var_os("IMGTYPE_PYTHON").map(PathBuf::from).unwrap_or_else(|| repo_root().join(".venv/bin/python"))
}

/// Runs `tests/python/<script> args…` and panics with its output when it fails.
pub fn run_python(script: &str, args: &[&Path]) {
    let script_path = repo_root().join("tests/python").join(script);
    let output = Command::new(python()).arg(&script_path).args(args).output().expect("run python");
    assert!(
        output.status.success(),
        "{} failed:\n{}\n{}",
        script_path.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
