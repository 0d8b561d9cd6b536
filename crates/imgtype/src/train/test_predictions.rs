//! `test_predictions.csv`, every run's per-image test predictions: written at the end of
//! training, read back by the cross-validation's summary (and by users' scripts).

use std::path::Path;

use anyhow::{Context, Result};

use crate::data::ImageRecord;

/// `test_predictions.csv`: every scored test image with the best model's (calibrated)
/// probabilities: `image_path`, `product_id`, `image_type`, `predicted_class`, `prob_<class>`…
#[derive(Debug, Clone, PartialEq)]
pub struct TestPredictions {
    pub class_names: Vec<String>,
    pub rows: Vec<PredictionRow>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PredictionRow {
    pub record: ImageRecord,
    pub predicted_class: String,
    /// In the order of `class_names`.
    pub probabilities: Vec<f64>,
}

const PREDICTION_COLUMNS: [&str; 4] = ["image_path", "product_id", "image_type", "predicted_class"];

impl TestPredictions {
    pub fn write(&self, path: &Path) -> Result<()> {
        crate::fsutil::write_atomic_with(path, |w| {
            let mut csv = csv::Writer::from_writer(w);
            let probability_columns = self.class_names.iter().map(|c| format!("prob_{c}"));
            csv.write_record(PREDICTION_COLUMNS.map(String::from).into_iter().chain(probability_columns))?;
            for row in &self.rows {
                let r = &row.record;
                let fields = [&r.image_path, &r.product_id, &r.image_type, &row.predicted_class].map(|s| s.clone());
                csv.write_record(fields.into_iter().chain(row.probabilities.iter().map(|p| p.to_string())))?;
            }
            csv.flush()?;
            Ok(())
        })
    }

    pub fn read(path: &Path) -> Result<Self> {
        let mut reader = crate::fsutil::csv_reader(path, &path.display().to_string())?;
        let header = reader.headers().with_context(|| format!("{}: no header row", path.display()))?.clone();
        let starts_right = header.iter().take(4).eq(PREDICTION_COLUMNS);
        let class_names: Vec<String> = header
            .iter()
            .skip(4)
            .map(|h| h.strip_prefix("prob_").map(String::from))
            .collect::<Option<_>>()
            .unwrap_or_default();
        if !starts_right || class_names.is_empty() {
            anyhow::bail!("{}: not a test_predictions.csv (columns {:?})", path.display(), header);
        }
        let mut rows = Vec::new();
        for (index, row) in reader.records().enumerate() {
            let context = || format!("{}: row {}", path.display(), index + 2);
            let row = row.with_context(context)?;
            let probabilities = row
                .iter()
                .skip(4)
                .map(|v| v.parse::<f64>().ok().filter(|p| (0.0..=1.0).contains(p)))
                .collect::<Option<Vec<f64>>>()
                .with_context(|| format!("{}: a probability is not a number in [0, 1]", context()))?;
            if probabilities.len() != class_names.len() {
                anyhow::bail!("{}: {} probabilities for {} classes", context(), probabilities.len(), class_names.len());
            }
            let record = ImageRecord {
                image_path: row[0].to_string(),
                product_id: row[1].to_string(),
                image_type: row[2].to_string(),
            };
            rows.push(PredictionRow { record, predicted_class: row[3].to_string(), probabilities });
        }
        Ok(Self { class_names, rows })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn text() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[a-z0-9_,\"\n é/.-]{0,12}").unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
        /// Any paths, ids and class names (commas, quotes, newlines) come back as written,
        /// the probabilities exactly (written in full: confident learning compares them to 1e-6).
        #[test]
        fn what_is_written_reads_back(
            classes in proptest::collection::vec(text(), 1..4),
            rows in proptest::collection::vec((text(), text(), text(), proptest::collection::vec(0.0f64..=1.0, 3)), 0..8),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("test_predictions.csv");
            let class_names: Vec<String> = classes.iter().enumerate().map(|(i, c)| format!("{c}{i}")).collect();
            let rows: Vec<PredictionRow> = rows
                .into_iter()
                .map(|(image_path, product_id, image_type, p)| PredictionRow {
                    record: ImageRecord { image_path, product_id, image_type },
                    predicted_class: class_names[0].clone(),
                    probabilities: p[..class_names.len()].to_vec(),
                })
                .collect();
            let written = TestPredictions { class_names, rows };
            written.write(&path).unwrap();
            let read = TestPredictions::read(&path).unwrap();
            prop_assert_eq!(read.class_names, written.class_names);
            prop_assert_eq!(read.rows.len(), written.rows.len());
            for (a, b) in read.rows.iter().zip(&written.rows) {
                prop_assert_eq!(&a.record, &b.record);
                for (x, y) in a.probabilities.iter().zip(&b.probabilities) {
                    prop_assert_eq!(x, y);
                }
            }
        }

        /// Bytes that are not such a file are an error naming the file, never a panic.
        #[test]
        fn any_bytes_read_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("test_predictions.csv");
            std::fs::write(&path, &bytes).unwrap();
            if let Err(e) = TestPredictions::read(&path) {
                prop_assert!(format!("{e:#}").contains("test_predictions.csv"), "{e:#}");
            }
        }
    }

    #[test]
    fn a_probability_out_of_range_names_its_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("test_predictions.csv");
        let text = "image_path,product_id,image_type,predicted_class,prob_a,prob_b\nx.jpg,P1,a,a,0.9,0.1\ny.jpg,P2,b,a,NaN,0.2\n";
        std::fs::write(&path, text).unwrap();
        let err = format!("{:#}", TestPredictions::read(&path).unwrap_err());
        assert!(err.contains("row 3") && err.contains("not a number in [0, 1]"), "{err}");
    }
}
