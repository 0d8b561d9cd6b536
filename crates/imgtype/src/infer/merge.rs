//! `test --merge-shards`: the `*.shard-K-of-N.*` outputs of a sharded run back into what
//! one unsharded run writes.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use super::shards::{shard_of_file, Shard};
use super::wrong_predictions::write_split_reports;
use crate::data::ImageSource;

/// Interleaves `*.shard-K-of-N.*` files (all K of one N) into `output`: the rows in the
/// order one unsharded run writes them. For whole-dataset results (a `split` column),
/// the wrong-prediction CSVs and contact sheets and `metrics.json` are written beside it.
pub fn merge_shards(inputs: &[PathBuf], output: &Path, source: &ImageSource) -> Result<usize> {
    let shards = complete_shard_set(inputs)?;
    let output = &crate::fsutil::check_output_file(output, &shards.iter().map(|p| p.as_path()).collect::<Vec<_>>())?;
    let count = shards.len();
    let mut readers = Vec::new();
    let mut header: Option<csv::StringRecord> = None;
    for path in &shards {
        let mut reader = csv::Reader::from_reader(crate::fsutil::open_capped(
            path,
            &path.display().to_string(),
            crate::fsutil::STREAM_FILE_CAP,
        )?);
        let this = reader.headers()?.clone();
        match &header {
            Some(h) if *h != this => bail!("{}: columns differ from the other shards", path.display()),
            _ => header = Some(this),
        }
        readers.push((reader.into_records(), *path));
    }
    let header = header.expect("at least one shard");
    let mut written = 0;
    crate::fsutil::write_atomic_with(output, |w| {
        let mut writer = csv::Writer::from_writer(w);
        writer.write_record(&header)?;
        loop {
            let (records, path) = &mut readers[written % count];
            match records.next() {
                Some(row) => {
                    writer.write_record(&row.with_context(|| format!("{}: bad row", path.display()))?)?;
                    written += 1;
                }
                None => break,
            }
        }
        for (records, path) in &mut readers {
            if records.next().is_some() {
                bail!(
                    "{} has more rows than its place in the interleaving allows (shards of different runs?)",
                    path.display()
                );
            }
        }
        writer.flush()?;
        Ok(())
    })?;
    if header.iter().any(|h| h == "split") {
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
