//! Near-duplicates: the same photo re-encoded, resized, slightly cropped or brightened. Each
//! image gets a signature from a 32×32 thumbnail: a 63-bit structure hash (the signs of its
//! luma's lowest 8×8 DCT coefficients against their median, as pHash; blind to brightness and
//! to colour) and a colour layout (a 4×4 grid's mean R, G, B over the image's mean luma,
//! blind to a brightness gain but not to colour, nor to a dark garment where a light one was). A pair is a near-duplicate when both are close: the structure alone pairs
//! different garments of one cut, photographed alike.
//!
//! Candidates come from an index, not from all pairs: the hash is cut into bands of random
//! bit positions and images sharing a band's bits are compared (locality-sensitive hashing):
//! two hashes `d` bits apart share at least one of [`BANDS`] bands of [`BAND_BITS`] bits
//! with probability `1 − (1 − (1 − d/63)^8)^64` (0.9999 at `d` = 8, 0.99 at 18), two
//! unrelated ones (about 31 bits apart) are compared with probability about 0.25. Groups form
//! around leaders (see [`link_near_duplicates`]), so they do not chain.

use std::collections::HashMap;

use image::RgbImage;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::union_find::UnionFind;

/// The thumbnail side the signature is computed on.
pub const THUMBNAIL: u32 = 32;
/// Default largest structure-hash distance (bits of 63) of a near-duplicate.
pub const DEFAULT_MAX_BITS: u32 = 18;
/// Largest colour-layout distance of a near-duplicate with the same structure hash; it
/// shrinks by [`COLOUR_PER_BIT`] for each bit the hashes differ: the less alike the shapes,
/// the more alike the colours must be. Measured on the sample with planted copies (see
/// `tests/duplicates.rs`): re-encoded, rescaled, cropped and brightened copies mostly below
/// 0.03 (up to 0.06 where brightening clipped a white background), other photos of one cut
/// from 0.039 up.
pub const MAX_COLOUR_DISTANCE: f32 = 0.035;
pub const COLOUR_PER_BIT: f32 = 0.001;
const BANDS: usize = 64;
const BAND_BITS: usize = 8;

#[derive(Debug, Clone, PartialEq)]
pub struct Signature {
    pub structure: u64,
    pub colour: [f32; 48],
}

impl Signature {
    /// The signature of `thumbnail`, a [`THUMBNAIL`]-square image.
    pub fn of(thumbnail: &RgbImage) -> Self {
        assert_eq!(thumbnail.dimensions(), (THUMBNAIL, THUMBNAIL), "a {THUMBNAIL}-px thumbnail");
        let n = THUMBNAIL as usize;
        let luma: Vec<f32> =
            thumbnail.pixels().map(|p| 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32).collect();
        // The lowest 8×8 coefficients of the 2-D DCT-II: C · Y · Cᵀ with C the 8×32 basis.
        let basis = dct_basis();
        let mut rows = vec![0f32; 8 * n]; // C · Y: 8 × 32
        for u in 0..8 {
            for x in 0..n {
                rows[u * n + x] = (0..n).map(|y| basis[u * n + y] * luma[y * n + x]).sum();
            }
        }
        let coefficients: Vec<f32> = (1..64)
            .map(|k| {
                let (u, v) = (k / 8, k % 8);
                (0..n).map(|x| rows[u * n + x] * basis[v * n + x]).sum()
            })
            .collect();
        let mut sorted = coefficients.clone();
        sorted.sort_by(f32::total_cmp);
        let median = sorted[sorted.len() / 2];
        let structure = coefficients.iter().enumerate().fold(0u64, |bits, (i, &c)| bits | (u64::from(c > median) << i));
        // Each cell's mean R, G, B over the whole image's mean luma: brightening (a gain) leaves
        // it as it is; another colour, or a dark garment where a light one was, does not.
        let mean_luma = luma.iter().sum::<f32>() / luma.len() as f32 + 1.0;
        let mut colour = [0f32; 48];
        let cell = n / 4;
        for (index, slot) in colour.chunks_exact_mut(3).enumerate() {
            let (cx, cy) = (index % 4, index / 4);
            let mut sums = [0f32; 3];
            for y in cy * cell..(cy + 1) * cell {
                for x in cx * cell..(cx + 1) * cell {
                    let p = thumbnail.get_pixel(x as u32, y as u32);
                    (0..3).for_each(|c| sums[c] += p[c] as f32);
                }
            }
            let pixels = (cell * cell) as f32;
            (0..3).for_each(|c| slot[c] = sums[c] / pixels / mean_luma);
        }
        Self { structure, colour }
    }

    pub fn structure_distance(&self, other: &Self) -> u32 {
        (self.structure ^ other.structure).count_ones()
    }

    pub fn colour_distance(&self, other: &Self) -> f32 {
        self.colour.iter().zip(&other.colour).map(|(a, b)| (a - b).abs()).sum::<f32>() / self.colour.len() as f32
    }
}

/// Whether two signatures are the same photo: structure within `max_bits`, colour layout
/// within [`MAX_COLOUR_DISTANCE`] less [`COLOUR_PER_BIT`] per bit of structure distance.
pub fn same_photo(a: &Signature, b: &Signature, max_bits: u32) -> Option<u32> {
    let bits = a.structure_distance(b);
    (bits <= max_bits && a.colour_distance(b) <= MAX_COLOUR_DISTANCE - COLOUR_PER_BIT * bits as f32).then_some(bits)
}

/// The leaders that share one band's bits: their structure hashes, read in order for the
/// cheap first test, and beside them who they are.
#[derive(Clone, Default)]
struct Bucket {
    structures: Vec<u64>,
    members: Vec<usize>,
}

/// The first 8 rows of the 32-point DCT-II basis, row-major, computed once.
fn dct_basis() -> &'static [f32] {
    static BASIS: std::sync::OnceLock<Vec<f32>> = std::sync::OnceLock::new();
    BASIS.get_or_init(|| {
        let n = THUMBNAIL as usize;
        (0..8 * n)
            .map(|k| {
                let (u, x) = (k / n, k % n);
                (std::f32::consts::PI * u as f32 * (2 * x + 1) as f32 / (2 * n) as f32).cos()
            })
            .collect()
    })
}

/// Joins in `links` the images that are the same photo. Identical signatures (copies of one
/// photo: a placeholder image filed under thousands of products) are joined first, in one
/// pass, so n copies cost O(n). The other images are taken in order: each joins the closest
/// earlier *leader* that [`same_photo`] accepts (candidates from the index), or becomes a
/// leader itself. Every group is thus within the thresholds of its leader: photos that are
/// each a little different from the last (twenty thousand shades of one cut) do not chain
/// into one group, as joining every close pair would. `None` entries (unreadable images)
/// take part in nothing.
pub fn link_near_duplicates(signatures: &[Option<Signature>], max_bits: u32, links: &mut UnionFind) {
    let mut first_with: HashMap<(u64, [u32; 48]), usize> = HashMap::new();
    let mut distinct = Vec::new();
    for (index, signature) in signatures.iter().enumerate() {
        let Some(signature) = signature else { continue };
        let key = (signature.structure, signature.colour.map(f32::to_bits));
        match first_with.entry(key) {
            std::collections::hash_map::Entry::Occupied(first) => links.join(*first.get(), index),
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(index);
                distinct.push(index);
            }
        }
    }
    let mut positions: Vec<usize> = (0..63).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x5eed);
    let bands: Vec<Vec<usize>> = (0..BANDS)
        .map(|_| {
            positions.shuffle(&mut rng);
            positions[..BAND_BITS].to_vec()
        })
        .collect();
    let signature = |index: usize| signatures[index].as_ref().expect("only images with a signature are indexed");
    let band_key = |structure: u64, band: &[usize]| {
        band.iter().enumerate().fold(0u64, |key, (k, &bit)| key | (((structure >> bit) & 1) << k))
    };
    // Per band: its bits' value → the leaders that have it, with their structure hash beside
    // them: most candidates are refused on it alone, reading the bucket in order.
    let mut leaders: Vec<Vec<Bucket>> = vec![vec![Bucket::default(); 1 << BAND_BITS]; BANDS];
    // The image a leader was last compared with, so each is compared once per image.
    let mut compared_with = vec![usize::MAX; signatures.len()];
    for &index in &distinct {
        let this = signature(index);
        let keys: Vec<u64> = bands.iter().map(|band| band_key(this.structure, band)).collect();
        let mut closest: Option<(u32, f32, usize)> = None;
        for (table, key) in leaders.iter().zip(&keys) {
            let bucket = &table[*key as usize];
            for (at, &structure) in bucket.structures.iter().enumerate() {
                if (structure ^ this.structure).count_ones() > max_bits {
                    continue;
                }
                let leader = bucket.members[at];
                if std::mem::replace(&mut compared_with[leader], index) == index {
                    continue;
                }
                let other = signature(leader);
                if let Some(bits) = same_photo(this, other, max_bits) {
                    let colour = this.colour_distance(other);
                    if closest.is_none_or(|(b, c, _)| (bits, colour) < (b, c)) {
                        closest = Some((bits, colour, leader));
                    }
                }
            }
        }
        match closest {
            Some((_, _, leader)) => links.join(leader, index),
            None => {
                for (table, key) in leaders.iter_mut().zip(keys) {
                    let bucket = &mut table[key as usize];
                    bucket.structures.push(this.structure);
                    bucket.members.push(index);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stripes(colour: [u8; 3], phase: u32) -> RgbImage {
        RgbImage::from_fn(THUMBNAIL, THUMBNAIL, |x, y| {
            let on = ((x + 2 * y + phase) / 4) % 2 == 0;
            if on {
                image::Rgb(colour)
            } else {
                image::Rgb([colour[0] / 3, colour[1] / 3, colour[2] / 3])
            }
        })
    }

    #[test]
    fn brightness_keeps_the_signature_close_and_another_colour_does_not() {
        let red = Signature::of(&stripes([200, 40, 40], 0));
        let brighter = Signature::of(&RgbImage::from_fn(THUMBNAIL, THUMBNAIL, |x, y| {
            let p = stripes([200, 40, 40], 0).get_pixel(x, y).0;
            image::Rgb(p.map(|v| (v as f32 * 1.2).min(255.0) as u8))
        }));
        let blue = Signature::of(&stripes([40, 40, 200], 0));
        let (bits, colour) = (red.structure_distance(&brighter), red.colour_distance(&brighter));
        assert!(bits <= 8 && colour < 0.01, "brighter: {bits} bits, colour {colour}");
        assert!(red.structure_distance(&blue) <= 8, "the same cut");
        assert!(red.colour_distance(&blue) > MAX_COLOUR_DISTANCE, "{}", red.colour_distance(&blue));
        let mut links = UnionFind::new(4);
        link_near_duplicates(&[Some(red.clone()), Some(blue), None, Some(brighter)], DEFAULT_MAX_BITS, &mut links);
        assert_eq!(links.clusters(), [vec![0, 3], vec![1], vec![2]]);
    }

    #[test]
    fn photos_each_a_little_different_from_the_last_do_not_chain_into_one_group() {
        // One cut in 400 shades, each step within the colour threshold of the last.
        let signatures: Vec<Option<Signature>> = (0..400)
            .map(|step| {
                let shade = 40 + (step as f32 * 0.5) as u8;
                Some(Signature::of(&stripes([shade, 255 - shade, 90], 0)))
            })
            .collect();
        let mut links = UnionFind::new(signatures.len());
        link_near_duplicates(&signatures, DEFAULT_MAX_BITS, &mut links);
        let clusters = links.clusters();
        let largest = clusters.iter().map(Vec::len).max().unwrap();
        assert!(clusters.len() > 4 && largest < 200, "{} groups, the largest of {largest}", clusters.len());
        for cluster in &clusters {
            let leader = signatures[cluster[0]].as_ref().unwrap();
            for &member in cluster {
                let member = signatures[member].as_ref().unwrap();
                assert!(same_photo(leader, member, DEFAULT_MAX_BITS).is_some(), "every member is its leader's photo");
            }
        }
    }

    #[test]
    fn thousands_of_copies_of_one_photo_are_one_cluster_in_linear_work() {
        let photo = Signature::of(&stripes([120, 90, 60], 1));
        let mut near = photo.clone();
        near.structure ^= 0b101;
        let mut signatures = vec![Some(photo); 20_000];
        signatures.push(Some(near));
        signatures.push(Some(Signature::of(&stripes([10, 200, 30], 3))));
        let started = std::time::Instant::now();
        let mut links = UnionFind::new(signatures.len());
        link_near_duplicates(&signatures, DEFAULT_MAX_BITS, &mut links);
        let clusters = links.clusters();
        assert_eq!(clusters.len(), 2, "the copies and the near copy are one cluster, the other photo its own");
        assert_eq!(clusters[0].len(), 20_001);
        // Comparing every pair of 20,000 in 64 bands takes minutes; grouping them, milliseconds.
        assert!(started.elapsed().as_secs_f64() < 5.0, "{:?}", started.elapsed());
    }
}
