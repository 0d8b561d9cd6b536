//! Forking while predicting. A Python server forks its workers after a warm-up call
//! (gunicorn `--preload`), `multiprocessing` forks its pool; the child has only the thread
//! that called `fork`. A lock another thread held at that instant stays locked in the child
//! forever, and the libraries' own thread pools (OpenMP, OpenVINO's) are caught in the middle
//! of their work. So the work that holds such locks (a forward pass, handing a call to the
//! forward-pass thread) runs inside a [`Section`], and a `pthread_atfork` handler makes `fork`
//! wait until no section is open (at most [`FORK_WAIT`]), holding new ones back until the
//! fork is done: the child starts with every such lock free and the pools idle. The child
//! also starts with its own, empty, budget of decoded pixels.
//!
//! Only atomics are shared with the handlers: they are what a child can trust.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, Once};
use std::time::{Duration, Instant};

/// How long `fork` waits for open sections (a forward pass in flight) to close.
pub const FORK_WAIT: Duration = Duration::from_secs(10);
/// How long a forked child waits for a lock that may have been held at the fork.
const STALE_LOCK_WAIT: Duration = Duration::from_secs(30);

static OPEN: AtomicUsize = AtomicUsize::new(0);
static FORKING: AtomicBool = AtomicBool::new(false);
/// In a child forked while a section was open (the wait ran out): its locks may be held by
/// a thread that does not exist here.
static TAINTED: AtomicBool = AtomicBool::new(false);
static INSTALL: Once = Once::new();

/// An open section: `fork` waits until it is dropped.
#[must_use = "the section is open while it lives"]
pub struct Section(());

impl Drop for Section {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Opens a section, after any fork in progress.
pub fn enter() -> Section {
    INSTALL.call_once(install);
    loop {
        while FORKING.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_micros(200));
        }
        OPEN.fetch_add(1, Ordering::SeqCst);
        if !FORKING.load(Ordering::SeqCst) {
            return Section(());
        }
        OPEN.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Locks `mutex` (poisoning ignored: every user leaves its data whole). In a child forked
/// while the lock may have been held, it is waited for at most [`STALE_LOCK_WAIT`] and then
/// given up on with an error, instead of forever.
pub fn lock<'a, T>(mutex: &'a Mutex<T>, what: &str) -> Result<MutexGuard<'a, T>, String> {
    if !TAINTED.load(Ordering::Relaxed) {
        return Ok(mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
    }
    let started = Instant::now();
    loop {
        match mutex.try_lock() {
            Ok(guard) => return Ok(guard),
            Err(std::sync::TryLockError::Poisoned(poisoned)) => return Ok(poisoned.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) if started.elapsed() < STALE_LOCK_WAIT => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(std::sync::TryLockError::WouldBlock) => {
                return Err(format!(
                    "{what} was in use by another thread when this process was forked, and is still not \
                     free here; fork before the first prediction, or while none runs"
                ));
            }
        }
    }
}

fn install() {
    // SAFETY: registers three `extern "C"` functions without arguments, as pthread_atfork takes.
    unsafe {
        libc::pthread_atfork(Some(before_fork), Some(after_fork_in_parent), Some(after_fork_in_child));
    }
}

extern "C" fn before_fork() {
    FORKING.store(true, Ordering::SeqCst);
    let started = Instant::now();
    while OPEN.load(Ordering::SeqCst) > 0 && started.elapsed() < FORK_WAIT {
        std::thread::sleep(Duration::from_micros(200));
    }
}

extern "C" fn after_fork_in_parent() {
    FORKING.store(false, Ordering::SeqCst);
}

extern "C" fn after_fork_in_child() {
    if OPEN.swap(0, Ordering::SeqCst) > 0 {
        TAINTED.store(true, Ordering::SeqCst);
    }
    FORKING.store(false, Ordering::SeqCst);
    imgtype_images::decode::PixelPermit::reset_after_fork();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fork_waits_for_an_open_section_and_the_child_finds_its_locks_free() {
        let lock = std::sync::Arc::new(Mutex::new(0u32));
        let (held, release) = (lock.clone(), std::sync::Arc::new(std::sync::Barrier::new(2)));
        let entered = std::sync::Arc::new(std::sync::Barrier::new(2));
        let (release2, entered2) = (release.clone(), entered.clone());
        let worker = std::thread::spawn(move || {
            let _section = enter();
            let mut guard = held.lock().unwrap();
            entered2.wait();
            std::thread::sleep(Duration::from_millis(300));
            *guard += 1;
            drop(guard);
            drop(_section);
            release2.wait();
        });
        entered.wait();
        // SAFETY: fork in a test; the child only tries a lock and exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let free = lock.try_lock().is_ok();
            unsafe { libc::_exit(if free { 0 } else { 3 }) };
        }
        release.wait();
        worker.join().unwrap();
        let mut status = 0;
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "the child found the lock held: {status}");
        assert_eq!(*lock.lock().unwrap(), 1, "the section finished its work before the fork");
    }
}
