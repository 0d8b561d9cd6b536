//! `divide`: product-level, category-stratified train / validation / test split.
//!
//! All images of a product land in one split. Within each category of 3 or more
//! products the products are shuffled and cut by the largest-remainder method, so
//! every split is within one product of its ratio per category. Categories with
//! fewer than 3 products are pooled and split at random the same way. The RNG is
//! ChaCha8 seeded by `random_state`: the same seed gives the same files everywhere.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::duplicates::{self, duplicate_groups, linked_products};
use super::product::{image_records, read_products, Product, Split};
use super::relabel::{apply_corrections, read_corrections};
pub use super::split_summary::{Counts, DroppedImage, SplitInfo, SplitSummary};
use imgtype_images::records::{SplitName, DIVIDE_UNFINISHED};

/// Categories smaller than this are pooled and split at random.
pub const MIN_STRATIFIED_PRODUCTS: usize = 3;

#[derive(Debug, Clone)]
pub struct DivideOptions {
    pub input_file: PathBuf,
    pub output_dir: PathBuf,
    pub train_ratio: f64,
    pub val_ratio: f64,
    pub test_ratio: f64,
    pub random_state: u64,
    /// Drop images that are missing or cannot be decoded (checked on disk).
    pub validate_images: bool,
    pub image_base_path: Option<PathBuf>,
    /// Reviewed corrections (`image_path`, `image_type` or `drop`) applied before splitting.
    pub relabel: Option<PathBuf>,
    /// Find photos shared between products and keep their products in one split: `Some(bits)`
    /// finds exact copies and near-duplicates within `bits` of the structure hash (0: copies only).
    pub find_duplicates: Option<u32>,
    /// The config the options came from, if any: an input no output may replace.
    pub config_file: Option<PathBuf>,
}

pub fn check_ratios(train: f64, val: f64, test: f64) -> Result<()> {
    for (name, r) in [("--train-ratio", train), ("--val-ratio", val), ("--test-ratio", test)] {
        if !(0.0..=1.0).contains(&r) {
            bail!("{name} must be between 0 and 1, got {r}");
        }
    }
    if !imgtype_base::config::ratios_sum_to_one([train, val, test]) {
        bail!("ratios must sum to 1, got {train} + {val} + {test} = {}", train + val + test);
    }
    Ok(())
}

/// How many of `n` items each split gets: floors, then the leftovers to the largest remainders.
pub fn allocate(n: usize, ratios: [f64; 3]) -> [usize; 3] {
    let ideal = ratios.map(|r| r * n as f64);
    let mut counts = ideal.map(|x| x.floor() as usize);
    let mut left = n - counts.iter().sum::<usize>();
    let mut order = [0usize, 1, 2];
    order.sort_by(|&a, &b| (ideal[b] - ideal[b].floor()).total_cmp(&(ideal[a] - ideal[a].floor())).then(a.cmp(&b)));
    for &i in order.iter().cycle() {
        if left == 0 {
            break;
        }
        if ratios[i] > 0.0 {
            counts[i] += 1;
            left -= 1;
        }
    }
    counts
}

/// Splits products by category, each cluster of product indices (products sharing a photo)
/// kept in one split and counted as one product of its first member's category (one product
/// per cluster when there are no duplicates); deterministic for a given seed and input order.
pub fn split_linked_products(products: &[Product], clusters: &[Vec<usize>], ratios: [f64; 3], seed: u64) -> Split {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut by_category: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (unit, members) in clusters.iter().enumerate() {
        by_category.entry(products[members[0]].category.as_str()).or_default().push(unit);
    }
    let mut assignment = vec![SplitName::Train; clusters.len()];
    let mut small_pool = Vec::new();
    let mut assign = |indices: &mut Vec<usize>, rng: &mut ChaCha8Rng| {
        indices.shuffle(rng);
        let [n_train, n_val, _] = allocate(indices.len(), ratios);
        for (k, &i) in indices.iter().enumerate() {
            assignment[i] = if k < n_train {
                SplitName::Train
            } else if k < n_train + n_val {
                SplitName::Validation
            } else {
                SplitName::Test
            };
        }
    };
    for indices in by_category.values_mut() {
        if indices.len() >= MIN_STRATIFIED_PRODUCTS {
            assign(indices, &mut rng);
        } else {
            small_pool.extend(indices.iter().copied());
        }
    }
    small_pool.sort_unstable();
    if !small_pool.is_empty() {
        assign(&mut small_pool, &mut rng);
    }
    let mut product_split = vec![SplitName::Train; products.len()];
    for (members, name) in clusters.iter().zip(assignment) {
        members.iter().for_each(|&m| product_split[m] = name);
    }
    let mut split = Split { train: Vec::new(), validation: Vec::new(), test: Vec::new() };
    for (product, name) in products.iter().zip(product_split) {
        match name {
            SplitName::Train => split.train.push(product.clone()),
            SplitName::Validation => split.validation.push(product.clone()),
            SplitName::Test => split.test.push(product.clone()),
        }
    }
    split
}

/// Fails if any product id is in two splits.
pub fn verify_no_leak(split: &Split) -> Result<()> {
    let mut owner: HashMap<&str, SplitName> = HashMap::new();
    for name in SplitName::ALL {
        for p in split.part(name) {
            if let Some(other) = owner.insert(&p.id, name) {
                bail!("product `{}` is in both {} and {}", p.id, other.as_str(), name.as_str());
            }
        }
    }
    Ok(())
}

/// Removes images that are missing or undecodable; returns what was dropped and why.
fn drop_unreadable_images(products: &mut [Product], base: Option<&Path>) -> Vec<DroppedImage> {
    let source = imgtype_images::ImageSource::local(base.map(Path::to_path_buf));
    let mut dropped = Vec::new();
    for product in products.iter_mut() {
        product.images.retain(|img| match source.check_readable(&img.path) {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!("product {}: dropping image {}: {e:#}", product.id, img.path);
                dropped.push(DroppedImage {
                    product_id: product.id.clone(),
                    image_path: img.path.clone(),
                    reason: format!("{e:#}"),
                });
                false
            }
        });
    }
    dropped
}

/// Runs the whole `divide` step and returns the summary it wrote.
pub fn divide(options: &DivideOptions) -> Result<SplitSummary> {
    check_ratios(options.train_ratio, options.val_ratio, options.test_ratio)?;
    check_outputs(options)?;
    let table = read_products(&options.input_file)?;
    let mut skipped_rows = table.skipped;
    let mut products = table.products;
    if products.is_empty() {
        bail!("{}: no products (the CSV has a header but no usable rows)", options.input_file.display());
    }
    let relabel = match &options.relabel {
        Some(file) => {
            let corrections = read_corrections(file)?;
            skipped_rows.extend(corrections.skipped);
            Some(apply_corrections(&mut products, &corrections.by_path, file))
        }
        None => None,
    };
    let dropped = if options.validate_images {
        drop_unreadable_images(&mut products, options.image_base_path.as_deref())
    } else {
        Vec::new()
    };
    let before = products.len();
    products.retain(|p| !p.images.is_empty());
    if products.len() < before {
        tracing::warn!("{} product(s) have no usable image and are left out", before - products.len());
    }
    if products.is_empty() {
        bail!("{}: no product has an image", options.input_file.display());
    }
    let ratios = [options.train_ratio, options.val_ratio, options.test_ratio];
    let groups = match options.find_duplicates {
        Some(bits) => {
            let source = imgtype_images::ImageSource::local(options.image_base_path.clone());
            let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
            duplicate_groups(&products, &source, workers, Some(bits).filter(|&b| b > 0))
        }
        None => Vec::new(),
    };
    let clusters = linked_products(products.len(), &groups);
    let split = split_linked_products(&products, &clusters, ratios, options.random_state);
    verify_no_leak(&split)?;
    warn_about_empty_splits(&split, ratios, products.len(), clusters.len());
    // Until it ends: a second `divide` into the folder stops at once; a killed one's temp files go.
    let outputs: Vec<&str> = output_files().collect();
    let _locks = imgtype_base::fsutil::lock_outputs(&options.output_dir, &outputs, "dividing into it")?;
    let unfinished = Unfinished::begin(&options.output_dir)?;
    let tables = write_split_files(&split, &options.output_dir)?;
    let duplicates = match options.find_duplicates {
        Some(_) => Some(duplicates::report(&products, &groups, &split, &options.output_dir)?),
        None => {
            duplicates::remove_stale_report(&options.output_dir);
            None
        }
    };
    let categories: BTreeSet<String> = products.iter().map(|p| p.category.clone()).collect();
    let summary = SplitSummary {
        split_info: split_info(options),
        data_counts: tables.data_counts,
        file_paths: tables.file_paths,
        categories: categories.into_iter().collect(),
        image_type_distribution: tables.image_type_distribution,
        category_distribution: tables.category_distribution,
        dropped_images: dropped,
        skipped_rows,
        relabel,
        duplicates,
    };
    imgtype_base::fsutil::write_json_atomic(&options.output_dir.join(SUMMARY_FILE), &summary)?;
    unfinished.finish()?;
    Ok(summary)
}

/// The files `divide` writes into the output folder.
pub const SUMMARY_FILE: &str = "data_split_summary.json";

/// Before any work: no file `divide` writes (or removes, as a stale `duplicates.csv`) may be
/// one it reads, also through a link, and none may be a folder or a special file.
fn check_outputs(options: &DivideOptions) -> Result<()> {
    let inputs: Vec<&Path> = std::iter::once(options.input_file.as_path())
        .chain(options.relabel.as_deref())
        .chain(options.config_file.as_deref())
        .collect();
    for name in output_files() {
        imgtype_base::fsutil::check_output_file(&options.output_dir.join(name), &inputs)
            .with_context(|| format!("divide writes {name} into the output folder {}", options.output_dir.display()))?;
    }
    Ok(())
}

/// What `divide` writes into its output folder (or removes: a stale `duplicates.csv`).
fn output_files() -> impl Iterator<Item = &'static str> {
    SplitName::ALL.map(SplitName::file_name).into_iter().chain([SUMMARY_FILE, duplicates::REPORT_FILE])
}

/// Marks `output_dir` as holding a split set being replaced, until [`Self::finish`]: a
/// `divide` that stops between its files leaves some new and some old, and every reader of
/// split files refuses them ([`DIVIDE_UNFINISHED`]) until `divide` runs again.
struct Unfinished(std::path::PathBuf);

impl Unfinished {
    fn begin(output_dir: &Path) -> Result<Self> {
        let marker = output_dir.join(DIVIDE_UNFINISHED);
        let began = chrono::Local::now().to_rfc3339();
        let text = format!("a divide into this folder began at {began} and has not finished; run divide again\n");
        imgtype_base::fsutil::write_atomic(&marker, text.as_bytes())?;
        Ok(Self(marker))
    }

    fn finish(self) -> Result<()> {
        std::fs::remove_file(&self.0).with_context(|| format!("cannot remove {}", self.0.display()))
    }
}

/// A split the ratios ask for that came out empty, or far from its ratio, said once: it
/// happens when products sharing photos are linked into a few large clusters (each cluster
/// goes to one split).
fn warn_about_empty_splits(split: &Split, ratios: [f64; 3], products: usize, clusters: usize) {
    // Without linked products (no shared photos, or none looked for) the only cause is too few
    // products; with them, the groups that must stay together.
    let why = if clusters < products {
        format!(
            "the {products} products form {clusters} group(s) that must stay together (products sharing a photo \
             go to one split, listed in duplicates.csv); a photo shared by many products (a placeholder?) links \
             them all"
        )
    } else {
        format!("{products} product(s) are too few to split by these ratios")
    };
    for (name, ratio) in SplitName::ALL.into_iter().zip(ratios) {
        let share = split.part(name).len() as f64 / products.max(1) as f64;
        if ratio > 0.0 && split.part(name).is_empty() {
            tracing::warn!("the {} split is empty: {why}", name.as_str());
        } else if (share - ratio).abs() > MAX_RATIO_DEVIATION {
            tracing::warn!(
                "the {} split holds {:.0}% of the products, not {:.0}%: {why}",
                name.as_str(),
                share * 100.0,
                ratio * 100.0
            );
        }
    }
}

/// How far (as a share of the products) a split may come out from its ratio before it is said.
const MAX_RATIO_DEVIATION: f64 = 0.1;

/// What each split holds, by split name.
struct SplitTables {
    data_counts: BTreeMap<String, Counts>,
    file_paths: BTreeMap<String, String>,
    image_type_distribution: BTreeMap<String, BTreeMap<String, usize>>,
    category_distribution: BTreeMap<String, BTreeMap<String, usize>>,
}

/// Writes `{train,validation,test}_data.csv` into `output_dir` and counts what each holds.
fn write_split_files(split: &Split, output_dir: &Path) -> Result<SplitTables> {
    std::fs::create_dir_all(output_dir)
        .with_context(|| format!("cannot create output folder {}", output_dir.display()))?;
    let mut tables = SplitTables {
        data_counts: BTreeMap::new(),
        file_paths: BTreeMap::new(),
        image_type_distribution: BTreeMap::new(),
        category_distribution: BTreeMap::new(),
    };
    for name in SplitName::ALL {
        let part = split.part(name);
        let records = image_records(part);
        let path = output_dir.join(name.file_name());
        imgtype_base::fsutil::write_csv_atomic(&path, &["product_id", "image_path", "image_type"], &records)?;
        let key = name.as_str().to_string();
        tables.data_counts.insert(key.clone(), Counts { images: records.len(), products: part.len() });
        tables.file_paths.insert(key.clone(), path.display().to_string());
        let mut types = BTreeMap::new();
        for r in &records {
            *types.entry(r.image_type.clone()).or_insert(0) += 1;
        }
        tables.image_type_distribution.insert(key.clone(), types);
        let mut cats = BTreeMap::new();
        for p in part {
            *cats.entry(p.category.clone()).or_insert(0) += 1;
        }
        tables.category_distribution.insert(key, cats);
    }
    Ok(tables)
}

fn split_info(options: &DivideOptions) -> SplitInfo {
    SplitInfo {
        created_at: chrono::Local::now().to_rfc3339(),
        source_file: options.input_file.display().to_string(),
        random_state: options.random_state,
        ratios: BTreeMap::from([
            ("train".to_string(), options.train_ratio),
            ("validation".to_string(), options.val_ratio),
            ("test".to_string(), options.test_ratio),
        ]),
        split_method: format!(
            "product-level, stratified by category_name (largest remainder per category); \
             categories with fewer than {MIN_STRATIFIED_PRODUCTS} products pooled and split at random"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_is_within_one_of_the_ratio() {
        for n in 0..60 {
            let counts = allocate(n, [0.8, 0.1, 0.1]);
            assert_eq!(counts.iter().sum::<usize>(), n);
            for (c, r) in counts.iter().zip([0.8, 0.1, 0.1]) {
                assert!((*c as f64 - r * n as f64).abs() < 1.0 + 1e-9, "n={n} {counts:?}");
            }
        }
        assert_eq!(allocate(10, [1.0, 0.0, 0.0]), [10, 0, 0]);
        assert_eq!(allocate(3, [0.5, 0.5, 0.0]), [2, 1, 0]);
    }
}
