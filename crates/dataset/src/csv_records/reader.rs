//! CSVs we did not write (`test --csv-path`'s input, the product CSV, a corrections file),
//! read so that one malformed row costs only itself.
//! The csv crate alone reads an unbalanced `"` as the start of a quoted field that runs on
//! to the end of the file, swallowing every later row into one. Here records are cut from
//! whole lines, quote-aware: a record that continues over several lines (a quoted field
//! with a line break) is kept only if it then has the header's number of fields; otherwise
//! its first line is one malformed row and reading starts again at the next line.

use std::collections::VecDeque;
use std::io::BufRead;

use anyhow::{bail, Context, Result};
use csv::ByteRecord;

/// Most lines and bytes one record may span before its first line is taken as malformed.
const MAX_RECORD_LINES: usize = 1000;
const MAX_RECORD_BYTES: usize = 1 << 20;
/// A line longer than [`MAX_RECORD_BYTES`] is a malformed row of its own (only its start is
/// kept, for the error row); one longer than this is no CSV at all, and reading stops.
const MAX_LINE_BYTES: u64 = 64 << 20;
const KEPT_OF_LONG_LINE: usize = 4096;

/// One record: its fields (with the line it starts on as its position) and what is wrong
/// with it, if the reader could tell.
pub struct InputRecord {
    pub record: ByteRecord,
    pub problem: Option<String>,
}

pub struct RecordReader<R> {
    source: R,
    /// Lines read ahead and given back after a resynchronisation, with their numbers.
    pending: VecDeque<(u64, Vec<u8>)>,
    next_line: u64,
    /// Fields in the header row, once read.
    width: Option<usize>,
    label: String,
    /// Numbers of lines longer than [`MAX_RECORD_BYTES`] (kept cut short).
    overlong: std::collections::HashSet<u64>,
}

impl<R: BufRead> RecordReader<R> {
    /// `label` names the input in errors.
    pub fn new(source: R, label: impl Into<String>) -> Self {
        Self {
            source,
            pending: VecDeque::new(),
            next_line: 1,
            width: None,
            label: label.into(),
            overlong: std::collections::HashSet::new(),
        }
    }

    /// The header row (the first record); `None` for an empty input.
    pub fn header(&mut self) -> Result<Option<ByteRecord>> {
        let header = self.next()?.map(|r| r.record);
        self.width = header.as_ref().map(ByteRecord::len);
        Ok(header)
    }

    fn line(&mut self) -> Result<Option<(u64, Vec<u8>)>> {
        if let Some(line) = self.pending.pop_front() {
            return Ok(Some(line));
        }
        let mut line = Vec::new();
        let mut length = 0u64;
        loop {
            let available = self.source.fill_buf().with_context(|| format!("cannot read {}", self.label))?;
            if available.is_empty() {
                break;
            }
            let (taken, ends) = match available.iter().position(|&b| b == b'\n') {
                Some(at) => (at + 1, true),
                None => (available.len(), false),
            };
            if line.len() <= MAX_RECORD_BYTES {
                line.extend_from_slice(&available[..taken]);
            }
            length += taken as u64;
            self.source.consume(taken);
            if length > MAX_LINE_BYTES {
                bail!(
                    "{}: line {} is longer than {MAX_LINE_BYTES} bytes (not a CSV file?)",
                    self.label,
                    self.next_line
                );
            }
            if ends {
                break;
            }
        }
        if line.is_empty() {
            return Ok(None);
        }
        let number = self.next_line;
        self.next_line += 1;
        if line.len() > MAX_RECORD_BYTES {
            line.truncate(KEPT_OF_LONG_LINE);
            self.overlong.insert(number);
        }
        Ok(Some((number, line)))
    }

    /// The next record, or `None` at the end. Blank lines are skipped, as the csv crate does.
    pub fn next(&mut self) -> Result<Option<InputRecord>> {
        let (number, first) = loop {
            match self.line()? {
                None => return Ok(None),
                Some((_, line)) if line.iter().all(|&b| b == b'\n' || b == b'\r') => continue,
                Some(line) => break line,
            }
        };
        if self.overlong.remove(&number) {
            let mut alone = FieldParser::new();
            let record = match alone.feed(&first) {
                Some(_) => alone.record(number),
                None => alone.finish(number),
            };
            let problem = format!("row {number} is longer than {MAX_RECORD_BYTES} bytes: the row is malformed");
            return Ok(Some(InputRecord { record, problem: Some(problem) }));
        }
        let mut lines = vec![(number, first)];
        let mut fields = FieldParser::new();
        let mut bytes = 0;
        let complete = loop {
            let (line_number, line) = lines.last().expect("at least the first line");
            bytes += line.len();
            if let Some(rest) = fields.feed(line) {
                // A lone `\r` ends a record, as in the csv crate: the rest is the next line.
                if rest.iter().any(|&b| b != b'\n' && b != b'\r') {
                    self.pending.push_front((*line_number, rest.to_vec()));
                }
                break true;
            }
            if lines.len() >= MAX_RECORD_LINES || bytes >= MAX_RECORD_BYTES || self.overlong.contains(line_number) {
                break false;
            }
            match self.line()? {
                Some(line) => lines.push(line),
                // The end of the file ends a last line without its newline, unless a quote is open.
                None => break fields.feed(b"\n").is_some(),
            }
        };
        let record = if complete { fields.record(number) } else { fields.finish(number) };
        let fits = self.width.is_none_or(|w| record.len() == w);
        if complete && (lines.len() == 1 || fits) {
            return Ok(Some(InputRecord { record, problem: None }));
        }
        // Resynchronise: the first line alone is the malformed row; the others are read again.
        let mut alone = FieldParser::new();
        let record = match alone.feed(&lines[0].1) {
            Some(_) => alone.record(number),
            None => alone.finish(number),
        };
        for line in lines.drain(1..).rev() {
            self.pending.push_front(line);
        }
        let problem = format!("row {number} has an unbalanced quote (`\"`): the row is malformed");
        Ok(Some(InputRecord { record, problem: Some(problem) }))
    }
}

/// The csv crate's own state machine (csv-core), fed line by line, so that the end of a
/// record is found exactly where the csv crate would find it.
struct FieldParser {
    reader: csv_core::Reader,
    output: Vec<u8>,
    ends: Vec<usize>,
    written: usize,
    fields: usize,
}

impl FieldParser {
    fn new() -> Self {
        Self { reader: csv_core::Reader::new(), output: vec![0; 1024], ends: vec![0; 16], written: 0, fields: 0 }
    }

    /// Reads `input`; `Some(rest)` once the record ended, with the bytes after its end.
    /// Empty input is the end of the file: an open record (and quote) is closed.
    fn feed<'i>(&mut self, input: &'i [u8]) -> Option<&'i [u8]> {
        let mut at = 0;
        loop {
            let (result, read, wrote, ended) =
                self.reader.read_record(&input[at..], &mut self.output[self.written..], &mut self.ends[self.fields..]);
            at += read;
            self.written += wrote;
            self.fields += ended;
            match result {
                csv_core::ReadRecordResult::InputEmpty if !input.is_empty() => return None,
                csv_core::ReadRecordResult::OutputFull => self.output.resize(self.output.len() * 2, 0),
                csv_core::ReadRecordResult::OutputEndsFull => self.ends.resize(self.ends.len() * 2, 0),
                _ => return Some(&input[at..]),
            }
        }
    }

    /// The record so far, ended as at the end of the input (an open quote closed).
    fn finish(&mut self, line: u64) -> ByteRecord {
        self.feed(&[]);
        self.record(line)
    }

    fn record(&self, line: u64) -> ByteRecord {
        let mut record = ByteRecord::new();
        let mut start = 0;
        for &end in &self.ends[..self.fields] {
            record.push_field(&self.output[start..end]);
            start = end;
        }
        let mut position = csv::Position::new();
        position.set_line(line);
        record.set_position(Some(position));
        record
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(text: &str) -> (ByteRecord, Vec<(Vec<String>, u64, Option<String>)>) {
        let mut reader = RecordReader::new(text.as_bytes(), "in.csv");
        let header = reader.header().unwrap().unwrap();
        let mut rows = Vec::new();
        while let Some(r) = reader.next().unwrap() {
            let fields = r.record.iter().map(|f| String::from_utf8_lossy(f).into_owned()).collect();
            rows.push((fields, r.record.position().unwrap().line(), r.problem));
        }
        (header, rows)
    }

    #[test]
    fn an_unbalanced_quote_costs_its_own_row_only() {
        let mut text = String::from("image_path,image_type\na.jpg,x\n\"b.jpg,x\n");
        for i in 0..298 {
            text.push_str(&format!("img{i}.jpg,x\n"));
        }
        let (header, rows) = read_all(&text);
        assert_eq!(header.len(), 2);
        assert_eq!(rows.len(), 300);
        assert!(rows[0].2.is_none());
        assert!(rows[1].2.as_deref().unwrap().contains("row 3 has an unbalanced quote"));
        assert!(rows[2..].iter().all(|r| r.2.is_none() && r.0.len() == 2), "{:?}", &rows[2..4]);
        assert_eq!(rows[299].0, vec!["img297.jpg", "x"]);
        assert_eq!(rows[299].1, 301);
    }

    #[test]
    fn quoted_fields_with_line_breaks_and_escaped_quotes_are_one_record() {
        let (_, rows) = read_all("image_path,note\r\n\"a,1.jpg\",\"two\nlines\"\r\n\"say \"\"hi\"\"\",x\n\nlast.jpg,y");
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].0, vec!["a,1.jpg", "two\nlines"]);
        assert_eq!(rows[1].0, vec!["say \"hi\"", "x"]);
        assert_eq!((rows[2].0.clone(), rows[2].1), (vec!["last.jpg".to_string(), "y".to_string()], 6));
        assert!(rows.iter().all(|r| r.2.is_none()));
    }

    #[test]
    fn a_line_over_a_mebibyte_costs_its_own_row_only() {
        let long = "x".repeat(1_100_000);
        let text = format!("image_path,t\na.jpg,1\n{long}.jpg,2\nb.jpg,3\n\"{long},4\nc.jpg,5\n");
        let (_, rows) = read_all(&text);
        let problems: Vec<Option<&str>> = rows.iter().map(|r| r.2.as_deref()).collect();
        assert_eq!(rows.len(), 5, "{problems:?}");
        assert!(problems[1].unwrap().contains("row 3 is longer than 1048576 bytes"), "{problems:?}");
        assert!(problems[3].is_some(), "{problems:?}");
        assert_eq!(
            (rows[2].0.clone(), rows[4].0.clone()),
            (vec!["b.jpg".to_string(), "3".into()], vec!["c.jpg".to_string(), "5".into()])
        );
        assert!(rows[1].0[0].len() <= 4096, "only the start of a long line is kept");
    }

    #[test]
    fn an_endless_line_is_an_error_not_a_memory_blowup() {
        let endless = std::io::BufReader::new(std::io::repeat(0));
        let mut reader = RecordReader::new(endless, "/dev/zero");
        let err = reader.header().err().unwrap().to_string();
        assert!(err.contains("line 1 is longer than"), "{err}");
    }

    #[test]
    fn quotes_inside_unquoted_fields_are_literal_as_in_the_csv_crate() {
        let (_, rows) = read_all("image_path,t\na\"b.jpg,x\nc.jpg,y\n");
        assert_eq!(rows[0].0, vec!["a\"b.jpg", "x"]);
        assert!(rows.iter().all(|r| r.2.is_none()));
    }

    #[test]
    fn an_open_quote_that_swallows_rows_of_the_right_width_is_one_record() {
        // `"a.jpg,x` + `b.jpg",y`: one quoted field with a line break, then `y`: 2 fields.
        let (_, rows) = read_all("image_path,t\n\"a.jpg,x\nb.jpg\",y\nc.jpg,z\n");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].0, vec!["a.jpg,x\nb.jpg", "y"]);
    }

    #[test]
    fn a_quote_open_at_the_end_of_the_file_costs_its_row() {
        let (_, rows) = read_all("image_path,t\na.jpg,x\nb.jpg,\"y");
        assert_eq!(rows.len(), 2);
        assert!(rows[1].2.as_deref().unwrap().contains("row 3 has an unbalanced quote"));
        let (_, rows) = read_all("image_path,t\na.jpg,x\n\"b.jpg,y\nc.jpg,z\n");
        assert_eq!(rows.iter().map(|r| r.2.is_some()).collect::<Vec<_>>(), vec![false, true, false]);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn field() -> impl Strategy<Value = String> {
            proptest::string::string_regex("[a-z0-9 ,\"\n\r./-]{0,8}").unwrap()
        }

        fn read_with_csv_crate(bytes: &[u8]) -> Vec<Vec<Vec<u8>>> {
            let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(bytes);
            reader.byte_records().map(|r| r.unwrap().iter().map(<[u8]>::to_vec).collect()).collect()
        }

        fn read_with_ours(bytes: &[u8]) -> Vec<(Vec<Vec<u8>>, bool)> {
            let mut reader = RecordReader::new(bytes, "in.csv");
            let mut rows = Vec::new();
            if let Some(header) = reader.header().unwrap() {
                rows.push((header.iter().map(<[u8]>::to_vec).collect(), false));
            }
            while let Some(r) = reader.next().unwrap() {
                rows.push((r.record.iter().map(<[u8]>::to_vec).collect(), r.problem.is_some()));
            }
            rows
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

            /// Differential: on any CSV the csv crate writes, we read what the csv crate reads.
            #[test]
            fn well_formed_csvs_read_as_the_csv_crate_reads_them(
                rows in proptest::collection::vec(proptest::collection::vec(field(), 3), 1..12),
                crlf in any::<bool>(),
            ) {
                let terminator = if crlf { csv::Terminator::CRLF } else { csv::Terminator::Any(b'\n') };
                let mut writer = csv::WriterBuilder::new().terminator(terminator).from_writer(Vec::new());
                for row in &rows {
                    writer.write_record(row).unwrap();
                }
                let bytes = writer.into_inner().unwrap();
                let ours = read_with_ours(&bytes);
                let theirs = read_with_csv_crate(&bytes);
                prop_assert_eq!(ours.iter().map(|(r, _)| r.clone()).collect::<Vec<_>>(), theirs);
                prop_assert!(ours.iter().all(|(_, bad)| !bad));
            }

            /// A stray `"` at the start of one row of single-line rows costs that row only.
            #[test]
            fn a_stray_quote_costs_one_row(
                rows in proptest::collection::vec(proptest::collection::vec("[a-z0-9./]{1,6}", 3), 2..30),
                at in any::<prop::sample::Index>(),
            ) {
                let bad = at.index(rows.len() - 1) + 1;
                let mut text = String::new();
                for (i, row) in rows.iter().enumerate() {
                    text.push_str(if i == bad { "\"" } else { "" });
                    text.push_str(&row.join(","));
                    text.push('\n');
                }
                let ours = read_with_ours(text.as_bytes());
                prop_assert_eq!(ours.len(), rows.len());
                for (i, (fields, problem)) in ours.iter().enumerate() {
                    if i != bad {
                        let expected: Vec<Vec<u8>> = rows[i].iter().map(|f| f.as_bytes().to_vec()).collect();
                        prop_assert_eq!(fields, &expected);
                    }
                    prop_assert_eq!(*problem, i == bad);
                }
            }

            /// Any bytes: records, never a panic.
            #[test]
            fn any_bytes_are_read_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
                let _ = read_with_ours(&bytes);
            }
        }
    }
}
