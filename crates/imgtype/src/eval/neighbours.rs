//! Label agreement among each image's nearest neighbours in a model's embedding space (the
//! head's input), as cleanlab's Datalab uses: a second opinion on a label that does not go
//! through the head's softmax. A photo filed under the wrong column sits among photos of its
//! true class, whatever the head made of it.
//!
//! Neighbours are looked for only among images embedded by the same model (a cross-validation's
//! fold: its held-out images), since two models' spaces are not comparable.

/// Neighbours per image by default: none. Blended in, they gained one image in the top N on
/// the catalogue their number and weight were chosen on and lost two on another (README,
/// "Cross-validation and label issues"), so they are for a user to try (`--neighbours`).
pub const DEFAULT_NEIGHBOURS: usize = 0;

/// The share of the neighbours' opinion in the blended probabilities.
pub const NEIGHBOUR_WEIGHT: f64 = 0.3;

/// Pseudo-count spread over the classes, so that a class no neighbour has is unlikely, not
/// impossible (and an image with fewer neighbours than asked leans towards uniform).
const PRIOR: f64 = 0.5;

/// Rows of the similarity matrix computed at once: 1,024 × a fold's images in f32.
const ROWS_AT_ONCE: i64 = 1024;

/// Per image, the (smoothed) share of each class among the labels of its `k` most
/// cosine-similar images in the same `group`. `embeddings` are one row per image, any scale.
pub fn neighbour_label_shares(
    embeddings: &[Vec<f32>],
    groups: &[usize],
    labels: &[usize],
    classes: usize,
    k: usize,
) -> Vec<Vec<f64>> {
    assert!(embeddings.len() == groups.len() && groups.len() == labels.len());
    let mut shares = vec![vec![1.0 / classes as f64; classes]; labels.len()];
    let mut group_ids = groups.to_vec();
    group_ids.sort_unstable();
    group_ids.dedup();
    for group in group_ids {
        let members: Vec<usize> = (0..groups.len()).filter(|&i| groups[i] == group).collect();
        for (&i, neighbours) in members.iter().zip(nearest(embeddings, &members, k)) {
            let mut counts = vec![PRIOR / classes as f64; classes];
            for j in neighbours {
                counts[labels[members[j]]] += 1.0;
            }
            let total: f64 = counts.iter().sum();
            shares[i] = counts.iter().map(|c| c / total).collect();
        }
    }
    shares
}

/// For each of `members`, the positions in `members` of its `k` most cosine-similar others,
/// by one matrix product per block of rows (a fold of 20,000 images takes seconds).
fn nearest(embeddings: &[Vec<f32>], members: &[usize], k: usize) -> Vec<Vec<usize>> {
    let n = members.len() as i64;
    let k = neighbours_within(k, members.len()) as i64;
    if k == 0 {
        return vec![Vec::new(); members.len()];
    }
    let flat: Vec<f32> = members.iter().flat_map(|&i| embeddings[i].iter().copied()).collect();
    let unit = tch::Tensor::from_slice(&flat).view([n, -1]);
    let unit = &unit / unit.norm_scalaropt_dim(2, [1], true).clamp_min(1e-12);
    let mut out = Vec::with_capacity(members.len());
    for start in (0..n).step_by(ROWS_AT_ONCE as usize) {
        let rows = ROWS_AT_ONCE.min(n - start);
        let mut similar = tch::no_grad(|| unit.narrow(0, start, rows).matmul(&unit.tr()));
        // An image is not its own neighbour.
        let own = tch::Tensor::arange_start(start, start + rows, (tch::Kind::Int64, tch::Device::Cpu)).view([rows, 1]);
        let _ = similar.scatter_value_(1, &own, f64::NEG_INFINITY);
        let (_, indices) = similar.topk(k, 1, true, true);
        let indices = Vec::<i64>::try_from(indices.contiguous().view([-1])).expect("int64 indices");
        out.extend(indices.chunks(k as usize).map(|row| row.iter().map(|&j| j as usize).collect()));
    }
    out
}

/// The neighbours each image of a group of `members` has when `k` are asked for: at most all
/// the others.
pub fn neighbours_within(k: usize, members: usize) -> usize {
    k.min(members.saturating_sub(1))
}

/// `(1 − weight) · model + weight · neighbours`, per image.
pub fn blend(model: &[Vec<f64>], neighbours: &[Vec<f64>], weight: f64) -> Vec<Vec<f64>> {
    model
        .iter()
        .zip(neighbours)
        .map(|(p, q)| p.iter().zip(q).map(|(p, q)| (1.0 - weight) * p + weight * q).collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_among_another_class_leans_to_it() {
        // Two clusters on the x and y axes; image 2 sits in the x cluster but is labelled 1.
        let embeddings =
            vec![vec![1.0, 0.0], vec![0.9, 0.1], vec![0.95, 0.05], vec![0.0, 1.0], vec![0.1, 0.9], vec![0.05, 0.95]];
        let labels = [0, 0, 1, 1, 1, 1];
        let shares = neighbour_label_shares(&embeddings, &[0; 6], &labels, 2, 2);
        assert!(shares[2][0] > 0.7, "{:?}", shares[2]);
        assert!(shares[4][1] > 0.7, "{:?}", shares[4]);
        for s in &shares {
            assert!((s.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn neighbours_come_only_from_the_same_group() {
        let embeddings = vec![vec![1.0, 0.0], vec![1.0, 0.01], vec![0.0, 1.0]];
        // Image 0's nearest is image 1, but that one is in another group.
        let shares = neighbour_label_shares(&embeddings, &[0, 1, 0], &[0, 0, 1], 2, 1);
        assert!(shares[0][1] > shares[0][0], "{:?}", shares[0]);
        // Alone in its group: no neighbour, the prior only.
        assert_eq!(shares[1], vec![0.5, 0.5]);
    }

    /// Past one block of rows (1,024), against every pair compared one by one.
    #[test]
    fn blocks_of_rows_find_what_a_full_search_finds() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let n = 1100;
        let embeddings: Vec<Vec<f32>> = (0..n).map(|_| (0..8).map(|_| rng.gen_range(-1.0..1.0)).collect()).collect();
        let labels: Vec<usize> = (0..n).map(|_| rng.gen_range(0..3)).collect();
        let groups: Vec<usize> = (0..n).map(|i| usize::from(i % 7 == 0)).collect();
        let shares = neighbour_label_shares(&embeddings, &groups, &labels, 3, 5);
        let cosine = |a: &[f32], b: &[f32]| {
            let dot = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f32>();
            dot(a, b) / (dot(a, a) * dot(b, b)).sqrt()
        };
        for i in (0..n).step_by(37).chain([1029, 1099]) {
            let mut others: Vec<usize> = (0..n).filter(|&j| j != i && groups[j] == groups[i]).collect();
            others.sort_by(|&a, &b| {
                cosine(&embeddings[i], &embeddings[b]).total_cmp(&cosine(&embeddings[i], &embeddings[a]))
            });
            let mut counts = [PRIOR / 3.0; 3];
            others.iter().take(5).for_each(|&j| counts[labels[j]] += 1.0);
            let expected: Vec<f64> = counts.iter().map(|c| c / (5.0 + PRIOR)).collect();
            for (a, b) in shares[i].iter().zip(&expected) {
                assert!((a - b).abs() < 1e-9, "image {i}: {:?} vs {expected:?}", shares[i]);
            }
        }
    }

    #[test]
    fn blending_keeps_probabilities() {
        let blended = blend(&[vec![0.9, 0.1]], &[vec![0.2, 0.8]], 0.3);
        assert!((blended[0][0] - 0.69).abs() < 1e-12 && (blended[0][1] - 0.31).abs() < 1e-12);
    }
}
