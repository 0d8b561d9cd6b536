//! The front-end side of the binaries: what a terminal user sees and how the process
//! ends. The core library only reports (tracing events, progress, errors); this crate
//! draws progress bars, writes the log files, turns signals into stop requests and
//! errors into one message and an exit status.

mod logging;
mod progress_bars;
mod signals;

pub use logging::{attach_run_logs, init_logging};
pub use signals::stop_on_signals;

/// Runs `body`; on error prints `error: <message with its causes>` on stderr (and into the
/// run's log files) and exits 1.
pub fn run_main(body: impl FnOnce() -> anyhow::Result<()>) {
    if let Err(error) = body() {
        progress_bars::clear();
        logging::record_fatal(&format!("{error:#}"));
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

/// The end of work that stopped before its end: exits 130 when it was interrupted on
/// request (Ctrl-C, SIGTERM); a stop that was asked for (`--stop-after`) returns.
pub fn exit_if_interrupted(stopped: &imgtype_base::Stopped) {
    if stopped.reason == imgtype_base::StopReason::Interrupted {
        progress_bars::clear();
        std::process::exit(130);
    }
}
