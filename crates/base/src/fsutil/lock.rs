//! The lock a process holds on a folder it works in.

use std::io::{Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::plain_io_error;
use super::read::{read_at_most, ByteCap};

/// The file in a folder whose lock says a process works in it.
pub const LOCK_FILE: &str = ".imgtype.lock";

/// An exclusive lock on a folder (`flock` on its [`LOCK_FILE`]), held while one process
/// works in it: a run folder while it trains, a sweep experiment's or cross-validation fold's
/// folder while its run is set up and trained. The kernel releases it when the process ends,
/// however it ends; a copied folder carries no lock.
#[derive(Debug)]
pub struct FolderLock {
    _file: std::fs::File,
}

impl FolderLock {
    /// Takes the lock on `dir` (created if missing), or fails at once naming the process that
    /// holds it; `what` says what the caller was about to do there.
    pub fn acquire(dir: &Path, what: &str) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create folder {}", dir.display()))?;
        Ok(Self { _file: lock_by_name(&dir.join(LOCK_FILE), dir, what)? })
    }
}

/// An exclusive lock on one output file while a process writes it (`flock` on a hidden
/// `.<name>.lock` beside it, removed when the lock is dropped): the same `test --shard` started
/// twice (a job retried while the first still runs) stops at once instead of both writing it.
#[derive(Debug)]
pub struct OutputLock {
    file: std::fs::File,
    path: PathBuf,
}

impl OutputLock {
    pub fn acquire(output: &Path, what: &str) -> Result<Self> {
        let name = output.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let path = output.with_file_name(format!(".{name}.lock"));
        if let Some(folder) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(folder).with_context(|| format!("cannot create folder {}", folder.display()))?;
        }
        let lock = Self { file: lock_by_name(&path, output, what)?, path };
        remove_interrupted_writes_of(output);
        Ok(lock)
    }
}

/// [`OutputLock`]s on the files `names` in `dir`, which one command writes as a set (a
/// summary, a split): a second one stops at once, and a killed one's temp files are removed.
pub fn lock_outputs(dir: &Path, names: &[&str], what: &str) -> Result<Vec<OutputLock>> {
    names.iter().map(|name| OutputLock::acquire(&dir.join(name), what)).collect()
}

/// Removes the temp files an interrupted write of `path` left beside it; only for the holder of
/// `path`'s [`OutputLock`], the one process that writes it.
fn remove_interrupted_writes_of(path: &Path) {
    let prefix = super::temp_prefix(path);
    let Ok(entries) = std::fs::read_dir(super::parent_of(path)) else { return };
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let rest = file_name.strip_prefix(&prefix);
        let ours =
            rest.is_some_and(|r| r.len() == super::TEMP_RANDOM_CHARS && r.chars().all(|c| c.is_ascii_alphanumeric()));
        if ours && entry.file_type().is_ok_and(|t| t.is_file()) && std::fs::remove_file(entry.path()).is_ok() {
            tracing::info!("removed {}, left by an interrupted write of {}", entry.path().display(), path.display());
        }
    }
}

/// Locks the file `path` leads to once it is locked: a lock file removed (by the holder that
/// just finished, or as another user's stale one) between our open and our lock is not the
/// one that counts, so the one the name now leads to is taken. A lock file that names no
/// holder yet, or a process of this machine that has ended, is being taken over by its new
/// holder (between its lock and its name) or replaced: it is looked at again before the
/// holder is named.
fn lock_by_name(path: &Path, subject: &Path, what: &str) -> Result<std::fs::File> {
    let mut taken_over = None;
    for _ in 0..20 {
        match lock_file(path)? {
            Attempt::Locked(file) if same_file(&file, path) => return Ok(file),
            Attempt::Locked(_) => {}
            Attempt::Held(holder) if holder.is_empty() || names_an_ended_process(&holder) => {
                taken_over = Some(holder);
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Attempt::Held(holder) => return Err(in_use(&holder, subject, what)),
        }
    }
    match taken_over {
        Some(holder) => Err(in_use(&holder, subject, what)),
        None => anyhow::bail!("cannot lock {}: its lock file keeps changing", subject.display()),
    }
}

/// What one try at a lock file found.
enum Attempt {
    Locked(std::fs::File),
    /// Held by another process; what its lock file says of it.
    Held(String),
}

/// Whether `holder` (a lock file's text) names a process of this machine that has ended.
fn names_an_ended_process(holder: &str) -> bool {
    let Some((pid, rest)) = holder.strip_prefix("process ").and_then(|t| t.split_once(" on ")) else { return false };
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let on_this_machine = rest.split_once(" since ").is_some_and(|(h, _)| h == host.trim());
    on_this_machine && pid.parse::<u32>().is_ok_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        if same_file(&self.file, &self.path) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn same_file(file: &std::fs::File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// Empty (just made, or left by a kill before it was written) or naming a holder as a lock does.
fn holds_a_holder(file: &std::fs::File) -> bool {
    read_at_most(file, "the lock file", ByteCap { max_bytes: 4096, name: "4 KiB" })
        .is_ok_and(|bytes| bytes.is_empty() || bytes.starts_with(b"process "))
}

/// Opens and locks the lock file `path`, or says who holds it.
fn lock_file(path: &Path) -> Result<Attempt> {
    use std::os::unix::fs::OpenOptionsExt;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        anyhow::bail!("the lock file {} is a symbolic link; remove it (a lock file is never a link)", path.display());
    }
    let open = |write: bool| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(write)
            .create(write)
            .truncate(false)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| anyhow::anyhow!("cannot open the lock file {}: {}", path.display(), plain_io_error(&e)))
    };
    // Held until ours is made: see `replace_others_stale_lock`.
    let mut _others = None;
    let mut file = match open(true) {
        Ok(file) => file,
        Err(error) => match open(false) {
            // Readable but not writable: another user's lock file.
            Ok(others) if others.metadata().is_ok_and(|m| m.is_file()) => {
                if let Some(holder) = replace_others_stale_lock(&others, path)? {
                    return Ok(Attempt::Held(holder));
                }
                _others = Some(others);
                open(true)?
            }
            _ => return Err(error),
        },
    };
    match file.metadata() {
        Ok(meta) if !meta.is_file() => anyhow::bail!("the lock file {} is not a regular file", path.display()),
        // Another name for the same file (a hard link): writing who holds the lock would
        // overwrite that file.
        Ok(meta) if std::os::unix::fs::MetadataExt::nlink(&meta) > 1 => anyhow::bail!(
            "the lock file {} has another name (a hard link to another file); remove it (a lock file is never a link)",
            path.display()
        ),
        Ok(_) => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    match file.try_lock() {
        // A file of that name that a lock never wrote (a user's notes) is not ours to empty.
        Ok(()) if !holds_a_holder(&file) => {
            anyhow::bail!("{} is there and is not a lock file of this tool; move it away", path.display())
        }
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Ok(Attempt::Held(holder_of(&file))),
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()));
        }
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let holder = format!(
        "process {} on {} since {}\n",
        std::process::id(),
        host.trim(),
        chrono::Local::now().format("%Y-%m-%d %H:%M:%S")
    );
    // Who holds it, for the message another process gives; the lock is what counts.
    let _ = file.rewind().and_then(|()| file.set_len(0)).and_then(|()| file.write_all(holder.as_bytes()));
    Ok(Attempt::Locked(file))
}

/// What the lock file `file` says of its holder.
fn holder_of(file: &std::fs::File) -> String {
    read_at_most(file, "the lock file", ByteCap { max_bytes: 4096, name: "4 KiB" })
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_string())
        .unwrap_or_default()
}

fn in_use(holder: &str, subject: &Path, what: &str) -> anyhow::Error {
    let holder = match holder {
        "" => "another process".to_string(),
        named if names_an_ended_process(named) => format!("another process (taking over from {named}, which ended)"),
        named => named.to_string(),
    };
    anyhow::anyhow!(
        "{} is in use by {holder}; not {what} there (nothing was changed): wait for it to end, or stop it first",
        subject.display()
    )
}

/// A lock file we may read but not write: another user's. Held by a live process, what it says
/// of that process is returned; otherwise it was left by one that ended, and is removed (the folder is ours to
/// write in) while `others` holds its lock, so that a process which opened it before and locks
/// it after us finds that its name now leads to ours (`lock_by_name`), and tries again.
fn replace_others_stale_lock(others: &std::fs::File, path: &Path) -> Result<Option<String>> {
    match others.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Ok(Some(holder_of(others))),
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
    if !holds_a_holder(others) {
        anyhow::bail!("{} is there and is not a lock file of this tool; move it away", path.display());
    }
    std::fs::remove_file(path).map_err(|e| {
        anyhow::anyhow!(
            "the lock file {} is another user's, left by a process that ended, and cannot be removed ({}): remove it",
            path.display(),
            plain_io_error(&e)
        )
    })?;
    tracing::info!("removed {}: another user's lock file, left by a process that ended", path.display());
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::super::{TEMP_NAME_CAP, TEMP_PREFIX, TEMP_RANDOM_CHARS};
    use super::*;

    /// An interrupted write of the locked output leaves a temp file named after it: the next
    /// holder of the lock removes it, and nothing of another output's (a longer name sharing
    /// the beginning, another file's temp files).
    #[test]
    fn the_lock_holder_removes_its_outputs_interrupted_writes() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("out.csv");
        let failed = super::super::write_atomic_with(&output, |w| {
            w.write_all(b"half")?;
            anyhow::bail!("killed")
        });
        assert!(failed.is_err());
        let left = ".tmp-out.csv-a1B2c3";
        let others = [".tmp-out.csv-b-a1B2c3", ".tmp-other.csv-a1B2c3", ".tmp-out.csv-a1B2c", "notes.txt"];
        for name in others.iter().chain([&left]) {
            std::fs::write(dir.path().join(name), "x").unwrap();
        }
        let lock = OutputLock::acquire(&output, "testing").unwrap();
        let mut names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        names.sort();
        let mut expected: Vec<String> = others.iter().map(|n| n.to_string()).chain([".out.csv.lock".into()]).collect();
        expected.sort();
        assert_eq!(names, expected);
        drop(lock);
        // A write's own temp file is named after its target.
        super::super::write_atomic_with(&output, |w| {
            let names = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name());
            let temp: Vec<String> = names
                .map(|n| n.to_string_lossy().into())
                .filter(|n: &String| n.starts_with(".tmp-out.csv-") && n.len() == 19)
                .collect();
            assert_eq!(temp.len(), 1, "{temp:?}");
            w.write_all(b"whole").map_err(Into::into)
        })
        .unwrap();
        assert_eq!(std::fs::read(&output).unwrap(), b"whole");
    }

    /// Long names are cut in temp names, tagged with the whole name's fingerprint: the holder
    /// of a long output's lock removes its interrupted writes, not those of another long output
    /// whose name begins alike.
    #[test]
    fn the_lock_holder_of_a_long_named_output_removes_only_its_own_interrupted_writes() {
        let dir = tempfile::tempdir().unwrap();
        let (long, twin) = (format!("{}-a.csv", "x".repeat(190)), format!("{}-b.csv", "x".repeat(190)));
        // What a killed write of each leaves.
        for name in [&long, &twin] {
            let temp = format!("{}a1B2c3", super::super::temp_prefix(&dir.path().join(name)));
            std::fs::write(dir.path().join(temp), "half").unwrap();
        }
        let temp_files = || -> Vec<String> {
            let names = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into());
            names.filter(|n: &String| n.starts_with(TEMP_PREFIX)).collect()
        };
        assert_eq!(temp_files().len(), 2, "{:?}", temp_files());
        assert!(temp_files().iter().all(|n| n.len() <= TEMP_PREFIX.len() + TEMP_NAME_CAP + 1 + TEMP_RANDOM_CHARS));
        let twins =
            temp_files().into_iter().filter(|n| n.starts_with(&super::super::temp_prefix(&dir.path().join(&twin))));
        let twins: Vec<String> = twins.collect();
        assert_eq!(twins.len(), 1);
        let _lock = OutputLock::acquire(&dir.path().join(&long), "testing").unwrap();
        assert_eq!(temp_files(), twins, "the long output's own temp file removed, its twin's kept");
    }

    /// A holder between taking the lock and writing its name leaves the name of a process that
    /// has ended in the lock file: that is looked at again, and the holder named once it has
    /// written its name, never the ended process as if it held the lock.
    #[test]
    fn a_lock_being_taken_over_names_its_new_holder_not_the_ended_one() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("out.csv");
        let lock_path = dir.path().join(".out.csv.lock");
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        let ended = format!("process 4999999 on {} since 2026-01-01 00:00:00\n", host.trim());
        std::fs::write(&lock_path, &ended).unwrap();
        let holder = std::fs::OpenOptions::new().read(true).write(true).open(&lock_path).unwrap();
        holder.try_lock().unwrap();
        let error = OutputLock::acquire(&output, "testing").unwrap_err().to_string();
        assert!(error.contains("in use by another process (taking over from process 4999999"), "{error}");
        let writer = std::thread::spawn({
            let mut holder = holder.try_clone().unwrap();
            move || {
                std::thread::sleep(std::time::Duration::from_millis(30));
                holder.set_len(0).unwrap();
                holder.write_all(b"process 1 on elsewhere since 2026-12-07 00:00:00\n").unwrap();
            }
        });
        let error = OutputLock::acquire(&output, "testing").unwrap_err().to_string();
        writer.join().unwrap();
        assert!(error.contains("in use by process 1 on elsewhere"), "{error}");
        drop(holder);
        drop(OutputLock::acquire(&output, "testing").unwrap());
    }
}
