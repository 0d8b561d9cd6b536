//! Progress bars on a terminal (indicatif). Log lines print above the bars; when stderr
//! is not a terminal no bars are drawn and the library's plain progress lines are used.

use std::io::IsTerminal;
use std::sync::OnceLock;

use imgtype_base::progress::{ProgressDisplay, ProgressView};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

static BARS: OnceLock<MultiProgress> = OnceLock::new();

pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// The bars' host, once bars are installed.
pub fn bars() -> Option<&'static MultiProgress> {
    BARS.get()
}

/// Draws the library's progress as bars from now on, when stderr is a terminal.
pub fn install() {
    if stderr_is_terminal() {
        imgtype_base::progress::set_display(Box::new(TerminalBars(BARS.get_or_init(MultiProgress::new))));
    }
}

/// Removes any bar still drawn (before a final error message).
pub fn clear() {
    if let Some(bars) = BARS.get() {
        bars.clear().ok();
    }
}

struct TerminalBars(&'static MultiProgress);

impl ProgressDisplay for TerminalBars {
    fn start(&self, label: &str, total: u64) -> Box<dyn ProgressView> {
        let bar = self.0.add(ProgressBar::new(total));
        bar.set_style(
            ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {elapsed_precise}<{eta_precise} {msg}")
                .expect("progress template")
                .progress_chars("=> "),
        );
        bar.set_prefix(label.to_string());
        Box::new(TerminalBar { bar, host: self.0 })
    }
}

struct TerminalBar {
    bar: ProgressBar,
    host: &'static MultiProgress,
}

impl ProgressView for TerminalBar {
    fn update(&mut self, done: u64, message: &str) {
        self.bar.set_position(done);
        self.bar.set_message(message.to_string());
    }

    fn finish(self: Box<Self>) {
        self.bar.finish_and_clear();
        self.host.remove(&self.bar);
    }
}
