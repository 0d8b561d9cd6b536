//! What the binaries share: one clear error message and a non-zero exit.

/// Runs `body`; on error prints `error: <message with its causes>` on stderr and exits 1.
pub fn run_main(body: impl FnOnce() -> anyhow::Result<()>) {
    if let Err(error) = body() {
        crate::logging::multi_progress().clear().ok();
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}
