//! Sharding for schedulers with an array index (a Kubernetes Indexed Job, a Slurm array):
//! `--shard K/N` predicts rows i with i mod N = K and names its outputs `*.shard-K-of-N.*`
//! (`test --merge-shards` puts them back together). A finished shard leaves a record beside it
//! (`<shard>.json`) saying what it was made from, so that the merge takes only the shards of
//! one run, as they were written.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl FromStr for Shard {
    type Err = anyhow::Error;

    /// `K/N` with 0 ≤ K < N (K as Kubernetes' JOB_COMPLETION_INDEX or a Slurm array index).
    fn from_str(text: &str) -> Result<Self> {
        let (k, n) = text.split_once('/').ok_or_else(|| anyhow!("shard `{text}` is not K/N"))?;
        let index: usize = k.trim().parse().map_err(|_| anyhow!("shard `{text}`: K is not a number"))?;
        let count: usize = n.trim().parse().map_err(|_| anyhow!("shard `{text}`: N is not a number"))?;
        if count == 0 || index >= count {
            bail!("shard `{text}`: need 0 <= K < N");
        }
        Ok(Shard { index, count })
    }
}

impl Shard {
    pub fn includes(&self, row: usize) -> bool {
        row % self.count == self.index
    }

    pub fn tag(&self) -> String {
        format!("shard-{}-of-{}", self.index, self.count)
    }
}

/// `dir/results.csv` → `dir/results.shard-K-of-N.csv` (unchanged without a shard).
pub fn shard_file_name(path: &Path, shard: Option<Shard>) -> PathBuf {
    let Some(shard) = shard else { return path.to_path_buf() };
    let stem = path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem}.{}.{}", shard.tag(), ext.to_string_lossy()),
        None => format!("{stem}.{}", shard.tag()),
    };
    path.with_file_name(name)
}

/// The shard a file name says it holds (`*.shard-K-of-N.*`; the last such tag, since an
/// output named `x.shard-9-of-10.csv` and sharded again gets a second one).
pub fn shard_of_file(path: &Path) -> Option<Shard> {
    let name = path.file_name()?.to_string_lossy().to_string();
    let start = name.rfind(".shard-")? + ".shard-".len();
    let rest = &name[start..];
    let (k, rest) = rest.split_once("-of-")?;
    let n: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    if !k.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    format!("{k}/{n}").parse().ok()
}

/// What a finished shard was made from and what it holds, written beside it as
/// `<shard file>.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ShardRecord {
    /// `K/N`.
    pub shard: String,
    /// What decides its rows, the same for every shard of one run: the model file's and the
    /// input's fingerprints (their bytes, not their paths: the jobs of an array may mount them
    /// in other places) and the settings that choose the images.
    pub made_from: String,
    /// Data rows of the whole input, all shards together.
    pub input_rows: usize,
    /// Data rows of this shard.
    pub rows: usize,
    /// Of the shard file's bytes as written.
    pub fingerprint: String,
    /// How its images were read and scored (engine, number format, image folder): shards of one
    /// run may differ here (machines of an array, mounts), so a difference is only warned about.
    #[serde(default)]
    pub settings: String,
}

/// Longest `made_from` or `settings` this tool writes, by far: a longer one is not a record.
const RECORD_TEXT_CAP: usize = 4096;

/// Where `shard_file`'s record is.
pub fn record_path(shard_file: &Path) -> PathBuf {
    let mut name = shard_file.as_os_str().to_owned();
    name.push(".json");
    PathBuf::from(name)
}

/// SipHash of a file's bytes, read in blocks (a shard, a model, an input CSV of any size).
pub fn file_fingerprint(path: &Path) -> Result<String> {
    let label = path.display().to_string();
    let file = imgtype_base::fsutil::open_capped(path, &label, imgtype_base::fsutil::STREAM_FILE_CAP)?;
    fingerprint_of(file, &label)
}

/// SipHash of what `reader` holds, read to its end.
pub fn fingerprint_of(mut reader: impl Read, label: &str) -> Result<String> {
    use std::hash::Hasher;
    #[allow(deprecated)]
    let mut hasher = std::hash::SipHasher::new();
    let mut block = vec![0u8; 1 << 16];
    loop {
        let read = reader.read(&mut block).with_context(|| format!("cannot read {label}"))?;
        if read == 0 {
            return Ok(format!("{:016x}", hasher.finish()));
        }
        hasher.write(&block[..read]);
    }
}

/// Refuses a name for `shard`'s file that the merge would not read back as that shard: one
/// ending in `.json` or `.partial` (taken for a record, an unfinished file) or with another
/// `.shard-` tag after this one.
pub fn check_shard_name(file: &Path, shard: Shard) -> Result<()> {
    let name = file.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    if name.ends_with(".json") || name.ends_with(".partial") || shard_of_file(file) != Some(shard) {
        bail!(
            "{}: --merge-shards would not read this name back as shard {}/{}; give --output-path another name \
             (as results.csv)",
            file.display(),
            shard.index,
            shard.count
        );
    }
    Ok(())
}

/// An output named as a shard's record (`*.shard-K-of-N.*.json`) would replace the record of
/// a shard that may be written beside it.
pub fn check_not_a_record(file: &Path) -> Result<()> {
    let name = file.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    if name.strip_suffix(".json").is_some_and(|shard| shard_of_file(Path::new(shard)).is_some()) {
        bail!("{}: named as a shard's record, which a sharded run writes there; give another name", file.display());
    }
    Ok(())
}

impl Shard {
    /// Data rows this shard holds of an input of `input_rows`.
    pub fn rows_of(&self, input_rows: usize) -> usize {
        input_rows.saturating_sub(self.index).div_ceil(self.count)
    }

    /// Writes the record of the finished `shard_file`.
    pub fn write_record(
        &self,
        shard_file: &Path,
        made_from: String,
        settings: String,
        input_rows: usize,
    ) -> Result<()> {
        let record = ShardRecord {
            shard: format!("{}/{}", self.index, self.count),
            made_from,
            input_rows,
            rows: self.rows_of(input_rows),
            fingerprint: file_fingerprint(shard_file)?,
            settings,
        };
        imgtype_base::fsutil::write_json_atomic(&record_path(shard_file), &record)
    }
}

/// Checks `shards` (each with the shard its name says and the fingerprint of the bytes the merge
/// reads) against their records: each as written, of the shard its name says, and all of one
/// run. Returns the shards without a record when none has one (written before records were
/// kept): those cannot be checked. Some with and some without is refused.
pub fn check_records<'a>(shards: &[(Shard, &'a Path, String)]) -> Result<Vec<&'a Path>> {
    let (mut unrecorded, mut warned) = (Vec::new(), false);
    let mut first: Option<(ShardRecord, &Path)> = None;
    for (shard, path, fingerprint) in shards {
        let record_file = record_path(path);
        if !imgtype_base::fsutil::is_present(&record_file) {
            unrecorded.push(*path);
            continue;
        }
        let record: ShardRecord = imgtype_base::fsutil::read_json(&record_file)
            .with_context(|| format!("{} is not the record of a shard", record_file.display()))?;
        if record.made_from.len() > RECORD_TEXT_CAP || record.settings.len() > RECORD_TEXT_CAP {
            bail!("{} is not the record of a shard (a field far longer than this tool writes)", record_file.display());
        }
        let named = format!("{}/{}", shard.index, shard.count);
        if record.shard != named {
            bail!(
                "{}: its record {} is of shard {}, the file is named as shard {named}: renamed, or the record copied",
                path.display(),
                record_file.display(),
                record.shard
            );
        }
        if record.rows != shard.rows_of(record.input_rows) {
            bail!(
                "{}: its record says {} of {} input rows, which shard {named} cannot hold: the record was edited",
                record_file.display(),
                record.rows,
                record.input_rows
            );
        }
        if *fingerprint != record.fingerprint {
            bail!(
                "{} changed after it was written (its bytes are not those {} records): run its shard again",
                path.display(),
                record_file.display()
            );
        }
        match &first {
            None => first = Some((record, path)),
            Some((one, other)) if (&one.made_from, one.input_rows) != (&record.made_from, record.input_rows) => bail!(
                "{} and {} are not shards of one run: one was made from {} ({} input rows), the other from {} ({} \
                 input rows); merge the shards of one run",
                other.display(),
                path.display(),
                one.made_from,
                one.input_rows,
                record.made_from,
                record.input_rows
            ),
            Some((one, other)) if one.settings != record.settings && !warned => {
                warned = true;
                tracing::warn!(
                    "{} and {} were predicted with other settings ({} / {}): their figures may differ",
                    other.display(),
                    path.display(),
                    one.settings,
                    record.settings
                )
            }
            Some(_) => {}
        }
    }
    // Every shard of a run writes its record: one without, beside recorded ones, is a file
    // from elsewhere or a record removed, and cannot be told to be of the same run.
    if let (Some((_, recorded)), Some(bare)) = (&first, unrecorded.first()) {
        bail!(
            "{} has no record beside it, but {} has: every shard of one run has one (the record was removed, or the \
             file comes from another run or an older version); run its shard again",
            bare.display(),
            recorded.display()
        );
    }
    Ok(unrecorded)
}

/// The shard files in shard order, once each of 0..N is there exactly once.
pub fn complete_shard_set(inputs: &[PathBuf]) -> Result<Vec<(Shard, &Path)>> {
    if inputs.is_empty() {
        bail!("no shard files to merge");
    }
    let mut shards: Vec<(Shard, &Path)> = Vec::new();
    for path in inputs {
        if std::fs::symlink_metadata(path).is_err() {
            bail!("{}: no such shard file", path.display());
        }
        let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        if name.ends_with(".partial") || name.ends_with(".partial.json") {
            bail!("{}: an unfinished shard; run its command again to finish it", path.display());
        }
        if name.starts_with("wrong_") || name.ends_with(".png") {
            bail!("{}: a report of a sharded run, not its results; merge its inference_results shards", path.display());
        }
        if name.ends_with(".json") {
            bail!(
                "{}: a JSON file (a shard's record or metrics), not shard rows; give the shard CSV files",
                path.display()
            );
        }
        let shard = shard_of_file(path)
            .ok_or_else(|| anyhow!("{}: name does not say its shard (expected *.shard-K-of-N.*)", path.display()))?;
        shards.push((shard, path.as_path()));
    }
    // The N most files say: one odd file is the one named.
    let count = shards
        .iter()
        .map(|(s, _)| s.count)
        .max_by_key(|&n| (shards.iter().filter(|(s, _)| s.count == n).count(), std::cmp::Reverse(n)))
        .expect("at least one shard");
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
    // Found lazily: N comes from a file name and may be huge.
    let mut missing = (0..count).filter(|k| !shards.iter().any(|(s, _)| s.index == *k));
    let listed: Vec<String> = missing.by_ref().take(10).map(|k| k.to_string()).collect();
    if !listed.is_empty() {
        match count - shards.len() {
            1 => bail!("shard {} of {count} is missing", listed[0]),
            n if n > listed.len() => {
                bail!("shards {} and {} more of {count} are missing", listed.join(", "), n - listed.len())
            }
            _ => bail!("shards {} of {count} are missing", listed.join(", ")),
        }
    }
    Ok(shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_parsing_and_names() {
        let shard: Shard = "2/5".parse().unwrap();
        assert_eq!(shard, Shard { index: 2, count: 5 });
        assert!(shard.includes(7) && !shard.includes(8));
        for bad in ["5/5", "1", "a/2", "0/0"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        let name = shard_file_name(Path::new("out/preds.csv"), Some(shard));
        assert_eq!(name, Path::new("out/preds.shard-2-of-5.csv"));
        assert_eq!(shard_of_file(&name), Some(shard));
        assert_eq!(shard_file_name(Path::new("x.csv"), None), Path::new("x.csv"));
        // An output already named like a shard, sharded again: the last tag is the shard.
        let again = shard_file_name(Path::new("out.shard-9-of-10.csv"), Some("1/2".parse().unwrap()));
        assert_eq!(shard_of_file(&again), Some(Shard { index: 1, count: 2 }));
        assert_eq!(shard_of_file(Path::new("x.shard-+1-of-3.csv")), None);
        assert_eq!(Shard { index: 2, count: 3 }.rows_of(41), 13);
        assert_eq!(Shard { index: 45, count: 50 }.rows_of(41), 0);
    }
}
