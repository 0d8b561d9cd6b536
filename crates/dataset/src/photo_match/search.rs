//! A framing found by searching, for the pairs the row and column means cannot frame: a
//! weave or a stripe has flat or periodic means, so the profiles' crop lands a period or
//! more off and the detail, which is all about the stripes' phase, does not line up. The
//! search nudges the sides of the whole frame inward while the two photos' detail agrees
//! better: in grey on half-size close-ups first, then, where that is promising, at full size.

use super::{correlation, cropped, detail, detail_of, CloseUp, CropBox, SIDE};

/// A pair is searched only when its row and column means agree at least this well under the
/// profiles' framing (the worse axis, the better way round): one photo's layout, its detail
/// not lined up. Every copy on the bundled sample with planted copies is above it (the lowest
/// 0.970); so are most candidate pairs on `make_sample_data.py`'s catalogues (where the search
/// costs most) and about 1 in 10 on catalogue B.
pub(super) const LAYOUT_AGREES: f32 = 0.95;

/// The search goes on to full size only when the half-size close-ups' detail agrees this well
/// after the coarse steps: half the lowest that a copy on the bundled sample reached there
/// (0.587, searching every candidate pair), rounded down. Most other pairs stop here, at a
/// twelfth of a full-size step's cost.
const PROMISE: f32 = 0.3;

/// A searched framing counts only where the colours agree as closely as copies' do (the
/// highest colour difference of a copy on the bundled sample, 0.0163, rounded up): a free
/// search lines up any two stripes of one period and angle (seen: two greens of one diagonal
/// stripe, detail 0.90 and colour 0.022), so the detail it finds says less than the profiles'.
pub(super) const MAX_COLOUR: f32 = 0.0165;

/// How far each side may move inward, as a fraction of the side: each photo is searched as
/// the source in turn, and of a copy and its source one is (nearly) a crop of the other.
const MOST_INWARD: f32 = 0.15;

/// A close-up in grey, with the detail a search compares against: made once per pair, as
/// each photo is searched from and searched towards.
pub(super) struct GreyCloseUp {
    grey: Vec<f32>,
    half: Vec<f32>,
    half_detail: Vec<f32>,
    detail: Vec<f32>,
}

impl GreyCloseUp {
    pub(super) fn of(photo: &CloseUp) -> Self {
        let grey = photo.grey();
        let half = halved(&grey);
        let (half_detail, detail) = (detail_of(&half, SIDE / 2), detail(&grey));
        Self { grey, half, half_detail, detail }
    }
}

/// The crop of `source` whose detail, in grey, best matches `target`'s, searched from the
/// whole frame; `None` where the coarse search shows no promise (see [`PROMISE`]).
pub(super) fn searched_crop(source: &GreyCloseUp, target: &GreyCloseUp) -> Option<CropBox> {
    let half_side = SIDE / 2;
    let coarse =
        |crop| correlation(&detail_of(&cropped(&source.half, crop, half_side), half_side), &target.half_detail);
    let whole = CropBox([0.0; 4]);
    let (promise, crop) = descend((coarse(whole), whole), &[0.02, 0.01], Some(0.0..=MOST_INWARD), true, &coarse);
    if promise < PROMISE {
        return None;
    }
    let fine = |crop| correlation(&detail(&cropped(&source.grey, crop, SIDE)), &target.detail);
    let (_, crop) = descend((fine(crop), crop), &[0.005, 0.0025, 0.001], Some(0.0..=MOST_INWARD), true, &fine);
    Some(crop)
}

/// A SIDE-square plane averaged over 2×2 blocks.
fn halved(plane: &[f32]) -> Vec<f32> {
    let half = SIDE / 2;
    let mut out = vec![0f32; half * half];
    for y in 0..half {
        for x in 0..half {
            let at = 2 * y * SIDE + 2 * x;
            out[y * half + x] = (plane[at] + plane[at + 1] + plane[at + SIDE] + plane[at + SIDE + 1]) / 4.0;
        }
    }
    out
}

/// From `start` (its agreement and crop), each side nudged in turn by each of `steps`, kept
/// where `agreement` rises and the side stays within `bounds` (where given): one round per
/// step, or rounds until none rises (`until_settled`).
pub(super) fn descend(
    start: (f32, CropBox),
    steps: &[f32],
    bounds: Option<std::ops::RangeInclusive<f32>>,
    until_settled: bool,
    agreement: &impl Fn(CropBox) -> f32,
) -> (f32, CropBox) {
    let (mut best, mut crop) = start;
    for &step in steps {
        loop {
            let mut improved = false;
            for side in 0..4 {
                for direction in [-1.0f32, 1.0] {
                    let mut nudged = crop;
                    nudged.0[side] += direction * step;
                    if bounds.as_ref().is_some_and(|bounds| !bounds.contains(&nudged.0[side])) {
                        continue;
                    }
                    let score = agreement(nudged);
                    if score > best {
                        (best, crop, improved) = (score, nudged, true);
                    }
                }
            }
            if !(until_settled && improved) {
                break;
            }
        }
    }
    (best, crop)
}
