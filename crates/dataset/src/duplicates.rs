//! `divide --find-duplicates`: the same photo filed under more than one product (a stock
//! photo reused, an upload repeated) leaks between splits even when products do not. Exact
//! copies are found by content: files grouped by size and a 64-bit SipHash of their bytes,
//! each group confirmed byte for byte; near-duplicates by signature (`near_duplicates.rs`),
//! each candidate pair confirmed by its content (`photo_match.rs`).
//! Products that share a group are then kept in one split, and a group whose images carry
//! different classes is a label conflict.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use anyhow::Result;
use serde::Serialize;

use super::near_duplicates::{link_near_duplicates, Signature, THUMBNAIL};
use super::photo_match::{self, CloseUp};
use super::product::Product;
pub use super::union_find::UnionFind;
use imgtype_images::batch::per_record;
use imgtype_images::decode::decode_within_budget;
use imgtype_images::image::resize_square;
use imgtype_images::ImageSource;

/// One image of a duplicate group, as `duplicates.csv` lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DuplicateImage {
    pub group: usize,
    pub image_path: String,
    pub product_id: String,
    pub image_type: String,
    pub split: String,
    /// Structure-hash bits to the group's first image (0 for exact copies).
    pub distance: f64,
    pub kind: String,
}

/// One image of a duplicate group: where it is, and how it relates to the group's first image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Member {
    pub product: usize,
    pub image: usize,
    /// Its structure-hash distance to the group's first image (0 for a copy).
    pub distance: u32,
    /// The same bytes as the group's first image.
    pub exact: bool,
}

/// An image's bytes as a key (length, hash) and its structure signature, if asked for.
type Fingerprint = ((usize, u64), Option<Signature>);

/// Groups of two or more images that are the same photo: exact copies (the same bytes), and
/// with `near` = `Some(bits)` also near-duplicates within that many structure-hash bits (see
/// `near_duplicates.rs`), transitively. In input order. Images that cannot be read are left
/// out with a warning (the split's own checks decide what happens to them).
pub fn duplicate_groups(
    products: &[Product],
    source: &ImageSource,
    workers: usize,
    near: Option<u32>,
) -> Vec<Vec<Member>> {
    let images: Vec<(usize, usize, &str)> = products
        .iter()
        .enumerate()
        .flat_map(|(p, product)| product.images.iter().enumerate().map(move |(i, image)| (p, i, image.path.as_str())))
        .collect();
    let fingerprints = fingerprints_per_image(products, source, workers, near);
    let mut by_fingerprint: HashMap<(usize, u64), Vec<usize>> = HashMap::new();
    let mut signatures = Vec::with_capacity(images.len());
    for (index, fingerprint) in fingerprints.into_iter().enumerate() {
        match fingerprint {
            Some((key, signature)) => {
                by_fingerprint.entry(key).or_default().push(index);
                signatures.push(signature);
            }
            None => signatures.push(None),
        }
    }
    let mut candidates: Vec<Vec<usize>> = by_fingerprint.into_values().filter(|members| members.len() > 1).collect();
    candidates.sort();
    let exact: Vec<Vec<usize>> =
        candidates.iter().flat_map(|members| confirm_same_bytes(members, &images, source)).collect();
    let mut links = UnionFind::new(images.len());
    let mut copy_of: Vec<usize> = (0..images.len()).collect();
    for group in &exact {
        for &member in group {
            links.join(group[0], member);
            copy_of[member] = group[0];
        }
    }
    if let Some(bits) = near {
        let mut close_ups = CloseUps { source, cache: HashMap::new() };
        let mut confirm = |a: usize, b: usize| close_ups.same_photo(images[a].2, images[b].2);
        link_near_duplicates(&signatures, bits, &mut confirm, &mut links);
    }
    let member = |first: usize, index: usize| Member {
        product: images[index].0,
        image: images[index].1,
        distance: match (&signatures[first], &signatures[index]) {
            (Some(a), Some(b)) if copy_of[first] != copy_of[index] => a.structure_distance(b),
            _ => 0,
        },
        exact: copy_of[first] == copy_of[index],
    };
    links
        .clusters()
        .into_iter()
        .filter(|cluster| cluster.len() > 1)
        .map(|cluster| cluster.iter().map(|&index| member(cluster[0], index)).collect())
        .collect()
}

/// The close-ups that confirmations look at, each read on first use: most images have no
/// candidate pair and are read once, for their signature.
struct CloseUps<'a> {
    source: &'a ImageSource,
    cache: HashMap<&'a str, Option<CloseUp>>,
}

impl<'a> CloseUps<'a> {
    fn get(&mut self, path: &'a str) -> Option<&CloseUp> {
        let source = self.source;
        self.cache
            .entry(path)
            .or_insert_with(|| {
                let read = || -> Result<CloseUp> {
                    let bytes = source.fetch(path)?;
                    let side = photo_match::SIDE as u32;
                    let (image, _permit) = decode_within_budget(&bytes, path, source.decode_limits(), Some(2 * side))?;
                    Ok(CloseUp::of(&image))
                };
                read().map_err(|reason| tracing::warn!("duplicates: cannot read {path} again: {reason}")).ok()
            })
            .as_ref()
    }

    fn same_photo(&mut self, a: &'a str, b: &'a str) -> bool {
        self.get(a);
        self.get(b);
        match (&self.cache[a], &self.cache[b]) {
            (Some(first), Some(second)) => photo_match::is_same_photo(first, second),
            _ => false,
        }
    }
}

/// Per image of `products` (in their order), its bytes' length and hash and, with `near`, its
/// structure signature; `None` where it cannot be read (warned about once per path).
fn fingerprints_per_image(
    products: &[Product],
    source: &ImageSource,
    workers: usize,
    near: Option<u32>,
) -> Vec<Option<Fingerprint>> {
    // Each path read once (a photo filed under many products is one file), as records for the
    // loader's worker threads; every image then takes its path's fingerprint.
    let records = super::product::image_records(products);
    let mut slot_of_path: HashMap<&str, usize> = HashMap::new();
    let mut unique: Vec<&imgtype_images::ImageRecord> = Vec::new();
    let path_slot: Vec<usize> = records
        .iter()
        .map(|record| {
            *slot_of_path.entry(record.image_path.as_str()).or_insert_with(|| {
                unique.push(record);
                unique.len() - 1
            })
        })
        .collect();
    let unique_fingerprints = per_record(&unique, workers, |record| {
        let bytes = source.fetch(&record.image_path)?;
        let signature = match near {
            Some(_) => {
                let limits = source.decode_limits();
                let (image, _permit) = decode_within_budget(&bytes, &record.image_path, limits, Some(THUMBNAIL * 2))?;
                Some(Signature::of(&resize_square(&image, THUMBNAIL)))
            }
            None => None,
        };
        Ok(((bytes.len(), sip_hash(&bytes)), signature))
    });
    for (record, fingerprint) in unique.iter().zip(&unique_fingerprints) {
        if let Err(reason) = fingerprint {
            tracing::warn!("duplicates: cannot read {}: {reason}", record.image_path);
        }
    }
    path_slot.iter().map(|&slot| unique_fingerprints[slot].as_ref().ok().cloned()).collect()
}

/// Splits a fingerprint group into groups of identical bytes (a hash collision would
/// otherwise pair different photos); the same path twice needs no second read.
fn confirm_same_bytes(members: &[usize], images: &[(usize, usize, &str)], source: &ImageSource) -> Vec<Vec<usize>> {
    let mut confirmed: Vec<(Vec<u8>, Vec<usize>)> = Vec::new();
    let mut group_of_path: HashMap<&str, usize> = HashMap::new();
    for &member in members {
        let path = images[member].2;
        if let Some(&group) = group_of_path.get(path) {
            confirmed[group].1.push(member);
            continue;
        }
        let Ok(bytes) = source.fetch(path) else { continue };
        let group = match confirmed.iter().position(|(first, _)| *first == bytes) {
            Some(group) => group,
            None => {
                confirmed.push((bytes, Vec::new()));
                confirmed.len() - 1
            }
        };
        confirmed[group].1.push(member);
        group_of_path.insert(path, group);
    }
    confirmed.into_iter().map(|(_, group)| group).filter(|group| group.len() > 1).collect()
}

fn sip_hash(bytes: &[u8]) -> u64 {
    // DefaultHasher::new() has fixed keys: the same bytes give the same value on every run.
    #[allow(deprecated)]
    let mut hasher = std::hash::SipHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}

/// Clusters of product indices that must share a split: products linked by a duplicate
/// group, transitively; every product is in exactly one cluster, in input order.
pub fn linked_products(product_count: usize, groups: &[Vec<Member>]) -> Vec<Vec<usize>> {
    let mut links = UnionFind::new(product_count);
    for group in groups {
        for member in group {
            links.join(group[0].product, member.product);
        }
    }
    links.clusters()
}

/// `data_split_summary.json`'s `duplicates`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DuplicateSummary {
    pub groups: usize,
    pub images_in_groups: usize,
    /// Groups spanning more than one product (their products share a split).
    pub groups_across_products: usize,
    /// Groups whose images carry different classes, with the classes.
    pub label_conflicts: Vec<LabelConflict>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelConflict {
    pub group: usize,
    pub image_types: Vec<String>,
    pub image_paths: Vec<String>,
}

/// The rows of `duplicates.csv` and the summary, with each product's split.
pub fn describe(
    products: &[Product],
    groups: &[Vec<Member>],
    split_of: &HashMap<&str, &'static str>,
) -> (Vec<DuplicateImage>, DuplicateSummary) {
    let mut rows = Vec::new();
    let mut summary = DuplicateSummary { groups: groups.len(), ..Default::default() };
    for (number, group) in groups.iter().enumerate() {
        let group_id = number + 1;
        let mut types: Vec<String> = Vec::new();
        let mut paths = Vec::new();
        for member in group {
            let (product, image) = (&products[member.product], &products[member.product].images[member.image]);
            if !types.contains(&image.image_type) {
                types.push(image.image_type.clone());
            }
            paths.push(image.path.clone());
            rows.push(DuplicateImage {
                group: group_id,
                image_path: image.path.clone(),
                product_id: product.id.clone(),
                image_type: image.image_type.clone(),
                split: split_of.get(product.id.as_str()).copied().unwrap_or("").to_string(),
                distance: member.distance as f64,
                kind: if member.exact { "exact" } else { "near" }.into(),
            });
        }
        summary.images_in_groups += group.len();
        let first = group[0].product;
        if group.iter().any(|member| member.product != first) {
            summary.groups_across_products += 1;
        }
        if types.len() > 1 {
            types.sort();
            summary.label_conflicts.push(LabelConflict { group: group_id, image_types: types, image_paths: paths });
        }
    }
    (rows, summary)
}

/// The file `divide --find-duplicates` writes into its output folder.
pub const REPORT_FILE: &str = "duplicates.csv";
const REPORT_HEADER: [&str; 7] = ["group", "image_path", "product_id", "image_type", "split", "distance", "kind"];

/// Writes `duplicates.csv` (atomically).
pub fn write_csv(path: &std::path::Path, rows: &[DuplicateImage]) -> Result<()> {
    imgtype_base::fsutil::write_csv_atomic(path, &REPORT_HEADER, rows)
}

/// Removes the `duplicates.csv` an earlier `divide --find-duplicates` left in `output_dir`:
/// the new split files were made without it, and cross-validation would still read its
/// groups. A file of that name that is not such a report is left, with a warning.
pub fn remove_stale_report(output_dir: &std::path::Path) {
    let path = output_dir.join(REPORT_FILE);
    if std::fs::symlink_metadata(&path).is_err() {
        return;
    }
    let ours =
        imgtype_base::fsutil::open_capped(&path, &path.display().to_string(), imgtype_base::fsutil::CSV_FILE_CAP)
            .ok()
            .and_then(|file| csv::Reader::from_reader(file).headers().ok().cloned())
            .is_some_and(|header| header.iter().eq(REPORT_HEADER));
    if !ours {
        tracing::warn!(
            "{} is not a report of `divide --find-duplicates`; left as it is, but cross-validation reads \
             {REPORT_FILE} in this folder as duplicate groups",
            path.display()
        );
        return;
    }
    match std::fs::remove_file(&path) {
        Ok(()) => tracing::info!(
            "removed {}, left by an earlier `divide --find-duplicates`: these split files were made without it",
            path.display()
        ),
        Err(e) => tracing::warn!("cannot remove the stale {}: {e}", path.display()),
    }
}

/// After the split: `duplicates.csv` in `output_dir` and the summary; fails if a group
/// ended up in two splits (the split keeps linked products together, so it never should).
pub fn report(
    products: &[Product],
    groups: &[Vec<Member>],
    split: &super::product::Split,
    output_dir: &std::path::Path,
) -> Result<DuplicateSummary> {
    let mut split_of: HashMap<&str, &'static str> = HashMap::new();
    for name in imgtype_images::records::SplitName::ALL {
        for product in split.part(name) {
            split_of.insert(product.id.as_str(), name.as_str());
        }
    }
    let (rows, summary) = describe(products, groups, &split_of);
    for group in rows.chunk_by(|a, b| a.group == b.group) {
        if group.iter().any(|row| row.split != group[0].split) {
            anyhow::bail!("duplicate group {} is in more than one split: {group:?}", group[0].group);
        }
    }
    write_csv(&output_dir.join(REPORT_FILE), &rows)?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_linked_through_any_chain_of_groups_form_one_cluster() {
        // 0–3 share a photo, 3–5 another, 1 shares one with itself only.
        let at = |product, image| Member { product, image, distance: 0, exact: true };
        let groups = vec![vec![at(0, 0), at(3, 1)], vec![at(5, 0), at(3, 0)], vec![at(1, 0), at(1, 2)]];
        assert_eq!(linked_products(7, &groups), vec![vec![0, 3, 5], vec![1], vec![2], vec![4], vec![6]]);
        assert_eq!(linked_products(3, &[]), vec![vec![0], vec![1], vec![2]]);
    }
}
