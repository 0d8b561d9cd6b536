//! What the tests share: the repository root, running a binary or a reference script of
//! the project venv's Python and insisting that it succeeds, and reading the CSV and JSON
//! files they write.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository: where this crate was built, or `IMGTYPE_REPO_ROOT` (test executables
/// built on one machine and run on another, as scripts/gpu_check.sh does).
pub fn repo_root() -> PathBuf {
    match std::env::var_os("IMGTYPE_REPO_ROOT") {
        Some(root) => PathBuf::from(root),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repo root"),
    }
}

/// A binary of this workspace (`env!("CARGO_BIN_EXE_…")`), or the one of that name in
/// `IMGTYPE_BIN_DIR` when set (binaries carried to another machine with the tests).
pub fn binary(built: &str) -> PathBuf {
    match std::env::var_os("IMGTYPE_BIN_DIR") {
        Some(dir) => Path::new(&dir).join(Path::new(built).file_name().expect("a binary's file name")),
        None => PathBuf::from(built),
    }
}

/// Whether a CUDA test runs here: true when `cuda_available`; otherwise it prints one line
/// saying the test was skipped for want of a CUDA device and returns false. With
/// `IMGTYPE_REQUIRE_CUDA=1` (scripts/gpu_check.sh) a missing device fails the test instead,
/// so a GPU check never passes by skipping.
pub fn cuda_test_runs(test: &str, cuda_available: bool) -> bool {
    if cuda_available {
        return true;
    }
    if std::env::var("IMGTYPE_REQUIRE_CUDA").is_ok_and(|v| v == "1") {
        panic!("{test}: IMGTYPE_REQUIRE_CUDA=1 but libtorch sees no CUDA device");
    }
    println!("{test}: skipped, no CUDA device (libtorch sees none)");
    false
}

/// The bundled sample photos.
pub fn sample_images() -> PathBuf {
    repo_root().join("sample_images")
}

/// Runs `exe args…` in `dir` and returns its output and its peak resident memory in KiB
/// (`wait4`'s `ru_maxrss`).
pub fn run_measured(dir: &Path, exe: impl AsRef<Path>, args: &[&str]) -> (Output, i64) {
    use std::io::Read;
    let mut child = Command::new(exe.as_ref())
        .current_dir(dir)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {}: {e}", exe.as_ref().display()));
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let mut err_pipe = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        err_pipe.read_to_end(&mut buf).unwrap();
        buf
    });
    child.stdout.take().unwrap().read_to_end(&mut stdout).unwrap();
    stderr.extend(err_reader.join().unwrap());
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as libc::pid_t);
    let status = std::os::unix::process::ExitStatusExt::from_raw(status);
    (Output { status, stdout, stderr }, usage.ru_maxrss)
}

/// Runs `exe args…` in `dir` and returns what it did, success or not.
pub fn run(dir: &Path, exe: impl AsRef<Path>, args: &[&str]) -> Output {
    let exe = exe.as_ref();
    Command::new(exe).current_dir(dir).args(args).output().unwrap_or_else(|e| panic!("run {}: {e}", exe.display()))
}

/// Runs `exe args…` in `dir` with `envs` added, killed and failed (a panic naming it) if it
/// has not finished within `limit`: for inputs that used to block forever.
pub fn run_bounded(
    dir: &Path,
    exe: impl AsRef<Path>,
    args: &[&str],
    envs: &[(&str, &str)],
    limit: std::time::Duration,
) -> Output {
    let exe = exe.as_ref();
    let mut child = Command::new(exe)
        .current_dir(dir)
        .args(args)
        .envs(envs.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {}: {e}", exe.display()));
    let started = std::time::Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let output = child.wait_with_output().expect("output");
            panic!(
                "{} {args:?} did not finish within {limit:?}; stderr:\n{}",
                exe.display(),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// `output`, after checking that the command succeeded (else panics with its output).
pub fn ok(output: Output) -> Output {
    assert!(
        output.status.success(),
        "command failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The venv's Python (set-up records it as IMGTYPE_PYTHON in .cargo/config.toml).
pub fn python() -> PathBuf {
    std::env::var_os("IMGTYPE_PYTHON").map(PathBuf::from).unwrap_or_else(|| repo_root().join(".venv/bin/python"))
}

/// Runs the repository's `script` (e.g. `tests/python/parity_reference.py`) with the venv's
/// Python and panics with its output when it fails.
pub fn run_python(script: &str, args: &[&dyn AsRef<OsStr>]) -> Output {
    let output = Command::new(python())
        .arg(repo_root().join(script))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run python {script}: {e}"));
    ok(output)
}

pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The header and rows of a CSV file.
pub fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut reader = csv::Reader::from_path(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let header = reader.headers().unwrap().iter().map(String::from).collect();
    let rows = reader.records().map(|r| r.unwrap().iter().map(String::from).collect()).collect();
    (header, rows)
}

/// Every file below `dir`, sorted.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).unwrap_or_else(|e| panic!("{}: {e}", current.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Copies the folder `from` with everything below it to `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display())) {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
    }
}

/// The one entry of `parent` (panics when there are none or several).
pub fn only_entry(parent: &Path) -> PathBuf {
    let entries: Vec<PathBuf> = std::fs::read_dir(parent).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    entries.into_iter().next().unwrap()
}

/// A real HTTP server on 127.0.0.1 serving the files of a folder (a stand-in for a CDN or
/// download.pytorch.org); counts the requests it answers. Unknown paths get 404.
pub struct FileServer {
    pub base_url: String,
    hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl FileServer {
    pub fn serve(dir: &Path) -> Self {
        let server = tiny_http::Server::http("127.0.0.1:0").expect("a free port on 127.0.0.1");
        let port = server.server_addr().to_ip().expect("an IP address").port();
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (dir, counter) = (dir.to_path_buf(), hits.clone());
        std::thread::spawn(move || {
            for request in server.incoming_requests() {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let relative = request.url().split('?').next().unwrap_or("").trim_start_matches('/').to_string();
                let path = dir.join(&relative);
                let response = match std::fs::read(&path) {
                    Ok(bytes) if !relative.contains("..") => tiny_http::Response::from_data(bytes),
                    _ => tiny_http::Response::from_data(b"not found".to_vec()).with_status_code(404),
                };
                let _ = request.respond(response);
            }
        });
        Self { base_url: format!("http://127.0.0.1:{port}"), hits }
    }

    /// Requests answered so far.
    pub fn hits(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Runs `exe` in `dir` and sends it SIGINT after each stderr line for which `interrupt_at`
/// returns true (as a user pressing Ctrl-C at that point); returns the exit code, stdout
/// and stderr.
pub fn run_interrupted(
    dir: &Path,
    exe: impl AsRef<Path>,
    args: &[&str],
    mut interrupt_at: impl FnMut(&str) -> bool,
) -> (Option<i32>, String, String) {
    use std::io::{BufRead, Read};
    let mut child = std::process::Command::new(exe.as_ref())
        .current_dir(dir)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.as_ref().display()));
    let mut log = String::new();
    for line in std::io::BufReader::new(child.stderr.take().expect("piped stderr")).lines() {
        let line = line.expect("stderr is text");
        if interrupt_at(&line) {
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
        }
        log.push_str(&line);
        log.push('\n');
    }
    let status = child.wait().expect("the child ends");
    let mut stdout = String::new();
    child.stdout.take().expect("piped stdout").read_to_string(&mut stdout).expect("stdout is text");
    (status.code(), stdout, log)
}
