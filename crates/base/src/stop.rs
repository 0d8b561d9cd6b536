//! A request from outside (Ctrl-C, SIGTERM, a caller's own shutdown) to stop long work at
//! its next safe point; training then saves a checkpoint it can resume from.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Cheap to clone; every clone sees the same flag.
#[derive(Debug, Clone, Default)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    pub fn raise(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_raised(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Why long work ended before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Its [`StopFlag`] was raised (Ctrl-C, SIGTERM, a caller's shutdown): front ends exit 130.
    Interrupted,
    /// It did the part it was asked for (`train --stop-after N`): a normal end.
    StopAfter,
}

/// Work that stopped at a safe point before its end: why, where what it kept lies, and one
/// sentence on what was kept and how to go on.
#[derive(Debug, Clone)]
pub struct Stopped {
    pub reason: StopReason,
    /// The run, sweep or output file that holds the work done so far, if any.
    pub kept_in: Option<std::path::PathBuf>,
    pub message: String,
}

impl Stopped {
    pub fn interrupted(kept_in: Option<std::path::PathBuf>, message: impl Into<String>) -> Self {
        Self { reason: StopReason::Interrupted, kept_in, message: message.into() }
    }
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The end of long work that can be stopped (training, a sweep, a `test` run): its result,
/// or where it stopped. The one way every stoppable entry point says so.
#[derive(Debug)]
pub enum Outcome<T> {
    Finished(T),
    Stopped(Stopped),
}
