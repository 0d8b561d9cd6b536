//! Progress of long work. The library reports it; a front end decides how it looks (the
//! binaries draw terminal bars through [`set_display`]). Without a display, progress is a
//! plain log line every `log_every` steps (and at the end), so `nohup … > log.log` reads well.

use std::sync::OnceLock;

/// How a front end shows progress.
pub trait ProgressDisplay: Send + Sync {
    fn start(&self, label: &str, total: u64) -> Box<dyn ProgressView>;
}

/// One task being shown.
pub trait ProgressView: Send {
    fn update(&mut self, done: u64, message: &str);
    fn finish(self: Box<Self>);
}

static DISPLAY: OnceLock<Box<dyn ProgressDisplay>> = OnceLock::new();

/// Shows all later progress through `display`; only the first call takes effect.
pub fn set_display(display: Box<dyn ProgressDisplay>) {
    let _ = DISPLAY.set(display);
}

pub struct Progress {
    label: String,
    total: u64,
    done: u64,
    log_every: u64,
    view: Option<Box<dyn ProgressView>>,
}

impl Progress {
    pub fn new(label: impl Into<String>, total: u64, log_every: u64) -> Self {
        let label = label.into();
        let view = DISPLAY.get().map(|display| display.start(&label, total));
        Self { label, total, done: 0, log_every: log_every.max(1), view }
    }

    /// Advances by `n` items; `message` describes the state so far (loss, accuracy, …).
    pub fn advance(&mut self, n: u64, message: &str) {
        self.done += n;
        match &mut self.view {
            Some(view) => view.update(self.done, message),
            None => {
                let step_before = (self.done - n) / self.log_every;
                if self.done / self.log_every != step_before || self.done == self.total {
                    let separator = if message.is_empty() { "" } else { " " };
                    tracing::info!("{} {}/{}{separator}{message}", self.label, self.done, self.total);
                }
            }
        }
    }

    pub fn finish(self) {
        if let Some(view) = self.view {
            view.finish();
        }
    }
}
