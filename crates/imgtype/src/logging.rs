//! Logging: human lines on stderr (kept clear of progress bars), and once a run folder
//! exists, `logs/application.log` (everything) and `logs/error.log` (warnings and errors).

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use anyhow::{Context, Result};
use tracing::Level;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{filter, EnvFilter, Layer};

static APPLICATION_LOG: Mutex<Option<File>> = Mutex::new(None);
static ERROR_LOG: Mutex<Option<File>> = Mutex::new(None);
static PROGRESS: OnceLock<indicatif::MultiProgress> = OnceLock::new();
static LEVEL: OnceLock<tracing_subscriber::reload::Handle<EnvFilter, tracing_subscriber::Registry>> = OnceLock::new();

/// The progress-bar host shared by all bars, so log lines print above them.
pub fn multi_progress() -> &'static indicatif::MultiProgress {
    PROGRESS.get_or_init(indicatif::MultiProgress::new)
}

pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

#[derive(Clone, Copy)]
struct ConsoleWriter;

impl Write for ConsoleWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match PROGRESS.get() {
            Some(multi) if stderr_is_terminal() => multi.suspend(|| std::io::stderr().write_all(buf))?,
            _ => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> MakeWriter<'a> for ConsoleWriter {
    type Writer = ConsoleWriter;
    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}

#[derive(Clone, Copy)]
struct FileWriter(&'static Mutex<Option<File>>);

impl Write for FileWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(file) = self.0.lock().expect("log file lock").as_mut() {
            file.write_all(buf)?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        if let Some(file) = self.0.lock().expect("log file lock").as_mut() {
            file.flush()?;
        }
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for FileWriter {
    type Writer = FileWriter;
    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}

/// Installs the global logger once; later calls do nothing. `RUST_LOG` overrides the level.
pub fn init(level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let _ = LEVEL.set(handle);
    let console = tracing_subscriber::fmt::layer()
        .with_writer(ConsoleWriter)
        .with_target(false)
        .with_ansi(stderr_is_terminal())
        .with_timer(tracing_subscriber::fmt::time::ChronoLocal::new("%Y-%m-%d %H:%M:%S".into()));
    let application = tracing_subscriber::fmt::layer()
        .with_writer(FileWriter(&APPLICATION_LOG))
        .with_ansi(false)
        .with_timer(tracing_subscriber::fmt::time::ChronoLocal::new("%Y-%m-%d %H:%M:%S%.3f".into()));
    let errors = tracing_subscriber::fmt::layer()
        .with_writer(FileWriter(&ERROR_LOG))
        .with_ansi(false)
        .with_timer(tracing_subscriber::fmt::time::ChronoLocal::new("%Y-%m-%d %H:%M:%S%.3f".into()))
        .with_filter(filter::LevelFilter::from_level(Level::WARN));
    let _ = tracing_subscriber::registry().with(filter).with(console).with(application).with(errors).try_init();
}

/// Applies `logging.log_level` (trace, debug, info, warn, error) unless `RUST_LOG` is set.
pub fn set_level(level: &str) -> Result<()> {
    if std::env::var_os("RUST_LOG").is_some() {
        return Ok(());
    }
    let filter = EnvFilter::try_new(level).with_context(|| format!("logging.log_level `{level}` is not a level"))?;
    if let Some(handle) = LEVEL.get() {
        handle.reload(filter).context("cannot change the log level")?;
    }
    Ok(())
}

/// From now on, also log into `dir/application.log` and `dir/error.log`.
pub fn attach_log_files(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create log folder {}", dir.display()))?;
    let open = |name: &str| {
        let path = dir.join(name);
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open log file {}", path.display()))
    };
    *APPLICATION_LOG.lock().expect("log file lock") = Some(open("application.log")?);
    *ERROR_LOG.lock().expect("log file lock") = Some(open("error.log")?);
    Ok(())
}
