//! libtorch's compute threads, given up to the cores other processes leave free.
//!
//! libtorch's OpenMP threads spin after each parallel op, waiting for the next one. Alone on
//! the machine that is what makes small ops fast; beside another job it is ruinous: each
//! job's spinning threads hold the cores the other's need (two training jobs on 2 cores, each
//! with 2 threads: 13.7 + 13.7 images/s against 191 alone). `OMP_WAIT_POLICY=PASSIVE` fixes
//! the pair but costs a job alone 43% here, and libgomp reads it before `main` runs. So the
//! work loops call [`share_cores`] between steps: about once a second it measures how busy the
//! process's CPUs were with other processes' work (`/proc/stat` less `/proc/self/stat`) and
//! sets the threads to the cores left, at least one; with no one else there, all of them.
//! Two jobs on 2 cores then run one thread each, and together do more than one alone.
//!
//! A thread count changes the order of libtorch's sums, so a run whose threads changed midway
//! is not bit for bit the run that kept them: `system.num_threads` ([`pin`]) or an explicit
//! `OMP_NUM_THREADS` fixes the count, and training is then repeatable whatever else runs.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often the other processes' load is measured.
const INTERVAL: Duration = Duration::from_secs(1);

struct Governor {
    /// The thread count with the machine to itself (libtorch's own choice at the first call).
    allowed: usize,
    cpus: Vec<usize>,
    last: Option<Sample>,
}

/// The thread count the last measurement chose (or [`pin`] fixed); 0 before the first.
static TARGET: AtomicUsize = AtomicUsize::new(0);
static PINNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Fixes libtorch's compute threads at `threads` for the rest of the process (every thread
/// that calls [`share_cores`] takes it): no measuring, numbers that repeat.
pub fn pin(threads: usize) {
    let threads = threads.max(1);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads > cores {
        tracing::warn!(
            "system.num_threads is {threads}, more than the {cores} cores here: the threads will wait on each other"
        );
    }
    PINNED.store(true, Ordering::Relaxed);
    TARGET.store(threads, Ordering::Relaxed);
    tch::set_num_threads(threads as i32);
    APPLIED.set(threads);
}

/// `system.num_threads` of a run's config: fixed where it says a number, shared by
/// measurement again where it says null (a sweep's experiments may differ).
pub fn apply_config(system: &imgtype_base::config::SystemConfig) {
    match system.num_threads {
        Some(threads) => pin(threads),
        None => PINNED.store(false, Ordering::Relaxed),
    }
}

thread_local! {
    /// What this thread last set: OpenMP's thread count is a setting of each calling thread.
    static APPLIED: Cell<usize> = const { Cell::new(0) };
}

#[derive(Clone, Copy)]
struct Sample {
    at: Instant,
    /// Clock ticks of the process's CPUs: busy and in all.
    busy: u64,
    total: u64,
    /// Clock ticks this process ran.
    own: u64,
}

static GOVERNOR: Mutex<Option<Governor>> = Mutex::new(None);

/// Gives libtorch's threads of the calling thread as many cores as other processes leave
/// free, measured over the last second; cheap between measurements (a clock read). Call it
/// between steps of work on the thread that runs them.
pub fn share_cores() {
    if std::env::var_os("OMP_NUM_THREADS").is_some() {
        return;
    }
    if !PINNED.load(Ordering::Relaxed) {
        measure_if_due();
    }
    let target = TARGET.load(Ordering::Relaxed);
    if target > 0 && APPLIED.get() != target {
        tch::set_num_threads(target as i32);
        APPLIED.set(target);
    }
}

/// Measures the other processes' load once [`INTERVAL`] has passed, and sets [`TARGET`].
fn measure_if_due() {
    // One thread measures; the others go on with the last target.
    let Ok(mut governor) = GOVERNOR.try_lock() else { return };
    let governor = governor.get_or_insert_with(|| {
        let allowed = usize::try_from(tch::get_num_threads()).unwrap_or(1).max(1);
        Governor { allowed, cpus: allowed_cpus(), last: None }
    });
    let now = Instant::now();
    if governor.last.is_some_and(|last| now.duration_since(last.at) < INTERVAL) {
        return;
    }
    let Some(sample) = sample(&governor.cpus, now) else { return };
    let Some(last) = governor.last.replace(sample) else { return };
    let Some(others) = others_busy_cores(&last, &sample, governor.cpus.len()) else { return };
    let threads = threads_for(governor.allowed, others);
    let before = TARGET.swap(threads, Ordering::Relaxed);
    if threads != before && before != 0 {
        tracing::debug!(
            "other processes keep {others:.1} of {} cores busy: {threads} compute thread(s)",
            governor.cpus.len()
        );
    }
}

/// The thread count for `others` cores kept busy by other processes: the cores left, at
/// least one, at most `allowed`.
fn threads_for(allowed: usize, others: f64) -> usize {
    allowed.saturating_sub(others.round().max(0.0) as usize).clamp(1, allowed)
}

fn others_busy_cores(last: &Sample, now: &Sample, cpus: usize) -> Option<f64> {
    let total = now.total.checked_sub(last.total)?;
    if total == 0 {
        return None;
    }
    let busy = now.busy.saturating_sub(last.busy);
    let own = now.own.saturating_sub(last.own);
    Some(busy.saturating_sub(own) as f64 / total as f64 * cpus as f64)
}

/// The CPUs this process may run on (its affinity mask), or every CPU `/proc/stat` lists.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t filled by sched_getaffinity for this process.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
            return (0..libc::CPU_SETSIZE as usize).filter(|&cpu| libc::CPU_ISSET(cpu, &set)).collect();
        }
    }
    Vec::new()
}

fn sample(cpus: &[usize], at: Instant) -> Option<Sample> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let (busy, total) = cpu_ticks(&stat, cpus)?;
    let own = own_ticks(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
    Some(Sample { at, busy, total, own })
}

/// Busy and total clock ticks of `cpus` (all CPUs when empty) from `/proc/stat`'s `cpuN`
/// lines: user nice system idle iowait irq softirq steal (steal counts as busy: another
/// guest had the core).
fn cpu_ticks(stat: &str, cpus: &[usize]) -> Option<(u64, u64)> {
    let (mut busy, mut total, mut seen) = (0u64, 0u64, false);
    for line in stat.lines() {
        // `cpuN` lines only: the first line, `cpu `, sums them all.
        let Some(rest) = line.strip_prefix("cpu").filter(|rest| rest.starts_with(|c: char| c.is_ascii_digit())) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let Some(Ok(cpu)) = fields.next().map(str::parse::<usize>) else { continue };
        if !cpus.is_empty() && !cpus.contains(&cpu) {
            continue;
        }
        let ticks: Vec<u64> = fields.take(8).filter_map(|f| f.parse().ok()).collect();
        if ticks.len() < 5 {
            return None;
        }
        let idle = ticks[3] + ticks[4];
        let all: u64 = ticks.iter().sum();
        busy += all - idle;
        total += all;
        seen = true;
    }
    seen.then_some((busy, total))
}

/// This process's user + system clock ticks, from `/proc/self/stat` (fields 14 and 15; the
/// command name, field 2, may hold spaces and parentheses, so fields count from its end).
fn own_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_follow_the_cores_others_leave() {
        assert_eq!(threads_for(2, 0.0), 2);
        assert_eq!(threads_for(2, 0.4), 2);
        assert_eq!(threads_for(2, 1.1), 1);
        assert_eq!(threads_for(2, 2.0), 1, "never below one");
        assert_eq!(threads_for(16, 6.6), 9);
        assert_eq!(threads_for(4, -0.2), 4);
    }

    #[test]
    fn proc_files_are_read_as_the_kernel_writes_them() {
        let stat = "cpu  10 0 10 80 0 0 0 0 0 0\ncpu0 5 0 5 40 0 0 0 0 0 0\ncpu1 5 0 5 30 10 0 0 0 0 0\nintr 1\n";
        assert_eq!(cpu_ticks(stat, &[]), Some((20, 100)));
        assert_eq!(cpu_ticks(stat, &[1]), Some((10, 50)));
        let own = "4242 (a (b) c) R 1 2 3 4 5 6 7 8 9 10 120 30 0 0 20 0 3 0 100 0 0";
        assert_eq!(own_ticks(own), Some(150));
        let last = Sample { at: Instant::now(), busy: 100, total: 1000, own: 50 };
        let now = Sample { at: Instant::now(), busy: 600, total: 1500, own: 300 };
        // 500 busy ticks of 500 on 2 CPUs, 250 of them ours: the others kept one core busy.
        assert_eq!(others_busy_cores(&last, &now, 2), Some(1.0));
        assert!(sample(&allowed_cpus(), Instant::now()).is_some(), "this machine's /proc reads");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

            /// Whatever the proc files hold, an answer or none; never a panic.
            #[test]
            fn any_proc_text_is_read_without_panicking(text in "(cpu[0-9 ]{0,4}[0-9 a-z()]{0,40}\n){0,5}", cpus in proptest::collection::vec(0usize..8, 0..3)) {
                let _ = cpu_ticks(&text, &cpus);
                let _ = own_ticks(&text);
            }
        }
    }
}
