//! Split CSVs (`product_id,image_path,image_type`), as `divide` writes them.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub product_id: String,
    pub image_path: String,
    pub image_type: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SplitName {
    Train,
    Validation,
    Test,
}

impl SplitName {
    pub const ALL: [SplitName; 3] = [SplitName::Train, SplitName::Validation, SplitName::Test];

    pub fn file_name(self) -> &'static str {
        match self {
            SplitName::Train => "train_data.csv",
            SplitName::Validation => "validation_data.csv",
            SplitName::Test => "test_data.csv",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SplitName::Train => "train",
            SplitName::Validation => "validation",
            SplitName::Test => "test",
        }
    }

    /// The suffix of the Python system's `wrong_<split>.csv` files.
    pub fn short(self) -> &'static str {
        match self {
            SplitName::Train => "train",
            SplitName::Validation => "valid",
            SplitName::Test => "test",
        }
    }
}

/// Reads a split CSV; every `image_type` must be one of `class_names`.
pub fn read_split_csv(path: &Path, class_names: &[String]) -> Result<Vec<ImageRecord>> {
    let reader = imgtype_base::fsutil::csv_reader(path, &format!("split CSV {}", path.display()))?;
    split_records(reader, path, class_names)
}

/// Left in a split folder by `divide` while it replaces the split files, removed once its
/// summary is written: a folder holding it has some files of the new split and some of the
/// old, which would put products in two splits.
pub const DIVIDE_UNFINISHED: &str = ".divide-unfinished";

/// The records of the split CSV `path` whose bytes `reader` reads, checked as [`read_split_csv`] does.
pub fn split_records<R: std::io::Read>(
    mut reader: csv::Reader<R>,
    path: &Path,
    class_names: &[String],
) -> Result<Vec<ImageRecord>> {
    let folder = match path.parent() {
        Some(folder) if !folder.as_os_str().is_empty() => folder.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // Also where a linked split file lies: a folder of links to a marked folder's files.
    let linked_from = std::fs::canonicalize(path).ok().and_then(|file| file.parent().map(Path::to_path_buf));
    let marked = [Some(folder), linked_from]
        .into_iter()
        .flatten()
        .find(|f| imgtype_base::fsutil::is_present(&f.join(DIVIDE_UNFINISHED)));
    if let Some(folder) = marked {
        bail!(
            "{}: a `divide` into {} did not finish (it left {DIVIDE_UNFINISHED} there), so its split files are part \
             new and part old, which would put products in two splits; run divide again",
            path.display(),
            folder.display()
        );
    }
    let headers = reader.headers().with_context(|| format!("{}: cannot read the header row", path.display()))?.clone();
    for needed in ["product_id", "image_path", "image_type"] {
        if !headers.iter().any(|h| h == needed) {
            bail!("{}: column `{needed}` missing (run `divide` to make split CSVs)", path.display());
        }
    }
    let mut records = Vec::new();
    for (index, row) in reader.deserialize::<ImageRecord>().enumerate() {
        let line = index + 2;
        let record = row.with_context(|| format!("{}: row {line} is not valid", path.display()))?;
        if !class_names.contains(&record.image_type) {
            bail!(
                "{}: row {line}: image_type `{}` is not one of the classes {:?}",
                path.display(),
                record.image_type,
                class_names
            );
        }
        records.push(record);
    }
    Ok(records)
}

/// The class index of each record's `image_type`.
pub fn class_indices(records: &[ImageRecord], class_names: &[String]) -> Result<Vec<i64>> {
    records
        .iter()
        .map(|r| match class_names.iter().position(|c| *c == r.image_type) {
            Some(index) => Ok(index as i64),
            None => bail!("{}: image_type `{}` is not one of the classes {class_names:?}", r.image_path, r.image_type),
        })
        .collect()
}
