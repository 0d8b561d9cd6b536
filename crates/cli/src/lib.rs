//! The front-end side of the binaries: what a terminal user sees and how the process
//! ends. The core library only reports (tracing events, progress, errors); this crate
//! draws progress bars, writes the log files, turns signals into stop requests, prints the
//! commands' results (`report`), and decides the exit status, once, in [`run_main`].

mod logging;
mod progress_bars;
pub mod report;
mod signals;

use std::process::ExitCode;

use imgtype_base::{StopReason, Stopped};

pub use logging::{attach_run_logs, init_logging};
pub use signals::stop_on_signals;

/// Exit status of a run that was interrupted (SIGINT, SIGTERM), as a shell reports Ctrl-C.
pub const EXIT_INTERRUPTED: u8 = 130;
/// Exit status of a command line that cannot run (as clap's own usage errors).
pub const EXIT_USAGE: u8 = 2;

/// How a command's work ended when it did not fail.
#[derive(Debug)]
pub enum Ending {
    Done,
    /// Stopped before its end, resumably: on request (`--stop-after`, exit 0) or by a signal
    /// (exit 130).
    Stopped(Stopped),
}

/// A command line that parses but cannot run (`--member` without a sweep, a run folder
/// where a cross-validation folder is needed): exit status 2, as clap's own usage errors.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// A [`UsageError`] as the `anyhow::Error` a binary's `run` returns.
pub fn usage_error(message: impl Into<String>) -> anyhow::Error {
    UsageError(message.into()).into()
}

/// Runs a binary's work and decides its exit status, the one place that does: 0 done (or
/// stopped on request), 1 failed, 2 usage ([`UsageError`]; clap's own exit 2 before this),
/// 130 interrupted. An error is one `error: <message with its causes>` line on stderr (and in
/// the run's log files); a stop is one line on stderr saying where and how to go on.
pub fn run_main(body: impl FnOnce() -> anyhow::Result<Ending>) -> ExitCode {
    let ending = body();
    progress_bars::clear();
    match ending {
        Ok(Ending::Done) => ExitCode::SUCCESS,
        Ok(Ending::Stopped(stopped)) => {
            eprintln!("{stopped}");
            match stopped.reason {
                StopReason::Interrupted => ExitCode::from(EXIT_INTERRUPTED),
                StopReason::StopAfter => ExitCode::SUCCESS,
            }
        }
        Err(error) if error.downcast_ref::<UsageError>().is_some() => {
            eprintln!("error: {error:#}\n\nFor more information, try '--help'.");
            ExitCode::from(EXIT_USAGE)
        }
        Err(error) => {
            logging::record_fatal(&format!("{error:#}"));
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
