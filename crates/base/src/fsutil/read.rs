//! The one opener of files we did not write, and the caps on what is read from them.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};

use super::plain_io_error;

/// A cap on the bytes read from a file we did not write, and its name for errors (the
/// config key that sets it, or what it is for).
#[derive(Debug, Clone, Copy)]
pub struct ByteCap<'a> {
    pub max_bytes: u64,
    pub name: &'a str,
}

/// Opens `path` for reading if it is a regular file within `cap`: FIFOs, devices and
/// sockets are refused without blocking (`O_NONBLOCK`), and a file over the cap is refused
/// from its size, before anything is read. `label` names the file in errors. The one
/// opener of files we did not write (images, model files, configs).
pub fn open_regular_file(path: &Path, label: &str, cap: ByteCap) -> Result<(std::fs::File, std::fs::Metadata)> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot open {label}: {}", plain_io_error(&e)))?;
    let metadata = file.metadata().map_err(|e| anyhow::anyhow!("cannot open {label}: {}", plain_io_error(&e)))?;
    if !metadata.is_file() {
        anyhow::bail!("{label}: not a regular file (a folder, device, FIFO or socket)");
    }
    if metadata.len() > cap.max_bytes {
        anyhow::bail!("{label}: {} bytes, more than {} ({})", metadata.len(), cap.name, cap.max_bytes);
    }
    Ok((file, metadata))
}

/// Reads `reader` to its end, failing once it has given more than the cap.
pub fn read_at_most(reader: impl std::io::Read, label: &str, cap: ByteCap) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader
        .take(cap.max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| anyhow::anyhow!("cannot read {label}: {}", plain_io_error(&e)))?;
    if bytes.len() as u64 > cap.max_bytes {
        anyhow::bail!("{label}: more than {} ({} bytes)", cap.name, cap.max_bytes);
    }
    Ok(bytes)
}

/// Whether anything is at `path` (a FIFO, a device, a dangling link too): where a file is
/// required, its absence is said as such and anything else is left to the reader, whose
/// error says what is wrong with it ("not a regular file").
pub fn is_present(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// The whole regular file at `path`, refused when it is over `cap`.
pub fn read_capped(path: &Path, label: &str, cap: ByteCap) -> Result<Vec<u8>> {
    let (file, _) = open_regular_file(path, label, cap)?;
    read_at_most(file, label, cap)
}

/// The cap on a JSON file of ours read back (a run's, sweep's or cross-validation's files, a
/// sweep file): they are kilobytes, but a folder can be copied from elsewhere, edited or damaged.
pub const JSON_FILE_CAP: ByteCap<'static> = ByteCap { max_bytes: 64 << 20, name: "the 64 MiB a JSON file may have" };

/// The cap on a CSV file read (product CSVs, split files, corrections, predictions): millions
/// of rows fit; `/dev/zero` or a runaway file does not.
pub const CSV_FILE_CAP: ByteCap<'static> = ByteCap { max_bytes: 1 << 30, name: "the 1 GiB a CSV file may have" };

/// The cap on a file read as a stream, row by row (`test --csv-path`'s input, a resumable
/// `.partial` output): memory does not grow with it, so only a non-regular file is refused.
pub const STREAM_FILE_CAP: ByteCap<'static> =
    ByteCap { max_bytes: 1 << 40, name: "the 1 TiB a streamed file may have" };

/// A regular file at `path` opened for reading at most `cap` bytes: what every reader of a
/// file uses, so none blocks on a FIFO or reads a device to its end (see [`open_regular_file`]).
pub fn open_capped(path: &Path, label: &str, cap: ByteCap) -> Result<std::io::Take<std::fs::File>> {
    let (file, _) = open_regular_file(path, label, cap)?;
    Ok(file.take(cap.max_bytes))
}

/// The whole regular file at `path` as UTF-8 text, refused when it is over `cap`.
pub fn read_text_capped(path: &Path, label: &str, cap: ByteCap) -> Result<String> {
    String::from_utf8(read_capped(path, label, cap)?).map_err(|_| anyhow::anyhow!("{label} is not UTF-8 text"))
}

/// A JSON file of ours at `path`, bounded by [`JSON_FILE_CAP`], as `T`.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let label = path.display().to_string();
    let text = read_text_capped(path, &label, JSON_FILE_CAP)?;
    serde_json::from_str(&text).with_context(|| format!("{label}: not the expected JSON"))
}

/// A CSV reader (header row expected) over the regular file at `path`, bounded by [`CSV_FILE_CAP`].
pub fn csv_reader(path: &Path, label: &str) -> Result<csv::Reader<std::io::Take<std::fs::File>>> {
    Ok(csv::Reader::from_reader(open_capped(path, label, CSV_FILE_CAP)?))
}
