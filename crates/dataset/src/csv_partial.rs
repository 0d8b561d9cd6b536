//! The resumable output of `test --csv-path`: rows reach `O.partial` batch by batch, and a
//! rerun after an interruption trusts only the rows written exactly as the writer writes
//! them (a row cut by a kill reads back differently and is dropped), checks they are this
//! input's and this model's, and continues after them; a finished file is renamed to `O`.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use csv::ByteRecord;

/// `O.partial` (and beside it `O.partial.json`, the model it was made with): the output so
/// far. Rows reach the file batch by batch; a kill can cut the last one short, which a
/// rerun drops.
pub fn partial_paths(output: &Path) -> (PathBuf, PathBuf) {
    let mut name = output.as_os_str().to_owned();
    name.push(".partial");
    let partial = PathBuf::from(name);
    let mut sidecar = partial.as_os_str().to_owned();
    sidecar.push(".json");
    (partial, PathBuf::from(sidecar))
}

/// What an earlier run must have shared with this one for its rows to be taken over.
pub struct MadeWith<'a> {
    /// The model file (path, size, modification time).
    pub model: &'a str,
    /// What decides which image a row's path means: the image column and the base folder.
    pub settings: &'a str,
    /// The classes a row may name (besides ERROR).
    pub class_names: &'a [String],
}

impl MadeWith<'_> {
    /// Fails unless the sidecar says `partial` was made with this model and these settings.
    fn check_sidecar(&self, partial: &Path, sidecar: &Path) -> Result<()> {
        let recorded = if !imgtype_base::fsutil::is_present(sidecar) {
            Ok(None)
        } else {
            imgtype_base::fsutil::read_text_capped(
                sidecar,
                &sidecar.display().to_string(),
                imgtype_base::fsutil::JSON_FILE_CAP,
            )
            .and_then(|text| Ok(serde_json::from_str::<serde_json::Value>(&text)?))
            .map(|v| Some((v["model"].as_str().map(String::from), v["settings"].as_str().map(String::from))))
        };
        let (model, settings) = recorded
            .map_err(|e| {
                anyhow::anyhow!(
                    "{} cannot be checked: {e:#}; delete it and {} to start over",
                    partial.display(),
                    sidecar.display()
                )
            })?
            .unwrap_or((None, None));
        if model.as_deref() != Some(self.model) {
            bail!(
                "{} was made with another model ({}); delete it to start over",
                partial.display(),
                model.unwrap_or_else(|| "unknown".into())
            );
        }
        if settings.as_deref() != Some(self.settings) {
            bail!(
                "{} was made with other settings ({}; now: {}); the same command continues it, or delete it to start \
                 over",
                partial.display(),
                settings.unwrap_or_else(|| "unknown".into()),
                self.settings
            );
        }
        Ok(())
    }
}

/// The complete rows an interrupted run left in `O.partial`.
pub struct EarlierRows {
    pub path: PathBuf,
    /// The image path of each complete row, to check they are this input's.
    pub paths: Vec<Vec<u8>>,
    /// ERROR rows among them.
    pub failed: usize,
    /// Length of the file up to the end of its last complete row; 0: start the file over.
    end: u64,
}

impl EarlierRows {
    pub fn read(output: &Path, header: &[String], made_with_now: &MadeWith) -> Result<Self> {
        let (path, sidecar) = partial_paths(output);
        let mut earlier = Self { path: path.clone(), paths: Vec::new(), failed: 0, end: 0 };
        if std::fs::symlink_metadata(&path).is_err() {
            return Ok(earlier);
        }
        let label = path.display().to_string();
        let (file, metadata) =
            imgtype_base::fsutil::open_regular_file(&path, &label, imgtype_base::fsutil::STREAM_FILE_CAP)?;
        if metadata.len() == 0 {
            return Ok(earlier);
        }
        // The model and settings that made it, from the sidecar, before a byte of the rows is read.
        made_with_now.check_sidecar(&path, &sidecar)?;
        // Read as a stream: each row read back is compared with its bytes in the file (read
        // again through a second handle), so memory does not grow with the file.
        let (raw, _) = imgtype_base::fsutil::open_regular_file(&path, &label, imgtype_base::fsutil::STREAM_FILE_CAP)?;
        let file_bytes = |start: u64, end: u64| -> Option<Vec<u8>> {
            use std::os::unix::fs::FileExt;
            let mut buffer = vec![0u8; usize::try_from(end - start).ok()?];
            raw.read_exact_at(&mut buffer, start).ok().map(|()| buffer)
        };
        let length = metadata.len();
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .has_headers(false)
            .from_reader(std::io::BufReader::new(std::io::Read::take(file, length)));
        let mut record = ByteRecord::new();
        let predicted = header.iter().position(|h| h == "predicted_class").expect("predicted_class column");
        let confidence = header.iter().position(|h| h == "confidence").expect("confidence column");
        let plausible = |record: &ByteRecord| {
            let class = record.get(predicted).unwrap_or_default();
            let known = class == b"ERROR" || made_with_now.class_names.iter().any(|c| c.as_bytes() == class);
            let value = std::str::from_utf8(record.get(confidence).unwrap_or_default()).ok();
            known && value.and_then(|v| v.parse::<f64>().ok()).is_some_and(|v| (0.0..=1.0).contains(&v))
        };
        let mut start = 0;
        let mut rows = 0usize;
        while let Ok(true) = reader.read_byte_record(&mut record) {
            let end = reader.position().byte();
            // Complete means exactly as the writer writes it: a row cut inside a quoted field
            // or before its newline reads back differently.
            if record.len() != header.len() || Some(encode(&record)) != file_bytes(start, end) {
                break;
            }
            if rows == 0 {
                if record.iter().ne(header.iter().map(|h| h.as_bytes())) {
                    bail!("{} is not a partial output of this command (its columns differ); delete it", path.display());
                }
            } else if !plausible(&record) {
                break;
            } else {
                earlier.paths.push(record.get(0).unwrap_or_default().to_vec());
                earlier.failed += (record.get(predicted) == Some(b"ERROR".as_slice())) as usize;
            }
            rows += 1;
            start = end;
        }
        if rows == 0 {
            check_cut_header(&path, header, file_bytes(0, length.min(encode_header(header).len() as u64)), length)?;
        }
        if start < length {
            tracing::warn!(
                "{}: from row {} on ({} bytes) is cut short or not as this command writes rows (an unknown class, a \
                 confidence outside 0–1); those images are predicted again",
                path.display(),
                rows,
                length - start
            );
        }
        earlier.end = if rows > 0 { start } else { 0 };
        Ok(earlier)
    }

    /// Fails when row `index` done earlier was for another image than this input's.
    pub fn check_row(&self, index: usize, raw_path: &[u8]) -> Result<()> {
        if self.paths[index] != raw_path {
            bail!(
                "{} holds predictions for other images (its row {} is `{}`, this input's is `{}`); delete it to \
                 start over",
                self.path.display(),
                index + 1,
                String::from_utf8_lossy(&self.paths[index]),
                String::from_utf8_lossy(raw_path)
            );
        }
        Ok(())
    }
}

/// A record as the output writer writes it.
fn encode(record: &ByteRecord) -> Vec<u8> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_byte_record(record).expect("writing to memory");
    writer.into_inner().expect("writing to memory")
}

pub struct PartialOutput {
    pub path: PathBuf,
    sidecar: PathBuf,
    writer: csv::Writer<BufWriter<File>>,
    /// Rows in the file.
    pub written: usize,
}

impl PartialOutput {
    /// Opens `O.partial` after the complete rows of `earlier`, or starts it with `header`.
    pub fn open(output: &Path, header: &[String], earlier: &EarlierRows, made_with: &MadeWith) -> Result<Self> {
        let (path, sidecar) = partial_paths(output);
        let failed = |e| anyhow::Error::new(e).context(format!("cannot write {}", path.display()));
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create folder {}", dir.display()))?;
        }
        imgtype_base::fsutil::write_json_atomic(
            &sidecar,
            &serde_json::json!({"model": made_with.model, "settings": made_with.settings}),
        )?;
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(failed)?;
        file.set_len(earlier.end).map_err(failed)?;
        let mut writer = csv::Writer::from_writer(BufWriter::new(file));
        if earlier.end == 0 {
            writer.write_record(header).map_err(|e| failed(e.into()))?;
            writer.flush().map_err(failed)?;
        }
        Ok(Self { path, sidecar, writer, written: earlier.paths.len() })
    }

    pub fn write_row(&mut self, values: &[Vec<u8>]) -> Result<()> {
        self.writer.write_record(values).with_context(|| format!("cannot write {}", self.path.display()))?;
        self.written += 1;
        Ok(())
    }

    /// Hands the rows so far to the operating system, so a kill loses at most a batch.
    pub fn flush(&mut self) -> Result<()> {
        self.writer.flush().with_context(|| format!("cannot write {}", self.path.display()))
    }

    /// Flushes to disk and renames the finished file to `output`.
    pub fn finish(mut self, output: &Path) -> Result<()> {
        self.flush()?;
        let file =
            self.writer.into_inner().map_err(|e| anyhow::anyhow!("cannot write {}: {e}", self.path.display()))?;
        let file = file.into_inner().map_err(|e| anyhow::anyhow!("cannot write {}: {e}", self.path.display()))?;
        imgtype_base::fsutil::sync_to_disk(&file, &self.path)?;
        // Checked again: a file put there while the rows were made is not replaced either.
        imgtype_base::fsutil::check_replaceable(output, imgtype_base::fsutil::Replaceable::PredictionsCsv)
            .with_context(|| format!("the predictions are kept in {}", self.path.display()))?;
        std::fs::rename(&self.path, output)
            .with_context(|| format!("cannot move the finished {} to {}", self.path.display(), output.display()))?;
        let _ = std::fs::remove_file(&self.sidecar);
        Ok(())
    }
}

fn encode_header(header: &[String]) -> Vec<u8> {
    encode(&ByteRecord::from(header.to_vec()))
}

/// A file without one complete row: a header cut by a kill (`start`, its first bytes, are
/// the header's and the file is no longer) starts over; anything else is not ours to overwrite.
fn check_cut_header(path: &Path, header: &[String], start: Option<Vec<u8>>, length: u64) -> Result<()> {
    let written_header = encode_header(header);
    let cut_header =
        start.is_some_and(|bytes| length <= written_header.len() as u64 && written_header.starts_with(&bytes));
    if !cut_header {
        bail!(
            "{} is not a partial output of this command (its first row is not the header it writes); delete it",
            path.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODEL: &str = "model.safetensors (10 bytes, modified 1)";
    const SETTINGS: &str = "image column `image_path`, image base /images";

    fn header() -> Vec<String> {
        ["image_path", "predicted_class", "confidence", "error"].map(String::from).to_vec()
    }

    fn classes() -> Vec<String> {
        vec!["full_shot".into(), "care_label".into()]
    }

    fn read(output: &Path) -> Result<EarlierRows> {
        let classes = classes();
        EarlierRows::read(output, &header(), &MadeWith { model: MODEL, settings: SETTINGS, class_names: &classes })
    }

    /// Writes `O.partial` with `body` (and the sidecar naming MODEL and SETTINGS) and reads it back.
    fn earlier(body: &[u8]) -> Result<EarlierRows> {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("out.csv");
        let (partial, sidecar) = partial_paths(&output);
        std::fs::write(&partial, body).unwrap();
        std::fs::write(&sidecar, serde_json::json!({"model": MODEL, "settings": SETTINGS}).to_string()).unwrap();
        read(&output)
    }

    const HEADER: &[u8] = b"image_path,predicted_class,confidence,error\n";

    #[test]
    fn complete_rows_are_kept_and_a_cut_last_row_is_dropped() {
        let full = [HEADER, b"a.jpg,full_shot,0.9,\nb.jpg,ERROR,0.0,\"cannot open\nsecond line\"\n"].concat();
        let rows = earlier(&full).unwrap();
        assert_eq!(rows.paths, vec![b"a.jpg".to_vec(), b"b.jpg".to_vec()]);
        assert_eq!((rows.failed, rows.end), (1, full.len() as u64));
        // Cut inside the quoted, multi-line error cell, just after its inner newline.
        let cut = &full[..full.len() - "second line\"\n".len()];
        let rows = earlier(cut).unwrap();
        assert_eq!(rows.paths, vec![b"a.jpg".to_vec()]);
        assert_eq!(rows.end, (HEADER.len() + b"a.jpg,full_shot,0.9,\n".len()) as u64);
        // Cut before the newline of the last row.
        let rows = earlier(&full[..full.len() - 1]).unwrap();
        assert_eq!(rows.paths.len(), 1);
    }

    #[test]
    fn rows_this_command_would_not_write_are_predicted_again() {
        for bad in ["b.jpg,bogus_class,0.5,", "b.jpg,full_shot,NaN,", "b.jpg,full_shot,1.5,", "b.jpg,full_shot,x,"] {
            let body = [HEADER, b"a.jpg,full_shot,0.9,\n", bad.as_bytes(), b"\nc.jpg,care_label,0.8,\n"].concat();
            let rows = earlier(&body).unwrap();
            assert_eq!(rows.paths, vec![b"a.jpg".to_vec()], "{bad}: trusted up to the row before it");
            assert_eq!(rows.end, (HEADER.len() + b"a.jpg,full_shot,0.9,\n".len()) as u64, "{bad}");
        }
    }

    #[test]
    fn an_empty_file_or_a_cut_header_starts_over_and_strangers_are_refused() {
        assert_eq!(earlier(b"").unwrap().end, 0);
        assert_eq!(earlier(b"image_path,predicted_cl").unwrap().end, 0);
        let rows = earlier(HEADER).unwrap();
        assert!(rows.paths.is_empty() && rows.end > 0);
        for stranger in [&b"image_path,predicted_class,confidence,error\r\na.jpg,full_shot,0.9,\r\n"[..], b"a,b\n"] {
            let err = earlier(stranger).err().unwrap().to_string();
            assert!(err.contains("not a partial output"), "{err}");
        }
        let err = earlier(b"path,class,confidence,error\na.jpg,full_shot,0.9,\n").err().unwrap();
        assert!(err.to_string().contains("columns differ"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("out.csv");
        let (partial, sidecar) = partial_paths(&output);
        std::fs::write(&partial, HEADER).unwrap();
        let err = read(&output).err().unwrap();
        assert!(err.to_string().contains("another model"), "{err}");
        std::fs::write(&sidecar, serde_json::json!({"model": MODEL, "settings": "image base /elsewhere"}).to_string())
            .unwrap();
        let err = read(&output).err().unwrap().to_string();
        assert!(err.contains("other settings (image base /elsewhere; now: image column"), "{err}");
    }
}
