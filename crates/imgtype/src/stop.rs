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

/// The error of work that stopped because its [`StopFlag`] was raised; the message says
/// what was kept and how to continue. Front ends exit with status 130 for it.
#[derive(Debug)]
pub struct Interrupted(pub String);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "interrupted" } else { &self.0 })
    }
}

impl std::error::Error for Interrupted {}
