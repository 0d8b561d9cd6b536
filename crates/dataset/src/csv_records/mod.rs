//! CSVs we did not write (`test --csv-path`'s input, the product CSV, a corrections file),
//! read so that one malformed row costs only itself: records cut by [`RecordReader`], and a
//! whole file as a [`Table`] of its well-formed rows and the rows it left out.

mod reader;

use anyhow::{bail, Result};

pub use reader::{InputRecord, RecordReader};

/// Malformed rows warned about one by one; the rest are counted.
const MAX_SKIPPED_WARNINGS: usize = 20;

/// A row left out of a [`Table`]: where, and why.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SkippedRow {
    pub file: String,
    pub line: u64,
    pub reason: String,
}

/// A whole CSV we did not write: its header and the rows that are well-formed (each with the
/// line it starts on); malformed rows (an unbalanced quote, another number of fields than the
/// header, a line over 1 MiB) are left out and listed, so one bad row never swallows the
/// rows after it. Fields that are not UTF-8 are kept lossily and noted: a row is refused for
/// them only where a column it is read for has them ([`Table::rows_with`]).
pub struct Table {
    pub header: Vec<String>,
    rows: Vec<(u64, Vec<String>)>,
    /// Per row (by position in `rows`), the columns whose bytes were not UTF-8.
    not_utf8: std::collections::HashMap<usize, Vec<usize>>,
    pub skipped: Vec<SkippedRow>,
    file: String,
}

impl Table {
    /// Reads the regular file at `path` (at most [`imgtype_base::fsutil::CSV_FILE_CAP`]); `what`
    /// names it in errors ("product CSV").
    pub fn read(path: &std::path::Path, what: &str) -> Result<Self> {
        let label = format!("{what} {}", path.display());
        let file = imgtype_base::fsutil::open_capped(path, &label, imgtype_base::fsutil::CSV_FILE_CAP)?;
        let mut reader = RecordReader::new(std::io::BufReader::new(file), label.clone());
        let header = reader.header()?.filter(|h| h.iter().any(|f| !f.is_empty()));
        let Some(header) = header else { bail!("{label}: the file is empty (no header row)") };
        let header: Vec<String> = match header.iter().map(|f| std::str::from_utf8(f).map(str::to_string)).collect() {
            Ok(header) => header,
            Err(_) => bail!("{label}: the header row is not UTF-8 text"),
        };
        let shown = path.display().to_string();
        let mut table = Self {
            header,
            rows: Vec::new(),
            not_utf8: std::collections::HashMap::new(),
            skipped: Vec::new(),
            file: shown.clone(),
        };
        while let Some(InputRecord { record, problem }) = reader.next()? {
            let line = record.position().map_or(0, |p| p.line());
            let reason = match problem {
                Some(problem) => problem,
                None if record.len() != table.header.len() => {
                    format!("row {line} has {} fields, the header has {}", record.len(), table.header.len())
                }
                None => {
                    let bad: Vec<usize> =
                        (0..record.len()).filter(|&c| std::str::from_utf8(&record[c]).is_err()).collect();
                    if !bad.is_empty() {
                        table.not_utf8.insert(table.rows.len(), bad);
                    }
                    table.rows.push((line, record.iter().map(|f| String::from_utf8_lossy(f).into_owned()).collect()));
                    continue;
                }
            };
            table.skipped.push(SkippedRow { file: shown.clone(), line, reason });
        }
        for row in table.skipped.iter().take(MAX_SKIPPED_WARNINGS) {
            tracing::warn!("{label}: {}; the row is skipped", row.reason);
        }
        if table.skipped.len() > MAX_SKIPPED_WARNINGS {
            tracing::warn!("{label}: {} more malformed rows skipped", table.skipped.len() - MAX_SKIPPED_WARNINGS);
        }
        Ok(table)
    }

    /// The rows whose `columns` are all UTF-8 text, each with its line; a row where one of them
    /// is not is added to [`Table::skipped`] (other columns may hold any bytes).
    pub fn rows_with(&mut self, columns: &[usize]) -> Vec<(u64, Vec<String>)> {
        let mut kept = Vec::with_capacity(self.rows.len());
        for (position, (line, fields)) in std::mem::take(&mut self.rows).into_iter().enumerate() {
            let bad = self.not_utf8.get(&position).and_then(|bad| bad.iter().find(|c| columns.contains(c)));
            match bad {
                Some(&column) => {
                    let reason = format!("row {line}: its `{}` is not UTF-8 text", self.header[column]);
                    tracing::warn!("{}: {reason}; the row is skipped", self.file);
                    self.skipped.push(SkippedRow { file: self.file.clone(), line, reason });
                }
                None => kept.push((line, fields)),
            }
        }
        self.skipped.sort_by_key(|row| row.line);
        kept
    }

    /// The position of the column named `name` (a byte-order mark and spaces around ignored);
    /// a column this program reads that is named twice is an error (which would it be?).
    pub fn column(&self, name: &str) -> Result<Option<usize>> {
        let mut found =
            self.header.iter().enumerate().filter(|(_, h)| h.trim().trim_start_matches('\u{feff}').trim() == name);
        let first = found.next().map(|(i, _)| i);
        if let Some((second, _)) = found.next() {
            bail!(
                "{}: the column `{name}` is named twice (columns {} and {}); keep one",
                self.file,
                first.unwrap_or(0) + 1,
                second + 1
            );
        }
        Ok(first)
    }
}
