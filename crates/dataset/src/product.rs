//! The product-level CSV (`image_data.csv`): one row per product, photos in type columns.

use std::path::Path;

use anyhow::{bail, Result};

use super::csv_records::{SkippedRow, Table};
use imgtype_images::records::{ImageRecord, SplitName};

/// Which column holds which class, as in the Python system.
pub const IMAGE_COLUMNS: [(&str, &str); 5] = [
    ("main_image", "full_shot"),
    ("back_image", "full_shot"),
    ("text_tag_image", "care_label"),
    ("neck_tag_image", "neck_label"),
    ("other", "detail_shot"),
];

#[derive(Debug, Clone, PartialEq)]
pub struct ProductImage {
    pub path: String,
    pub image_type: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Product {
    pub id: String,
    pub category: String,
    pub images: Vec<ProductImage>,
}

/// Splits a cell holding one or more paths joined by `&` or `,`; empty parts and `nan` are skipped.
pub fn split_cell(cell: &str) -> Vec<String> {
    cell.split(['&', ','])
        .map(str::trim)
        .filter(|p| !p.is_empty() && !p.eq_ignore_ascii_case("nan") && !p.eq_ignore_ascii_case("none"))
        .map(str::to_string)
        .collect()
}

/// The product CSV's products, and its rows that were left out as malformed.
pub struct ProductTable {
    pub products: Vec<Product>,
    pub skipped: Vec<SkippedRow>,
}

/// Reads the product CSV; `id` and `category_name` are required, image columns optional
/// (at least one must be present). A malformed row (an unbalanced quote, a wrong number of
/// fields) is skipped with a warning and listed; an empty id or category, or an id given
/// twice, is an error naming the row.
pub fn read_products(path: &Path) -> Result<ProductTable> {
    let mut table = Table::read(path, "product CSV")?;
    let (Some(id_col), Some(category_col)) = (table.column("id")?, table.column("category_name")?) else {
        let missing: Vec<&str> =
            ["id", "category_name"].into_iter().filter(|c| table.column(c).is_ok_and(|i| i.is_none())).collect();
        bail!(
            "{}: required column(s) {} missing (columns found: {})",
            path.display(),
            missing.join(", "),
            table.header.join(", ")
        );
    };
    let mut image_cols: Vec<(usize, &str)> = Vec::new();
    for (name, class) in IMAGE_COLUMNS {
        if let Some(column) = table.column(name)? {
            image_cols.push((column, class));
        }
    }
    if image_cols.is_empty() {
        bail!(
            "{}: no image columns; expected some of {}",
            path.display(),
            IMAGE_COLUMNS.iter().map(|c| c.0).collect::<Vec<_>>().join(", ")
        );
    }
    let mut used: Vec<usize> = image_cols.iter().map(|(col, _)| *col).collect();
    used.extend([id_col, category_col]);
    let rows = table.rows_with(&used);
    let mut products = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (line, row) in &rows {
        let id = row[id_col].trim().to_string();
        if id.is_empty() || id.eq_ignore_ascii_case("nan") {
            bail!("{}: row {line} has an empty `id`", path.display());
        }
        if !seen.insert(id.clone()) {
            bail!("{}: row {line}: product id `{id}` appears more than once", path.display());
        }
        let category = row[category_col].trim().to_string();
        if category.is_empty() || category.eq_ignore_ascii_case("nan") {
            bail!("{}: row {line} (product `{id}`) has an empty `category_name`", path.display());
        }
        let mut images = Vec::new();
        for &(col, class) in &image_cols {
            for p in split_cell(&row[col]) {
                images.push(ProductImage { path: p, image_type: class.to_string() });
            }
        }
        products.push(Product { id, category, images });
    }
    Ok(ProductTable { products, skipped: table.skipped })
}

/// Products divided into the three splits.
pub struct Split {
    pub train: Vec<Product>,
    pub validation: Vec<Product>,
    pub test: Vec<Product>,
}

impl Split {
    pub fn part(&self, name: SplitName) -> &[Product] {
        match name {
            SplitName::Train => &self.train,
            SplitName::Validation => &self.validation,
            SplitName::Test => &self.test,
        }
    }
}

/// One record per photo of `products`, in order.
pub fn image_records(products: &[Product]) -> Vec<ImageRecord> {
    products
        .iter()
        .flat_map(|p| {
            p.images.iter().map(|img| ImageRecord {
                product_id: p.id.clone(),
                image_path: img.path.clone(),
                image_type: img.image_type.clone(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_split_on_ampersand_and_comma_and_skip_nan() {
        assert_eq!(split_cell("a.jpg&b.jpg"), vec!["a.jpg", "b.jpg"]);
        assert_eq!(split_cell("a.jpg, b.jpg"), vec!["a.jpg", "b.jpg"]);
        assert!(split_cell("nan").is_empty());
        assert!(split_cell("  ").is_empty());
        assert_eq!(split_cell("a&&nan&c"), vec!["a", "c"]);
    }

    fn read_bytes(bytes: &[u8]) -> Result<ProductTable> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("products.csv");
        std::fs::write(&path, bytes).unwrap();
        read_products(&path)
    }

    #[test]
    fn a_malformed_row_is_skipped_and_the_rows_after_it_are_read() {
        let mut text = String::from("id,category_name,main_image\np1,top,a.jpg\n\"p2,top,b.jpg\np3,top\n");
        for i in 4..40 {
            text.push_str(&format!("p{i},top,m{i}.jpg\n"));
        }
        let table = read_bytes(text.as_bytes()).unwrap();
        assert_eq!(table.products.len(), 37);
        let lines: Vec<u64> = table.skipped.iter().map(|s| s.line).collect();
        assert_eq!(lines, [3, 4]);
        assert!(table.skipped[0].reason.contains("unbalanced quote"), "{:?}", table.skipped);
        assert!(table.skipped[1].reason.contains("2 fields, the header has 3"), "{:?}", table.skipped);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

            /// Differential: a product CSV the csv crate writes (commas, quotes, line breaks
            /// in any cell) reads back product for product, nothing skipped.
            #[test]
            fn written_product_csvs_read_back_whole(
                rows in proptest::collection::vec(("[a-z0-9]{1,6}", "[a-z ,\"\n]{1,8}", "[a-z0-9./\"\n]{1,12}"), 1..12),
            ) {
                let mut writer = csv::Writer::from_writer(Vec::new());
                writer.write_record(["id", "category_name", "main_image"]).unwrap();
                let mut expected = Vec::new();
                let mut seen = std::collections::HashSet::new();
                for (i, (id, category, image)) in rows.iter().enumerate() {
                    let id = format!("{id}{i}");
                    writer.write_record([&id, category, image]).unwrap();
                    seen.insert(id.clone());
                    expected.push((id, category.trim().to_string(), split_cell(image)));
                }
                let bytes = writer.into_inner().unwrap();
                match read_bytes(&bytes) {
                    Ok(table) => {
                        prop_assert!(table.skipped.is_empty(), "{:?}", table.skipped);
                        let read: Vec<_> = table.products.iter().map(|p| {
                            (p.id.clone(), p.category.clone(), p.images.iter().map(|i| i.path.clone()).collect::<Vec<_>>())
                        }).collect();
                        prop_assert_eq!(read, expected);
                    }
                    // An empty category after trimming is refused, naming the row.
                    Err(error) => prop_assert!(
                        expected.iter().any(|(_, c, _)| c.is_empty()) && error.to_string().contains("empty `category_name`"),
                        "{error:#}"
                    ),
                }
            }

            /// Any bytes: products, or an error naming the file; never a panic.
            #[test]
            fn any_bytes_are_read_or_refused(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
                if let Err(error) = read_bytes(&bytes) {
                    prop_assert!(error.to_string().contains("products.csv"), "{error:#}");
                }
            }
        }
    }
}
