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
/// run's log files) and exits 1, or 130 when the work was interrupted on request.
pub fn run_main(body: impl FnOnce() -> anyhow::Result<()>) {
    if let Err(error) = body() {
        progress_bars::clear();
        if let Some(interrupted) = error.downcast_ref::<imgtype::Interrupted>() {
            eprintln!("{interrupted}");
            std::process::exit(130);
        }
        logging::record_fatal(&format!("{error:#}"));
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}
