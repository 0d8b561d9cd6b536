//! Where an output may be written: checked before any work is done, so that a command never
//! replaces its own input, a working file of another command, or a user's file that is not
//! what it writes.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::TEMP_PREFIX;

/// Where an output file named `path` is to be written, checked before any work is done:
/// a folder, a device, a FIFO or a socket is refused (an atomic write would replace it with
/// a regular file), and so is one of `inputs` (the output would replace its input). A
/// symbolic link is written through: the file it points to is replaced, the link stays.
pub fn check_output_file(path: &Path, inputs: &[&Path]) -> Result<PathBuf> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let working = [".partial", ".partial.json"].iter().any(|end| name.ends_with(end))
        || name.starts_with(TEMP_PREFIX)
        || (name.starts_with('.') && name.ends_with(".lock"));
    // The working files beside an output repeat its name (`<name>.partial.json` the longest).
    const LONGEST_NAME: usize = 255 - ".partial.json".len();
    let name_bytes = path.file_name().map_or(0, |n| n.len());
    if name_bytes > LONGEST_NAME {
        anyhow::bail!(
            "output path {}: its file name has {} bytes, and the working files written beside it (`<name>.partial.json`) \
             would be over the 255 bytes a file name may have; give a name of at most {LONGEST_NAME} bytes",
            path.display(),
            name_bytes
        );
    }
    if working {
        anyhow::bail!(
            "output path {}: named as a working file of this tool (an unfinished output's `.partial` or its record, a \
             temp file, a lock), which another command may be writing; give another name",
            path.display()
        );
    }
    check_output_target(path, inputs)
}

/// As [`check_output_file`], for a working file of the output being written (its `.partial`).
pub fn check_output_target(path: &Path, inputs: &[&Path]) -> Result<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    use std::path::Component;
    if path.as_os_str() == "-" {
        anyhow::bail!("output path `-`: results are written to a file (resumable, renamed when complete), not to standard output; give a file path");
    }
    let text = path.as_os_str().to_string_lossy();
    if text.ends_with('/') || matches!(path.components().next_back(), Some(Component::ParentDir | Component::CurDir)) {
        anyhow::bail!("output path {}: names a folder, not a file; give a file path", path.display());
    }
    let target = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(path.to_path_buf()),
        Err(e) => return Err(e).with_context(|| format!("cannot use output path {}", path.display())),
        Ok(m) if m.file_type().is_symlink() => std::fs::canonicalize(path)
            .map_err(|_| anyhow::anyhow!("output path {} is a symbolic link to a missing file", path.display()))?,
        Ok(_) => path.to_path_buf(),
    };
    let metadata = std::fs::metadata(&target).with_context(|| format!("cannot use output path {}", path.display()))?;
    if metadata.is_dir() {
        anyhow::bail!("output path {} is a folder: give the path of a file to write", path.display());
    }
    if !metadata.is_file() {
        anyhow::bail!(
            "output path {} is not a regular file (a device, FIFO or socket): give the path of a file to write",
            path.display()
        );
    }
    for input in inputs {
        let same = std::fs::metadata(input).is_ok_and(|i| (i.dev(), i.ino()) == (metadata.dev(), metadata.ino()));
        if same {
            anyhow::bail!(
                "output path {} is the input {}: writing would replace it; give another output path",
                path.display(),
                input.display()
            );
        }
    }
    Ok(target)
}

/// What a command writes, and so the only kind of existing file it may replace at its output
/// path: a file of another kind there is a user's (the model it runs, an image or split file it
/// reads, anything given by mistake), never written over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replaceable {
    /// A CSV whose header has a `predicted_class` column (predictions `test` wrote before).
    PredictionsCsv,
    /// A safetensors file (a model file).
    Safetensors,
    /// An ONNX model (a protobuf `ModelProto` that begins with its `ir_version`, as exporters write it).
    Onnx,
}

impl Replaceable {
    fn describe(self) -> &'static str {
        match self {
            Replaceable::PredictionsCsv => "a predictions CSV (no `predicted_class` column in its first line)",
            Replaceable::Safetensors => "a safetensors model file",
            Replaceable::Onnx => "an ONNX model",
        }
    }

    fn matches(self, head: &[u8]) -> bool {
        match self {
            // Text: a file with a NUL byte (an archive, a database) is not one, whatever its bytes spell.
            Replaceable::PredictionsCsv if head.contains(&0) => false,
            Replaceable::PredictionsCsv => {
                let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(head);
                let mut header = csv::ByteRecord::new();
                reader.read_byte_record(&mut header).unwrap_or(false)
                    && header.iter().any(|field| {
                        let field = field.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(field);
                        field.trim_ascii() == b"predicted_class"
                    })
            }
            // An 8-byte little-endian header length, then the JSON header.
            Replaceable::Safetensors => head.len() > 8 && head[8] == b'{',
            // Field 1 (`ir_version`, a small varint), then another field of `ModelProto` (2–8, length-delimited or varint).
            Replaceable::Onnx => {
                head.len() > 2
                    && head[0] == 0x08
                    && head[1] < 0x80
                    && [0x12, 0x1a, 0x22, 0x28, 0x32, 0x3a, 0x42].contains(&head[2])
            }
        }
    }
}

/// An existing, non-empty file at the output `path` (as [`check_output_file`] returned it) is
/// `kind`, which the command writes: anything else is refused before any work is done.
pub fn check_replaceable(path: &Path, kind: Replaceable) -> Result<()> {
    let Ok((file, _)) = super::open_regular_file(
        path,
        &path.display().to_string(),
        super::ByteCap { max_bytes: u64::MAX, name: "no limit" },
    ) else {
        return Ok(());
    };
    let mut head = Vec::new();
    file.take(64 * 1024).read_to_end(&mut head).with_context(|| format!("cannot read {}", path.display()))?;
    if !head.is_empty() && !kind.matches(&head) {
        anyhow::bail!(
            "output path {} holds a file that is not {}: writing would replace it; give another output path, or move \
             that file away",
            path.display(),
            kind.describe()
        );
    }
    Ok(())
}

/// Files of a set (a summary) written into a hidden folder beside their folder, then moved in
/// one after the other at once: a command killed while it writes them leaves the set the
/// folder had, never part of a new one. For the holder of the files' locks
/// ([`super::lock_outputs`]): the staging folder a killed one left is removed.
pub struct StagedFiles {
    staging: PathBuf,
    dir: PathBuf,
    names: Vec<String>,
}

impl StagedFiles {
    pub fn begin(dir: &Path, names: &[&str]) -> Result<Self> {
        let staging = dir.join(".staging");
        match std::fs::remove_dir_all(&staging) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("cannot remove {}, left by a killed write", staging.display()))
            }
            _ => {}
        }
        std::fs::create_dir(&staging).with_context(|| format!("cannot create {}", staging.display()))?;
        Ok(Self { staging, dir: dir.to_path_buf(), names: names.iter().map(|n| n.to_string()).collect() })
    }

    /// Where the file `name` of the set is written.
    pub fn path(&self, name: &str) -> PathBuf {
        self.staging.join(name)
    }

    /// Moves in the files written (one not written, as a picture that failed, is left as it was).
    pub fn move_in(self) -> Result<()> {
        for name in self.names.iter().filter(|name| self.path(name).is_file()) {
            let target = self.dir.join(name);
            std::fs::rename(self.path(name), &target)
                .with_context(|| format!("cannot move in {}", target.display()))?;
        }
        let _ = std::fs::remove_dir_all(&self.staging);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nothing of a set moves in until all of it is written; what a killed writer staged is
    /// removed by the next.
    #[test]
    fn staged_files_move_in_together() {
        let dir = tempfile::tempdir().unwrap();
        let names = ["a.csv", "b.json", "c.png"];
        for name in names {
            std::fs::write(dir.path().join(name), "old").unwrap();
        }
        std::fs::create_dir(dir.path().join(".staging")).unwrap();
        std::fs::write(dir.path().join(".staging/a.csv"), "killed").unwrap();
        let staged = StagedFiles::begin(dir.path(), &names).unwrap();
        assert!(!staged.path("a.csv").exists(), "a killed writer's file is gone");
        std::fs::write(staged.path("a.csv"), "new").unwrap();
        std::fs::write(staged.path("b.json"), "new").unwrap();
        let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
        assert_eq!((read("a.csv"), read("b.json")), ("old".into(), "old".into()));
        staged.move_in().unwrap();
        // c.png was not written this time (a picture that failed): left as it was.
        assert_eq!((read("a.csv"), read("b.json"), read("c.png")), ("new".into(), "new".into(), "old".into()));
        assert!(!dir.path().join(".staging").exists());
    }
}
