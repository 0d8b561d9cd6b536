//! Files are written whole or not at all: into a temp file beside the target, flushed to
//! disk, then renamed. They get the permissions the umask gives a new file (0644 under
//! umask 022), so others on shared storage can read predictions, models and checkpoints.
//! Files we did not write are read through one opener with caps (`read`); a process working
//! in a folder holds its lock (`lock`).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

mod lock;
mod output;
mod read;

pub use lock::{lock_outputs, FolderLock, OutputLock, LOCK_FILE};
pub use output::{check_output_file, check_output_target, check_replaceable, Replaceable, StagedFiles};
pub use read::*;

pub(crate) fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes).map_err(Into::into))
}

/// Streams into a temp file beside `path` and renames it into place once `fill` succeeds;
/// on failure the temp file is removed and `path` is left as it was.
pub fn write_atomic_with<F>(path: &Path, fill: F) -> Result<()>
where
    F: FnOnce(&mut dyn Write) -> Result<()>,
{
    let dir = parent_of(path);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create folder {}", dir.display()))?;
    let mut temp = tempfile::Builder::new()
        .prefix(&temp_prefix(path))
        .rand_bytes(TEMP_RANDOM_CHARS)
        .permissions(new_file_permissions())
        .tempfile_in(&dir)
        .with_context(|| format!("cannot create a temp file in {}", dir.display()))?;
    {
        let mut writer = std::io::BufWriter::new(temp.as_file_mut());
        fill(&mut writer).with_context(|| format!("while writing {}", path.display()))?;
        writer.flush().with_context(|| format!("while writing {}", path.display()))?;
    }
    sync_to_disk(temp.as_file(), path)?;
    // The persist error repeats its I/O error as its source: the I/O error alone, said once.
    temp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot move the finished file to {}", path.display()))?;
    // The rename itself is only durable once the folder is flushed; a failure here is rare
    // and leaves the file in place.
    if let Err(e) = std::fs::File::open(&dir).and_then(|d| d.sync_all()) {
        tracing::warn!("cannot flush folder {} to disk: {e}", dir.display());
    }
    Ok(())
}

/// Flushes `file` to disk. A filesystem that does not do fsync at all (some network and FUSE
/// mounts answer EINVAL or "unsupported") gets a warning; any other failure is an error.
pub fn sync_to_disk(file: &std::fs::File, path: &Path) -> Result<()> {
    match file.sync_all() {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::Unsupported || e.raw_os_error() == Some(22) => {
            tracing::warn!("{}: the filesystem does not flush to disk ({e}); written without fsync", path.display());
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("cannot flush {} to disk", path.display())),
    }
}

/// Temp files of unfinished writes start with this (`remove_stale_temp_files` finds them).
pub const TEMP_PREFIX: &str = ".tmp-";

pub(crate) const TEMP_RANDOM_CHARS: usize = 6;

/// Longest target name a temp file's name repeats (a file name has at most 255 bytes).
pub(crate) const TEMP_NAME_CAP: usize = 120;

/// `.tmp-<name>-` for a target named `name`, so that the one process that writes a file
/// (holding its [`OutputLock`]) can tell its own earlier, interrupted temp files. A long name
/// is cut and tagged with its fingerprint (`.tmp-<start>~<16 hex>-`): its own still.
pub(crate) fn temp_prefix(path: &Path) -> String {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if name.len() <= TEMP_NAME_CAP {
        return format!("{TEMP_PREFIX}{name}-");
    }
    let kept = TEMP_NAME_CAP - 17;
    let cut = name.char_indices().map(|(i, c)| i + c.len_utf8()).take_while(|&end| end <= kept).last();
    let tag = fingerprint([("temp file of", name.as_bytes())]);
    format!("{TEMP_PREFIX}{}~{tag}-", &name[..cut.unwrap_or(0)])
}

/// Read-write for everyone, less what the umask takes away, as `File::create` gives.
fn new_file_permissions() -> std::fs::Permissions {
    use std::os::unix::fs::PermissionsExt;
    std::fs::Permissions::from_mode(0o666)
}

/// Removes temp files that interrupted writes left below `dir` (a process killed while
/// writing, a second Ctrl-C during a checkpoint save); returns how many.
pub fn remove_stale_temp_files(dir: &Path) -> usize {
    let mut removed = 0;
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    for entry in entries.flatten() {
        let path = entry.path();
        // file_type() does not follow symlinks: nothing outside `dir` is touched.
        let Ok(kind) = entry.file_type() else { continue };
        if kind.is_dir() {
            removed += remove_stale_temp_files(&path);
        } else if kind.is_file()
            && entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX)
            && std::fs::remove_file(&path).is_ok()
        {
            tracing::info!("removed {}, left by an interrupted write", path.display());
            removed += 1;
        }
    }
    removed
}

/// Before a command starts a new folder of its own (a sweep's, a cross-validation's) in `dir`:
/// the folder is missing, empty, or holds only what an unfinished start of the same command
/// left (`leftover` says which names); anything else is a user's and would be overwritten
/// or mixed in, so it is refused, naming one such entry.
pub fn check_new_folder(dir: &Path, what: &str, leftover: impl Fn(&str) -> bool) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !leftover(&name) && !name.starts_with(TEMP_PREFIX) && name != LOCK_FILE {
            anyhow::bail!(
                "{} already holds {name}, and is not {what}: give it a folder of its own (a new or empty one)",
                dir.display()
            );
        }
    }
    Ok(())
}

/// SipHash (fixed keys) of named byte strings, as 16 hex digits: whether any of them changed
/// since (not a defence against a forger; a plan records what it was made from).
pub fn fingerprint<'a>(parts: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> String {
    use std::hash::{Hash, Hasher};
    #[allow(deprecated)]
    let mut hasher = std::hash::SipHasher::new();
    parts.into_iter().for_each(|part| part.hash(&mut hasher));
    format!("{:016x}", hasher.finish())
}

/// An I/O error without the path std sometimes appends, so messages name only the label.
pub fn plain_io_error(error: &std::io::Error) -> String {
    match error.raw_os_error() {
        Some(code) => std::io::Error::from_raw_os_error(code).to_string(),
        None => error.kind().to_string(),
    }
}

pub fn write_json_atomic<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value).context("cannot serialise JSON")?;
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

/// Writes CSV rows atomically under `header` (written even when there are no rows).
pub fn write_csv_atomic<R: serde::Serialize>(path: &Path, header: &[&str], rows: &[R]) -> Result<()> {
    write_atomic_with(path, |w| {
        let mut csv = csv::WriterBuilder::new().has_headers(false).from_writer(w);
        csv.write_record(header)?;
        for row in rows {
            csv.serialize(row)?;
        }
        csv.flush()?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn umask() -> u32 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("Umask:")).unwrap();
        u32::from_str_radix(line.split_whitespace().nth(1).unwrap(), 8).unwrap()
    }

    #[test]
    fn written_files_get_the_permissions_the_umask_gives() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        write_json_atomic(&path, &serde_json::json!({"a": 1})).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o666 & !umask(), "mode {mode:o}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temp file left");
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        write_atomic(&path, b"old").unwrap();
        let err = write_atomic_with(&path, |w| {
            w.write_all(b"half")?;
            anyhow::bail!("disk full")
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("disk full"));
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn outputs_that_would_replace_an_input_or_a_special_file_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.csv");
        std::fs::write(&input, "image_path\n").unwrap();
        assert!(check_output_file(Path::new("-"), &[]).unwrap_err().to_string().contains("not to standard output"));
        let new = dir.path().join("new.csv");
        assert_eq!(check_output_file(&new, &[&input]).unwrap(), new);
        let err = check_output_file(&input, &[&input]).unwrap_err().to_string();
        assert!(err.contains("is the input"), "{err}");
        std::fs::hard_link(&input, dir.path().join("hard.csv")).unwrap();
        assert!(check_output_file(&dir.path().join("hard.csv"), &[&input]).is_err());
        let err = check_output_file(dir.path(), &[]).unwrap_err().to_string();
        assert!(err.contains("is a folder"), "{err}");
        let err = check_output_file(Path::new("/dev/full"), &[]).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
        let old = dir.path().join("old.csv");
        std::fs::write(&old, "x").unwrap();
        let link = dir.path().join("link.csv");
        std::os::unix::fs::symlink(&old, &link).unwrap();
        assert_eq!(check_output_file(&link, &[&input]).unwrap(), old.canonicalize().unwrap());
        std::os::unix::fs::symlink(&input, dir.path().join("to_input.csv")).unwrap();
        assert!(check_output_file(&dir.path().join("to_input.csv"), &[&input]).is_err());
        std::os::unix::fs::symlink(dir.path().join("gone"), dir.path().join("dangling.csv")).unwrap();
        assert!(check_output_file(&dir.path().join("dangling.csv"), &[]).is_err());
    }

    #[test]
    fn a_folder_lock_is_held_once_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let first = FolderLock::acquire(dir.path(), "training").unwrap();
        let err = FolderLock::acquire(dir.path(), "resuming it").unwrap_err().to_string();
        assert!(err.contains(&format!("is in use by process {}", std::process::id())), "{err}");
        assert!(err.contains("not resuming it there (nothing was changed)"), "{err}");
        drop(first);
        let _again = FolderLock::acquire(dir.path(), "training").unwrap();
        // A link planted in place of the lock file is not followed.
        let other = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc/hostname", other.path().join(LOCK_FILE)).unwrap();
        assert!(FolderLock::acquire(other.path(), "training").is_err());
    }

    #[test]
    fn an_output_lock_is_held_once_and_its_file_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("out.shard-1-of-3.csv");
        let first = OutputLock::acquire(&output, "writing to it").unwrap();
        let lock_file = dir.path().join(".out.shard-1-of-3.csv.lock");
        assert!(lock_file.is_file());
        let err = OutputLock::acquire(&output, "writing to it").unwrap_err().to_string();
        assert!(
            err.contains("out.shard-1-of-3.csv is in use by process") && err.contains("not writing to it"),
            "{err}"
        );
        drop(first);
        assert!(!lock_file.exists(), "no lock file left beside the output");
        drop(OutputLock::acquire(&output, "writing to it").unwrap());
        // A lock file that is another name of a user's file is refused, the file untouched.
        std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
        std::fs::hard_link(dir.path().join("notes.txt"), &lock_file).unwrap();
        assert!(OutputLock::acquire(&output, "writing to it").unwrap_err().to_string().contains("hard link"));
        assert_eq!(std::fs::read_to_string(dir.path().join("notes.txt")).unwrap(), "mine");
        std::fs::remove_file(&lock_file).unwrap();
        // A user's file of the lock's name is not emptied; a stale lock (a kill) is taken over.
        std::fs::write(&lock_file, "my notes").unwrap();
        assert!(OutputLock::acquire(&output, "writing to it").unwrap_err().to_string().contains("not a lock file"));
        assert_eq!(std::fs::read_to_string(&lock_file).unwrap(), "my notes");
        std::fs::write(&lock_file, "process 1 on elsewhere since 2026-01-01 00:00:00\n").unwrap();
        let taken = OutputLock::acquire(&output, "writing to it").unwrap();
        let holder = std::fs::read_to_string(&lock_file).unwrap();
        assert!(holder.starts_with(&format!("process {} on", std::process::id())), "{holder:?}");
        drop(taken);
        assert!(check_output_file(&dir.path().join("out.csv/"), &[])
            .unwrap_err()
            .to_string()
            .contains("names a folder"));
        assert!(check_output_file(&dir.path().join("new/.."), &[]).is_err());
        // A missing folder is made, as the output's would be.
        drop(OutputLock::acquire(&dir.path().join("new/out.csv"), "writing to it").unwrap());
    }

    #[test]
    fn readers_refuse_devices_fifos_and_oversized_files_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.json");
        let name = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        for path in [fifo.as_path(), Path::new("/dev/zero"), dir.path()] {
            let err = format!("{:#}", read_json::<serde_json::Value>(path).unwrap_err());
            assert!(err.contains("not a regular file"), "{err}");
            assert!(csv_reader(path, "x.csv").is_err());
        }
        let link = dir.path().join("zero.json");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        assert!(format!("{:#}", read_json::<serde_json::Value>(&link).unwrap_err()).contains("not a regular file"));
        let small = ByteCap { max_bytes: 4, name: "four bytes" };
        std::fs::write(dir.path().join("big.txt"), "12345").unwrap();
        let err = read_text_capped(&dir.path().join("big.txt"), "big.txt", small).unwrap_err().to_string();
        assert!(err.contains("more than four bytes"), "{err}");
    }

    #[test]
    fn stale_temp_files_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("checkpoints")).unwrap();
        std::fs::write(dir.path().join("checkpoints/.tmp-abc"), b"x").unwrap();
        std::fs::write(dir.path().join("keep.json"), b"{}").unwrap();
        assert_eq!(remove_stale_temp_files(dir.path()), 1);
        assert!(dir.path().join("keep.json").exists());
    }
}
