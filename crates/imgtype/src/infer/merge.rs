//! `test --merge-shards`: the `*.shard-K-of-N.*` outputs of a sharded run back into what
//! one unsharded run writes.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use super::shards::Shard;
use super::wrong_predictions::write_split_reports;
use crate::data::csv_records::{InputRecord, RecordReader};
use crate::data::ImageSource;
use crate::fsutil::OutputLock;

/// Interleaves `*.shard-K-of-N.*` files (all K of one N) into `output`: the rows in the
/// order one unsharded run writes them. For whole-dataset results (a `split` column),
/// the wrong-prediction CSVs and contact sheets and `metrics.json` are written beside it.
pub fn merge_shards(inputs: &[PathBuf], output: &Path, source: &ImageSource) -> Result<usize> {
    let set = super::shards::complete_shard_set(inputs)?;
    let shards: Vec<&Path> = set.iter().map(|(_, path)| *path).collect();
    let records: Vec<PathBuf> = shards.iter().map(|path| super::shards::record_path(path)).collect();
    let inputs: Vec<&Path> = shards.iter().copied().chain(records.iter().map(PathBuf::as_path)).collect();
    super::shards::check_not_a_record(output)?;
    let output = &crate::fsutil::check_output_file(output, &inputs)?;
    crate::fsutil::check_replaceable(output, crate::fsutil::Replaceable::PredictionsCsv)?;
    let _lock = OutputLock::acquire(output, "merging shards into it")?;
    let files = opened_and_checked(&set)?;
    let count = shards.len();
    let (mut readers, header) = shard_readers(&shards, files)?;
    let reports = header.iter().any(|h| h == b"split");
    let dir = output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let _reports_lock = match reports {
        true => Some(prepare_reports(output, dir, &shards, source)?),
        false => None,
    };
    // `line`: the line of the shard file the row would be on, had each row one line.
    let next_row = |reader: &mut RecordReader<_>, path: &Path, line: usize| -> Result<Option<csv::ByteRecord>> {
        match reader.next()? {
            Some(InputRecord { problem: Some(problem), .. }) => bail!("{}: {problem}", path.display()),
            Some(InputRecord { record, .. }) if record.len() != header.len() => bail!(
                "{}: data row {} has {} fields, the header {}",
                path.display(),
                line - 1,
                record.len(),
                header.len()
            ),
            Some(InputRecord { record, .. }) => Ok(Some(record)),
            None => Ok(None),
        }
    };
    let mut written = 0;
    crate::fsutil::write_atomic_with(output, |w| {
        let mut writer = csv::Writer::from_writer(w);
        writer.write_byte_record(&header)?;
        let ended = loop {
            let (reader, path) = &mut readers[written % count];
            match next_row(reader, path, written / count + 2)? {
                Some(row) => {
                    writer.write_byte_record(&row)?;
                    written += 1;
                }
                None => break *path,
            }
        };
        for (shard, (reader, path)) in readers.iter_mut().enumerate() {
            let read = written / count + usize::from(shard < written % count);
            if next_row(reader, path, read + 2)?.is_some() {
                bail!(
                    "{} ended before {} did, where one unsharded run would go on: one was cut or edited, or they \
                     come from different runs",
                    ended.display(),
                    path.display()
                );
            }
        }
        writer.flush()?;
        if reports {
            // They describe the output about to be replaced: a merge stopped before writing
            // its own leaves none rather than another merge's beside its rows.
            remove_reports(dir)?;
        }
        Ok(())
    })?;
    if reports {
        write_split_reports(dir, output, None, source)?;
    }
    Ok(written)
}

type ShardReader<'a> = (RecordReader<std::io::BufReader<std::io::Take<std::fs::File>>>, &'a Path);

/// A reader of each shard, past its header, and the header they share. Read line by line with
/// bounded rows, as any CSV: a damaged shard is an error naming its row, never a field that
/// grows with the file.
fn shard_readers<'a>(
    shards: &[&'a Path],
    files: Vec<std::io::Take<std::fs::File>>,
) -> Result<(Vec<ShardReader<'a>>, csv::ByteRecord)> {
    let mut readers = Vec::new();
    let mut header: Option<csv::ByteRecord> = None;
    for (path, file) in shards.iter().zip(files) {
        let label = path.display().to_string();
        let mut reader = RecordReader::new(std::io::BufReader::new(file), label);
        let this = reader.header()?.ok_or_else(|| anyhow!("{}: empty (no header row)", path.display()))?;
        match &header {
            Some(h) if *h != this => bail!("{}: columns differ from the other shards", path.display()),
            _ => header = Some(this),
        }
        readers.push((reader, *path));
    }
    Ok((readers, header.expect("at least one shard")))
}

/// The shard files, each opened once and checked against its record by the bytes then read: a
/// shard replaced while the merge runs is not read unchecked.
fn opened_and_checked(shards: &[(Shard, &Path)]) -> Result<Vec<std::io::Take<std::fs::File>>> {
    use std::io::Seek;
    let (mut files, mut fingerprints) = (Vec::new(), Vec::new());
    for &(shard, path) in shards {
        let label = path.display().to_string();
        let mut file = crate::fsutil::open_capped(path, &label, crate::fsutil::STREAM_FILE_CAP)?;
        fingerprints.push((shard, path, super::shards::fingerprint_of(&mut file, &label)?));
        file.get_mut().rewind().with_context(|| format!("cannot read {label}"))?;
        file.set_limit(crate::fsutil::STREAM_FILE_CAP.max_bytes);
        files.push(file);
    }
    let unrecorded = super::shards::check_records(&fingerprints)?;
    if !unrecorded.is_empty() {
        tracing::warn!(
            "none of the {} shards has a record beside it (written before records were kept, or not a shard's \
             results): not checked to be of one run, as written",
            shards.len()
        );
    }
    Ok(files)
}

/// The names of the report files a merge of whole-dataset results writes beside its output.
fn report_names() -> impl Iterator<Item = String> {
    let wrong = crate::data::SplitName::ALL
        .into_iter()
        .flat_map(|split| ["csv", "png"].map(|ext| format!("wrong_{}.{ext}", split.short())));
    wrong.chain(["metrics.json".to_string()])
}

fn remove_reports(dir: &Path) -> Result<()> {
    for report in report_names().map(|name| dir.join(name)) {
        match std::fs::remove_file(&report) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("cannot remove the earlier report {}", report.display()))
            }
            _ => {}
        }
    }
    Ok(())
}

/// The lock on the merge's report files in `dir`, once their paths are checked: every merge
/// into one folder writes the same report names, so one at a time.
fn prepare_reports(output: &Path, dir: &Path, shards: &[&Path], source: &ImageSource) -> Result<OutputLock> {
    check_report_paths(output, dir, shards)?;
    let lock = OutputLock::acquire(&dir.join("metrics.json"), "writing a merge's reports")?;
    if source.base_path().is_none() {
        tracing::warn!("no --image-base-path: the merged contact sheets show no images, only their paths");
    }
    Ok(lock)
}

/// The report files a merge of whole-dataset results writes in `dir`, beside `output`: checked before
/// anything is written (one of them named as the output would replace the merged rows).
fn check_report_paths(output: &Path, dir: &Path, shards: &[&Path]) -> Result<()> {
    let mut inputs = shards.to_vec();
    inputs.push(output);
    for name in report_names() {
        let report = dir.join(&name);
        if output.file_name() == Some(std::ffi::OsStr::new(&name)) {
            bail!(
                "--output-path {}: the merge writes its {name} report there; name the output otherwise",
                output.display()
            );
        }
        if crate::fsutil::check_output_file(&report, &inputs)? != report {
            bail!(
                "{} is a symbolic link: the merge writes its reports beside the output as files of their own",
                report.display()
            );
        }
    }
    Ok(())
}
