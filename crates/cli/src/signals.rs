//! SIGINT / SIGTERM (Ctrl-C, `kill`, a scheduler's preemption): the first asks the work
//! to stop at its next safe point (training finishes the step and saves a checkpoint);
//! a second one exits at once.

use imgtype_base::StopFlag;

/// Installs the handler and returns the flag it raises; `what_happens` tells the user what
/// the first signal does ("finishing the current step, then saving a checkpoint").
pub fn stop_on_signals(what_happens: &'static str) -> StopFlag {
    let stop = StopFlag::default();
    let raised = stop.clone();
    let _ = ctrlc::set_handler(move || {
        if raised.is_raised() {
            eprintln!("second interrupt: exiting without a checkpoint");
            // Not `std::process::exit`: the C runtime's exit handlers would tear down
            // libtorch's statics under its still-running compute threads (a segfault, exit
            // 139, seen during a summary's embeddings). Every file is written atomically, so
            // leaving at once loses only the unfinished work.
            // SAFETY: `_exit` ends the process without running any handler; nothing here
            // relies on a destructor.
            unsafe { libc::_exit(crate::EXIT_INTERRUPTED.into()) };
        }
        raised.raise();
        eprintln!("interrupt received: {what_happens}");
    });
    stop
}
