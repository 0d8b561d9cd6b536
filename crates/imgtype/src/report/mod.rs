//! PNG pictures, rendered in memory with plotters and an embedded DejaVu font and written
//! atomically: chart building blocks, pictures of an evaluation, and contact sheets of
//! wrong predictions. A picture can never fail a run: [`draw`] turns any error (or panic)
//! into a warning.

pub mod chart;
pub mod contact_sheet;
pub mod evaluation;

use anyhow::Result;

/// Draws one picture; failures become a warning naming it.
pub fn draw(name: &str, job: impl FnOnce() -> Result<()>) {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("could not draw {name}: {e:#}"),
        Err(_) => tracing::warn!("could not draw {name}: the plotting library panicked"),
    }
}
