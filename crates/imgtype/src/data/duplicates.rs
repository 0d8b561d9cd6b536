//! `divide --find-duplicates`: the same photo filed under more than one product (a stock
//! photo reused, an upload repeated) leaks between splits even when products do not. Exact
//! copies are found by content: files grouped by size and a 64-bit SipHash of their bytes,
//! each group confirmed byte for byte; near-duplicates by signature (`near_duplicates.rs`).
//! Products that share a group are then kept in one split, and a group whose images carry
//! different classes is a label conflict.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

use anyhow::Result;
use serde::Serialize;

use super::batch::per_record;
use super::decode::decode_for_size;
use super::image::resize_square;
use super::near_duplicates::{near_pairs, Signature, THUMBNAIL};
use super::product::Product;
use super::ImageSource;

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
    // The same images in the same order, as records for the loader's worker threads.
    let records = super::split::image_records(products);
    let fingerprints = per_record(&records.iter().collect::<Vec<_>>(), workers, |record| {
        let bytes = source.fetch(&record.image_path)?;
        let signature = match near {
            Some(_) => {
                let limits = source.decode_limits();
                let image = decode_for_size(&bytes, &record.image_path, limits, Some(THUMBNAIL * 2))?;
                Some(Signature::of(&resize_square(&image, THUMBNAIL)))
            }
            None => None,
        };
        Ok(((bytes.len(), sip_hash(&bytes)), signature))
    });
    let mut by_fingerprint: HashMap<(usize, u64), Vec<usize>> = HashMap::new();
    let mut signatures = Vec::with_capacity(images.len());
    for (index, fingerprint) in fingerprints.into_iter().enumerate() {
        match fingerprint {
            Ok((key, signature)) => {
                by_fingerprint.entry(key).or_default().push(index);
                signatures.push(signature);
            }
            Err(reason) => {
                tracing::warn!("duplicates: cannot read {}: {reason}", images[index].2);
                signatures.push(None);
            }
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
        for (i, j, _) in near_pairs(&signatures, bits) {
            links.join(i, j);
        }
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

/// Union–find over `0..n` (path halving, the smaller index as the root).
pub(crate) struct UnionFind(Vec<usize>);

impl UnionFind {
    pub(crate) fn new(n: usize) -> Self {
        Self((0..n).collect())
    }

    fn root(&mut self, mut i: usize) -> usize {
        while self.0[i] != i {
            self.0[i] = self.0[self.0[i]];
            i = self.0[i];
        }
        i
    }

    pub(crate) fn join(&mut self, a: usize, b: usize) {
        let (a, b) = (self.root(a), self.root(b));
        if a != b {
            self.0[a.max(b)] = a.min(b);
        }
    }

    /// Every element in one cluster, clusters by their smallest element, members in order.
    pub(crate) fn clusters(&mut self) -> Vec<Vec<usize>> {
        let mut clusters: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for i in 0..self.0.len() {
            let root = self.root(i);
            clusters.entry(root).or_default().push(i);
        }
        clusters.into_values().collect()
    }
}

/// Splits a fingerprint group into groups of identical bytes (a hash collision would
/// otherwise pair different photos); the same path twice needs no second read.
fn confirm_same_bytes(members: &[usize], images: &[(usize, usize, &str)], source: &ImageSource) -> Vec<Vec<usize>> {
    let mut confirmed: Vec<(Vec<u8>, Vec<usize>)> = Vec::new();
    for &member in members {
        let Ok(bytes) = source.fetch(images[member].2) else { continue };
        match confirmed.iter_mut().find(|(first, _)| *first == bytes) {
            Some((_, group)) => group.push(member),
            None => confirmed.push((bytes, vec![member])),
        }
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

/// Writes `duplicates.csv` (atomically).
pub fn write_csv(path: &std::path::Path, rows: &[DuplicateImage]) -> Result<()> {
    crate::fsutil::write_csv_atomic(
        path,
        &["group", "image_path", "product_id", "image_type", "split", "distance", "kind"],
        rows,
    )
}

/// After the split: `duplicates.csv` in `output_dir` and the summary; fails if a group
/// ended up in two splits (the split keeps linked products together, so it never should).
pub fn report(
    products: &[Product],
    groups: &[Vec<Member>],
    split: &super::split::Split,
    output_dir: &std::path::Path,
) -> Result<DuplicateSummary> {
    let mut split_of: HashMap<&str, &'static str> = HashMap::new();
    for name in super::records::SplitName::ALL {
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
    write_csv(&output_dir.join("duplicates.csv"), &rows)?;
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
