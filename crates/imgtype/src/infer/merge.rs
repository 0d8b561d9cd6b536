//! `test --merge-shards`: the `*.shard-K-of-N.*` outputs of a sharded run back into what
//! one unsharded run writes.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};

use super::shards::{shard_of_file, Shard};
use super::wrong_predictions::write_split_reports;
use crate::data::csv_records::{InputRecord, RecordReader};
use crate::data::ImageSource;

/// Interleaves `*.shard-K-of-N.*` files (all K of one N) into `output`: the rows in the
/// order one unsharded run writes them. For whole-dataset results (a `split` column),
/// the wrong-prediction CSVs and contact sheets and `metrics.json` are written beside it.
pub fn merge_shards(inputs: &[PathBuf], output: &Path, source: &ImageSource) -> Result<usize> {
    let shards = complete_shard_set(inputs)?;
    let output = &crate::fsutil::check_output_file(output, &shards.iter().map(|p| p.as_path()).collect::<Vec<_>>())?;
    let count = shards.len();
    // Read line by line with bounded rows, as any CSV: a damaged shard is an error naming its
    // row, never a field that grows with the file.
    let mut readers = Vec::new();
    let mut header: Option<csv::ByteRecord> = None;
    for path in &shards {
        let label = path.display().to_string();
        let file = crate::fsutil::open_capped(path, &label, crate::fsutil::STREAM_FILE_CAP)?;
        let mut reader = RecordReader::new(std::io::BufReader::new(file), label);
        let this = reader.header()?.ok_or_else(|| anyhow!("{}: empty (no header row)", path.display()))?;
        match &header {
            Some(h) if *h != this => bail!("{}: columns differ from the other shards", path.display()),
            _ => header = Some(this),
        }
        readers.push((reader, *path));
    }
    let header = header.expect("at least one shard");
    let next_row = |reader: &mut RecordReader<_>, path: &Path| -> Result<Option<csv::ByteRecord>> {
        match reader.next()? {
            Some(InputRecord { problem: Some(problem), .. }) => bail!("{}: {problem}", path.display()),
            Some(InputRecord { record, .. }) if record.len() != header.len() => {
                bail!("{}: a row of {} fields, the header has {}", path.display(), record.len(), header.len())
            }
            Some(InputRecord { record, .. }) => Ok(Some(record)),
            None => Ok(None),
        }
    };
    let mut written = 0;
    crate::fsutil::write_atomic_with(output, |w| {
        let mut writer = csv::Writer::from_writer(w);
        writer.write_byte_record(&header)?;
        loop {
            let (reader, path) = &mut readers[written % count];
            match next_row(reader, path)? {
                Some(row) => {
                    writer.write_byte_record(&row)?;
                    written += 1;
                }
                None => break,
            }
        }
        for (reader, path) in &mut readers {
            if next_row(reader, path)?.is_some() {
                bail!(
                    "{} has more rows than its place in the interleaving allows (shards of different runs?)",
                    path.display()
                );
            }
        }
        writer.flush()?;
        Ok(())
    })?;
    if header.iter().any(|h| h == b"split") {
        let dir = output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        write_split_reports(dir, output, None, source)?;
    }
    Ok(written)
}

/// The shard files in shard order, once each of 0..N is there exactly once.
fn complete_shard_set(inputs: &[PathBuf]) -> Result<Vec<&PathBuf>> {
    if inputs.is_empty() {
        bail!("no shard files to merge");
    }
    let mut shards: Vec<(Shard, &PathBuf)> = Vec::new();
    for path in inputs {
        if std::fs::symlink_metadata(path).is_err() {
            bail!("{}: no such shard file", path.display());
        }
        let shard = shard_of_file(path)
            .ok_or_else(|| anyhow!("{}: name does not say its shard (expected *.shard-K-of-N.*)", path.display()))?;
        shards.push((shard, path));
    }
    let count = shards[0].0.count;
    shards.sort_by_key(|(s, _)| s.index);
    for (shard, path) in &shards {
        if shard.count != count {
            bail!("{} is one of {} shards, the others of {count}", path.display(), shard.count);
        }
    }
    for pair in shards.windows(2) {
        if pair[0].0.index == pair[1].0.index {
            bail!(
                "shard {} of {count} is given twice ({}, {})",
                pair[0].0.index,
                pair[0].1.display(),
                pair[1].1.display()
            );
        }
    }
    let missing: Vec<String> =
        (0..count).filter(|k| !shards.iter().any(|(s, _)| s.index == *k)).map(|k| k.to_string()).collect();
    if !missing.is_empty() {
        bail!("shard {} of {count} is missing", missing.join(", "));
    }
    Ok(shards.into_iter().map(|(_, path)| path).collect())
}
