//! Files are written whole or not at all: into a temp file beside the target, then renamed.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

fn parent_of(path: &Path) -> PathBuf {
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
        .prefix(".tmp-")
        .tempfile_in(&dir)
        .with_context(|| format!("cannot create a temp file in {}", dir.display()))?;
    {
        let mut writer = std::io::BufWriter::new(temp.as_file_mut());
        fill(&mut writer).with_context(|| format!("while writing {}", path.display()))?;
        writer.flush().with_context(|| format!("while writing {}", path.display()))?;
    }
    temp.as_file().sync_all().ok();
    temp.persist(path).with_context(|| format!("cannot move the finished file to {}", path.display()))?;
    Ok(())
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
