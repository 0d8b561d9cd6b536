//! Near-duplicates: the same photo re-encoded, resized, slightly cropped or brightened. Each
//! image gets a signature from a 32×32 thumbnail: a 63-bit structure hash (the signs of its
//! luma's lowest 8×8 DCT coefficients against their median, as pHash; blind to brightness and
//! to colour) and a colour layout (a 4×4 grid's mean R, G, B over the image's mean luma,
//! blind to a brightness gain but not to colour, nor to a dark garment where a light one was).
//!
//! The signatures only choose the pairs worth a closer look (see [`candidate`]): a crop of a
//! few per cent moves a 32 px thumbnail's hash by up to 26 bits (30 for a fine weave) and its
//! colour layout by up to 0.07, as far as different garments of one cut photographed alike.
//! A candidate pair is joined only when a second signal confirms it: `photo_match.rs`
//! compares the two photos' fine detail once one is cropped to frame the other. Groups form around leaders (see
//! [`link_near_duplicates`]), so they do not chain.

use std::collections::HashMap;

use image::RgbImage;

use super::union_find::UnionFind;

/// The thumbnail side the signature is computed on.
pub const THUMBNAIL: u32 = 32;
/// Default largest structure-hash distance (bits of 63) of a candidate pair. Measured on the
/// bundled sample with planted copies (`tests/duplicates.rs`): copies cropped up to 5% per
/// side differ by up to 26 bits; unrelated photos by about 31 on average.
pub const DEFAULT_MAX_BITS: u32 = 28;
/// Largest colour-layout distance of a candidate pair: copies brightened 18% onto a clipped
/// white background, or cropped 5%, move by up to 0.066 (same measurement).
pub const CANDIDATE_COLOUR: f32 = 0.08;
/// Largest colour-layout distance of a candidate pair whatever its structure distance: a
/// close-up of a fine weave, whose 32 px thumbnail is mostly aliasing, moves its hash by as
/// much as an unrelated photo's (up to 30 bits measured) but its colour layout by 0.01.
pub const CLOSE_COLOUR: f32 = 0.02;
/// How many of an image's closest candidate leaders are looked at closer before it is taken
/// for a photo of its own: each look costs 2–7 ms (measured; see the README).
pub const CONFIRMATIONS_PER_IMAGE: usize = 8;

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

    /// The colour layout's sums per quadrant and channel: the colour distance is at least the
    /// sum of their differences over 48 (the triangle inequality), so most pairs are refused
    /// on these twelve.
    fn quadrant_sums(&self) -> [f32; 12] {
        let mut sums = [0f32; 12];
        for (cell, rgb) in self.colour.chunks_exact(3).enumerate() {
            let quadrant = (cell / 8) * 2 + (cell % 4) / 2;
            (0..3).for_each(|c| sums[quadrant * 3 + c] += rgb[c]);
        }
        sums
    }

    pub fn colour_distance(&self, other: &Self) -> f32 {
        self.colour.iter().zip(&other.colour).map(|(a, b)| (a - b).abs()).sum::<f32>() / self.colour.len() as f32
    }
}

/// The largest colour-layout distance of a candidate pair whose structure hashes are `bits`
/// apart: [`CANDIDATE_COLOUR`] within `max_bits`, [`CLOSE_COLOUR`] beyond (0 when `max_bits`
/// is 0: exact copies only).
fn colour_limit(bits: u32, max_bits: u32) -> f32 {
    if max_bits == 0 {
        0.0
    } else if bits <= max_bits {
        CANDIDATE_COLOUR
    } else {
        CLOSE_COLOUR
    }
}

/// Whether two signatures are alike enough to be looked at closer: structure within
/// `max_bits` and colour layout within [`CANDIDATE_COLOUR`], or colour layout within
/// [`CLOSE_COLOUR`] whatever the structure; how close, for ordering (0 is the same
/// signature).
pub fn candidate(a: &Signature, b: &Signature, max_bits: u32) -> Option<f32> {
    let bits = a.structure_distance(b);
    let colour = a.colour_distance(b);
    (colour <= colour_limit(bits, max_bits)).then(|| bits as f32 / max_bits.max(1) as f32 + colour / CANDIDATE_COLOUR)
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
/// earlier *leader* that is a [`candidate`] and that `confirm` (the second signal) accepts,
/// trying at most [`CONFIRMATIONS_PER_IMAGE`] of the closest; or it becomes a leader itself.
/// Every group is thus confirmed against its leader: photos that are each a little different
/// from the last (twenty thousand shades of one cut) do not chain into one group, as joining
/// every close pair would. `None` entries (unreadable images) take part in nothing.
pub fn link_near_duplicates(
    signatures: &[Option<Signature>],
    max_bits: u32,
    confirm: &mut dyn FnMut(usize, usize) -> bool,
    links: &mut UnionFind,
) {
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
    let signature = |index: usize| signatures[index].as_ref().expect("only images with a signature are compared");
    // The leaders' structure hashes and colour sums in arrays read in order: most leaders are
    // refused on those alone, the colour layout is read for the rest.
    let (mut leader_structures, mut leader_sums, mut leaders) =
        (Vec::<u64>::new(), Vec::<[f32; 12]>::new(), Vec::new());
    let mut candidates: Vec<(f32, usize)> = Vec::new();
    for &index in &distinct {
        let this = signature(index);
        let sums = this.quadrant_sums();
        candidates.clear();
        for (at, &structure) in leader_structures.iter().enumerate() {
            let colour_limit = colour_limit((structure ^ this.structure).count_ones(), max_bits);
            if colour_limit == 0.0
                || sums.iter().zip(&leader_sums[at]).map(|(a, b)| (a - b).abs()).sum::<f32>() > colour_limit * 48.0
            {
                continue;
            }
            if let Some(closeness) = candidate(this, signature(leaders[at]), max_bits) {
                candidates.push((closeness, leaders[at]));
            }
        }
        candidates.sort_by(|a, b| a.0.total_cmp(&b.0));
        let confirmed = candidates.iter().take(CONFIRMATIONS_PER_IMAGE).find(|&&(_, leader)| confirm(leader, index));
        match confirmed {
            Some(&(_, leader)) => links.join(leader, index),
            None => {
                leader_structures.push(this.structure);
                leader_sums.push(sums);
                leaders.push(index);
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
        assert!(red.colour_distance(&blue) > CANDIDATE_COLOUR, "{}", red.colour_distance(&blue));
        let mut links = UnionFind::new(4);
        let mut looked_at = Vec::new();
        let mut confirm = |a: usize, b: usize| {
            looked_at.push((a, b));
            true
        };
        link_near_duplicates(
            &[Some(red.clone()), Some(blue), None, Some(brighter)],
            DEFAULT_MAX_BITS,
            &mut confirm,
            &mut links,
        );
        assert_eq!(looked_at, [(0, 3)], "only the candidate pair is looked at closer");
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
        link_near_duplicates(&signatures, DEFAULT_MAX_BITS, &mut |_, _| true, &mut links);
        let clusters = links.clusters();
        let largest = clusters.iter().map(Vec::len).max().unwrap();
        assert!(clusters.len() > 4 && largest < 200, "{} groups, the largest of {largest}", clusters.len());
        for cluster in &clusters {
            let leader = signatures[cluster[0]].as_ref().unwrap();
            for &member in cluster {
                let member = signatures[member].as_ref().unwrap();
                assert!(
                    candidate(leader, member, DEFAULT_MAX_BITS).is_some(),
                    "every member is its leader's candidate"
                );
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
        link_near_duplicates(&signatures, DEFAULT_MAX_BITS, &mut |_, _| true, &mut links);
        let clusters = links.clusters();
        assert_eq!(clusters.len(), 2, "the copies and the near copy are one cluster, the other photo its own");
        assert_eq!(clusters[0].len(), 20_001);
        // Comparing every pair of 20,000 in 64 bands takes minutes; grouping them, milliseconds.
        assert!(started.elapsed().as_secs_f64() < 5.0, "{:?}", started.elapsed());
    }
}
