//! Progress for long work: an indicatif bar when stderr is a terminal, otherwise a plain
//! log line every `log_every` steps (and at the end), so `nohup … > log.log` reads well.

use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    label: String,
    total: u64,
    done: u64,
    log_every: u64,
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn new(label: impl Into<String>, total: u64, log_every: u64) -> Self {
        let label = label.into();
        let bar = crate::logging::stderr_is_terminal().then(|| {
            let bar = crate::logging::multi_progress().add(ProgressBar::new(total));
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>12} [{bar:30}] {pos}/{len} {elapsed_precise}<{eta_precise} {msg}",
                )
                .expect("progress template")
                .progress_chars("=> "),
            );
            bar.set_prefix(label.clone());
            bar
        });
        Self { label, total, done: 0, log_every: log_every.max(1), bar }
    }

    /// Advances by `n` items; `message` describes the state so far (loss, accuracy, …).
    pub fn advance(&mut self, n: u64, message: &str) {
        self.done += n;
        match &self.bar {
            Some(bar) => {
                bar.set_position(self.done);
                bar.set_message(message.to_string());
            }
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
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
            crate::logging::multi_progress().remove(&bar);
        }
    }
}
