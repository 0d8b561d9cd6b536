//! Decoding overlapped with the model: a background thread prepares the next batch (reads
//! rows, decodes and resizes images) while this one runs the forward pass on the current
//! batch and writes its rows. One batch ahead at most, so memory stays flat.

use std::ops::ControlFlow;

use anyhow::Result;

/// Runs `produce` on a background thread, one item ahead of `consume` on this one, until
/// `consume` fails or breaks (a stop request), which this returns. `produce` gets a `send`
/// that returns false once the consumer has stopped, and should then return.
pub(super) fn prefetched<T: Send>(
    produce: impl FnOnce(&dyn Fn(T) -> bool) + Send,
    mut consume: impl FnMut(T) -> Result<ControlFlow<()>>,
) -> Result<ControlFlow<()>> {
    std::thread::scope(|scope| {
        let (sender, receiver) = std::sync::mpsc::sync_channel::<T>(1);
        scope.spawn(move || produce(&|item| sender.send(item).is_ok()));
        for item in receiver {
            if consume(item)?.is_break() {
                return Ok(ControlFlow::Break(()));
            }
        }
        Ok(ControlFlow::Continue(()))
    })
}
