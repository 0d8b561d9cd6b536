//! `divide --relabel corrections.csv`: reviewed fixes applied when the split is made, without
//! editing the product CSV. Each row names an image (`image_path`, as in the product CSV) and
//! its class (`image_type`), or `drop` to leave the image out. What changed is listed in
//! `data_split_summary.json`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Result};
use serde::Serialize;

use super::csv_records::{SkippedRow, Table};
use super::product::{Product, IMAGE_COLUMNS};

/// The value of `image_type` that leaves an image out.
pub const DROP: &str = "drop";

/// What a corrections file asks for, by image path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Correction {
    Relabel(String),
    Drop,
}

/// The classes images can be filed under (those of the product CSV's columns).
pub fn known_classes() -> Vec<&'static str> {
    let mut classes: Vec<&str> = IMAGE_COLUMNS.iter().map(|(_, class)| *class).collect();
    classes.sort();
    classes.dedup();
    classes
}

/// A corrections file's corrections by image path, and its rows left out as malformed.
pub struct Corrections {
    pub by_path: BTreeMap<String, Correction>,
    pub skipped: Vec<SkippedRow>,
}

/// Reads a corrections CSV: columns `image_path` and `image_type` (others are ignored, so a
/// reviewed `label_issues.csv` with an added `image_type` column works as it is). A malformed
/// row (an unbalanced quote in a notes column, say) is skipped with a warning and listed.
pub fn read_corrections(path: &Path) -> Result<Corrections> {
    let mut table = Table::read(path, "corrections CSV")?;
    let (Some(path_col), Some(type_col)) = (table.column("image_path")?, table.column("image_type")?) else {
        bail!(
            "{}: a corrections CSV needs the columns image_path and image_type (found: {})",
            path.display(),
            table.header.join(", ")
        );
    };
    let classes = known_classes();
    let mut corrections = BTreeMap::new();
    for (line, row) in &table.rows_with(&[path_col, type_col]) {
        let image = row[path_col].trim();
        let value = row[type_col].trim();
        if image.is_empty() {
            bail!("{}: row {line} has an empty image_path", path.display());
        }
        let correction = if value.eq_ignore_ascii_case(DROP) {
            Correction::Drop
        } else if classes.contains(&value) {
            Correction::Relabel(value.to_string())
        } else {
            bail!(
                "{}: row {line} ({}): image_type `{}` is neither a class ({}) nor `{DROP}`",
                path.display(),
                image.escape_debug(),
                value.escape_debug(),
                classes.join(", ")
            );
        };
        if let Some(earlier) = corrections.insert(image.to_string(), correction.clone()) {
            if earlier != correction {
                bail!("{}: row {line}: {} is corrected twice, differently", path.display(), image.escape_debug());
            }
        }
    }
    Ok(Corrections { by_path: corrections, skipped: table.skipped })
}

/// One image whose class a correction changed, or that it left out.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppliedCorrection {
    pub product_id: String,
    pub image_path: String,
    pub from: String,
    /// The new class, or `drop`.
    pub to: String,
}

/// `data_split_summary.json`'s `relabel`: the file, what it changed, and its rows that
/// matched no image of the product CSV.
#[derive(Debug, Clone, Serialize)]
pub struct RelabelSummary {
    pub corrections_file: String,
    pub relabelled: Vec<AppliedCorrection>,
    pub dropped: Vec<AppliedCorrection>,
    pub unmatched: Vec<String>,
}

/// Applies `corrections` to every image they name (a photo filed under several products is
/// corrected in each); a correction to the class an image already has changes nothing.
pub fn apply_corrections(
    products: &mut [Product],
    corrections: &BTreeMap<String, Correction>,
    file: &Path,
) -> RelabelSummary {
    let mut summary = RelabelSummary {
        corrections_file: file.display().to_string(),
        relabelled: Vec::new(),
        dropped: Vec::new(),
        unmatched: Vec::new(),
    };
    let mut matched = std::collections::BTreeSet::new();
    for product in products.iter_mut() {
        product.images.retain_mut(|image| {
            let Some(correction) = corrections.get(&image.path) else { return true };
            matched.insert(image.path.clone());
            let applied = |to: &str| AppliedCorrection {
                product_id: product.id.clone(),
                image_path: image.path.clone(),
                from: image.image_type.clone(),
                to: to.to_string(),
            };
            match correction {
                Correction::Drop => {
                    summary.dropped.push(applied(DROP));
                    false
                }
                Correction::Relabel(class) if *class != image.image_type => {
                    summary.relabelled.push(applied(class));
                    image.image_type = class.clone();
                    true
                }
                Correction::Relabel(_) => true,
            }
        });
    }
    summary.unmatched = corrections.keys().filter(|path| !matched.contains(*path)).cloned().collect();
    for path in &summary.unmatched {
        tracing::warn!("{}: {path} is no image of the product CSV; nothing to correct", file.display());
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::product::ProductImage;

    fn product(id: &str, images: &[(&str, &str)]) -> Product {
        Product {
            id: id.into(),
            category: "shirt".into(),
            images: images
                .iter()
                .map(|(path, class)| ProductImage { path: path.to_string(), image_type: class.to_string() })
                .collect(),
        }
    }

    fn corrections(text: &str) -> Result<BTreeMap<String, Correction>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("corrections.csv");
        std::fs::write(&path, text).unwrap();
        read_corrections(&path).map(|c| c.by_path)
    }

    #[test]
    fn relabels_drops_and_lists_what_it_did() {
        let fixes = corrections(
            "image_path,image_type,note\na.jpg,care_label,seen\nb.jpg,DROP,\nshared.jpg,neck_label,\nnowhere.jpg,drop,\n",
        )
        .unwrap();
        let mut products = vec![
            product("1", &[("a.jpg", "detail_shot"), ("b.jpg", "full_shot"), ("shared.jpg", "full_shot")]),
            product("2", &[("shared.jpg", "full_shot"), ("c.jpg", "full_shot")]),
        ];
        let summary = apply_corrections(&mut products, &fixes, Path::new("corrections.csv"));
        assert_eq!(
            products[0].images.iter().map(|i| i.image_type.as_str()).collect::<Vec<_>>(),
            ["care_label", "neck_label"]
        );
        assert_eq!(products[1].images[0].image_type, "neck_label", "the shared photo is corrected in both products");
        assert_eq!(summary.relabelled.len(), 3);
        assert_eq!(
            summary.dropped,
            [AppliedCorrection {
                product_id: "1".into(),
                image_path: "b.jpg".into(),
                from: "full_shot".into(),
                to: "drop".into()
            }]
        );
        assert_eq!(summary.unmatched, ["nowhere.jpg"]);
    }

    #[test]
    fn bad_corrections_name_the_file_row_and_value() {
        let error = corrections("image_path,image_type\na.jpg,care_label\nb.jpg,shoe\n").unwrap_err().to_string();
        assert!(error.contains("row 3") && error.contains("`shoe`") && error.contains("care_label"), "{error}");
        let error = corrections("path,label\na.jpg,care_label\n").unwrap_err().to_string();
        assert!(error.contains("image_path and image_type") && error.contains("path, label"), "{error}");
        let error = corrections("image_path,image_type\n,care_label\n").unwrap_err().to_string();
        assert!(error.contains("row 2 has an empty image_path"), "{error}");
        let error = corrections("image_path,image_type\na.jpg,care_label\na.jpg,drop\n").unwrap_err().to_string();
        assert!(error.contains("row 3") && error.contains("corrected twice"), "{error}");
        assert!(corrections("image_path,image_type\na.jpg,care_label\na.jpg,care_label\n").is_ok(), "repeats agree");
        let error = corrections("image_path,image_type,image_type\na.jpg,detail_shot,drop\n").unwrap_err().to_string();
        assert!(error.contains("`image_type` is named twice (columns 2 and 3)"), "{error}");
        let error = corrections("image_path,image_type\na.jpg,detail_shot\u{0}\n").unwrap_err().to_string();
        assert!(error.contains("`detail_shot\\0`"), "a control character is shown escaped: {error}");
    }

    #[test]
    fn an_unbalanced_quote_in_a_notes_column_costs_its_own_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("corrections.csv");
        let mut text =
            String::from("image_path,image_type,note\na.jpg,care_label,\"fine\"\nb.jpg,drop,\"5 inch, see photo\n");
        for i in 0..50 {
            text.push_str(&format!("img{i}.jpg,neck_label,ok\n"));
        }
        std::fs::write(&path, text).unwrap();
        let read = read_corrections(&path).unwrap();
        assert_eq!(read.by_path.len(), 51, "the rows after the bad one are read");
        assert_eq!(read.skipped.len(), 1);
        assert_eq!(read.skipped[0].line, 3);
        assert!(read.skipped[0].reason.contains("unbalanced quote"), "{:?}", read.skipped);
        assert!(!read.by_path.contains_key("b.jpg"));
    }

    #[test]
    fn bytes_that_are_not_utf8_cost_the_row_only_where_a_used_column_has_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("corrections.csv");
        let mut bytes = b"image_path,image_type,note\na.jpg,care_label,caf\xe9\n".to_vec();
        bytes.extend_from_slice(b"b\xff.jpg,drop,x\nc.jpg,neck_label,\n");
        std::fs::write(&path, bytes).unwrap();
        let read = read_corrections(&path).unwrap();
        assert_eq!(read.by_path.keys().collect::<Vec<_>>(), ["a.jpg", "c.jpg"], "a bad note keeps its row");
        assert_eq!(read.skipped.len(), 1);
        assert!(
            read.skipped[0].line == 3 && read.skipped[0].reason.contains("`image_path` is not UTF-8"),
            "{:?}",
            read.skipped
        );
    }

    #[test]
    fn devices_and_fifos_are_refused_without_reading() {
        for special in ["/dev/zero", "/dev/null"] {
            let error = format!("{:#}", read_corrections(Path::new(special)).err().unwrap());
            assert!(error.contains("not a regular file") || error.contains("empty"), "{error}");
        }
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.csv");
        let name = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        let error = format!("{:#}", read_corrections(&fifo).err().unwrap());
        assert!(error.contains("not a regular file"), "{error}");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn value() -> impl Strategy<Value = String> {
            prop_oneof![
                prop::sample::select(vec!["care_label", "detail_shot", "full_shot", "neck_label", "drop", "DROP"])
                    .prop_map(String::from),
                "\\PC{0,12}",
            ]
        }

        fn read_bytes(bytes: &[u8]) -> Result<BTreeMap<String, Correction>> {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("corrections.csv");
            std::fs::write(&path, bytes).unwrap();
            read_corrections(&path).map(|c| c.by_path)
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

            /// Differential: on any file the csv crate writes, each row is read as the rules
            /// say (a class, `drop` in any case, else an error naming that row), paths with
            /// commas, quotes and line breaks included.
            #[test]
            fn written_corrections_read_as_the_rules_say(
                rows in proptest::collection::vec(("\\PC{1,16}", value()), 1..10),
            ) {
                let mut writer = csv::Writer::from_writer(Vec::new());
                writer.write_record(["image_path", "image_type"]).unwrap();
                for (path, value) in &rows {
                    writer.write_record([path, value]).unwrap();
                }
                let read = read_bytes(&writer.into_inner().unwrap());
                let classes = known_classes();
                let mut expected = BTreeMap::new();
                let mut failure = None;
                for (line, (path, value)) in rows.iter().enumerate().map(|(i, row)| (i + 2, row)) {
                    let (path, value) = (path.trim(), value.trim());
                    let correction = if path.is_empty() {
                        failure = Some(format!("row {line} has an empty image_path"));
                        break;
                    } else if value.eq_ignore_ascii_case(DROP) {
                        Correction::Drop
                    } else if classes.contains(&value) {
                        Correction::Relabel(value.to_string())
                    } else {
                        failure = Some(format!("row {line} ("));
                        break;
                    };
                    if expected.insert(path.to_string(), correction.clone()).is_some_and(|earlier| earlier != correction) {
                        failure = Some(format!("row {line}: "));
                        break;
                    }
                }
                match (read, failure) {
                    (Ok(read), None) => prop_assert_eq!(read, expected),
                    (Err(error), Some(needle)) => {
                        let message = error.to_string();
                        prop_assert!(message.contains(&needle) && message.contains("corrections.csv"), "{message} lacks {needle}");
                    }
                    (read, failure) => prop_assert!(false, "read {read:?}, expected failure {failure:?}"),
                }
            }

            /// Any bytes at all: an answer or an error naming the file, never a panic.
            #[test]
            fn any_bytes_are_read_or_refused(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
                if let Err(error) = read_bytes(&bytes) {
                    prop_assert!(error.to_string().contains("corrections.csv"), "{error}");
                }
            }
        }
    }
}
