//! Logging: human lines on stderr (kept clear of progress bars), and once a run folder
//! exists, `logs/application.log` (everything) and `logs/error.log` (warnings and errors).

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use anyhow::{Context, Result};
use imgtype_base::config::LogLevel;
use tracing::Level;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{filter, reload, EnvFilter, Layer, Registry};

use crate::progress_bars::{bars, stderr_is_terminal};

static APPLICATION_LOG: Mutex<Option<File>> = Mutex::new(None);
static ERROR_LOG: Mutex<Option<File>> = Mutex::new(None);
static LEVEL: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

#[derive(Clone, Copy)]
struct ConsoleWriter;

impl Write for ConsoleWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match bars() {
            Some(bars) => bars.suspend(|| std::io::stderr().write_all(buf))?,
            None => std::io::stderr().write_all(buf)?,
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

/// Sets up the process for the binaries: the memory allocator tuned for libtorch, the
/// global logger (level info; `RUST_LOG` overrides) and, on a terminal, progress bars.
/// Later calls do nothing.
pub fn init_logging() {
    imgtype_base::tune_memory_allocator();
    crate::progress_bars::install();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
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

/// Applies `logging.log_level` unless `RUST_LOG` is set.
fn set_log_level(level: LogLevel) -> Result<()> {
    if std::env::var_os("RUST_LOG").is_some() {
        return Ok(());
    }
    if let Some(handle) = LEVEL.get() {
        handle.reload(EnvFilter::new(level.as_str())).context("cannot change the log level")?;
    }
    Ok(())
}

/// Writes the error that ends the process into the run's log files, if a run has them, so
/// `logs/error.log` says why a run stopped even when nobody watched the terminal.
pub(crate) fn record_fatal(message: &str) {
    let stamp = tracing_subscriber::fmt::time::ChronoLocal::new("%Y-%m-%d %H:%M:%S%.3f".into());
    let mut line = String::new();
    let _ = tracing_subscriber::fmt::time::FormatTime::format_time(
        &stamp,
        &mut tracing_subscriber::fmt::format::Writer::new(&mut line),
    );
    let line = format!("{line} ERROR {message}\n");
    for log in [&APPLICATION_LOG, &ERROR_LOG] {
        if let Some(file) = log.lock().expect("log file lock").as_mut() {
            let _ = file.write_all(line.as_bytes());
        }
    }
}

/// From now on, also log into `dir/application.log` and `dir/error.log`, at `level`.
pub fn attach_run_logs(dir: &Path, level: LogLevel) -> Result<()> {
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
    set_log_level(level)
}
