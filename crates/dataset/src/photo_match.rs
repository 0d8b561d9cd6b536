//! The second signal behind a near-duplicate: whether two photos that the signatures call
//! alike are the same photo, edited. A copy is the other photo cropped a little (a box within
//! the frame), rescaled, brightened and re-encoded: once that box is found, the two agree in
//! their fine detail (edges, texture, sensor noise) up to the encoder's noise. Another photo
//! of the same thing (the back of a garment, another garment of one cut, a second close-up of
//! one fabric) agrees in its layout but not in that detail.
//!
//! Each photo is looked at as a [`SIDE`]-square close-up. The box is found per axis from the
//! photos' row and column means (a crop in x moves only the column profile), moved by the
//! whole-pixel shift that best lines up the two photos' detail, then refined side by side;
//! where the means agree but the detail does not (a stripe framed a period off), it is also
//! searched for (`search.rs`). The score is the correlation of the two photos' detail (each
//! pixel less its 3×3 neighbourhood's mean), blind to a brightness gain, less a colour
//! difference that a gain does not explain.

use image::RgbImage;

mod search;
mod shift;
use search::{descend, GreyCloseUp};
use shift::best_shift;

/// The close-up's side in pixels.
pub const SIDE: usize = 128;
/// How far into its frame a copy may be cropped, per side, searched (as a fraction of the
/// side); a little negative too, for two copies cropped differently from one original.
const CROP_RANGE: (f32, f32) = (-0.03, 0.09);
const CROP_STEP: f32 = 0.005;
/// A pair is the same photo when its detail agreement less [`COLOUR_WEIGHT`] times its
/// colour difference is at least [`MIN_AGREEMENT`]. Both were chosen on the bundled sample with
/// planted copies (`scripts/bench/plant_duplicates.py`): the weight where copies and other
/// candidate pairs stood furthest apart (on an earlier draw of its copies), the threshold
/// halfway between every other pair (the highest 0.468) and every copy (the lowest 0.545),
/// 0.5065, rounded, with the colour difference and the Lanczos close-ups as they are now. The
/// README has the catalogues they were not chosen on.
pub const MIN_AGREEMENT: f32 = 0.51;
pub const COLOUR_WEIGHT: f32 = 15.0;
/// Twice the most that refining the profiles' framing added to a copy's agreement on the
/// bundled sample with planted copies (0.22, measured before the FFT shift was added).
const MOST_REFINING_GAINS: f32 = 0.45;

/// A photo squeezed to [`SIDE`]×[`SIDE`], three planes of 0–255 values.
#[derive(Debug, Clone)]
pub struct CloseUp {
    planes: Vec<f32>,
    /// The mean of each column and of each row, per channel (3 × SIDE values each): every
    /// comparison a photo takes part in frames it by these.
    column_means: Vec<f32>,
    row_means: Vec<f32>,
}

/// The crop box of a photo in fractions of its width and height: left, right, top, bottom.
#[derive(Debug, Clone, Copy, PartialEq)]
struct CropBox([f32; 4]);

impl CloseUp {
    /// `photo` squeezed to [`SIDE`] square by Lanczos3: a weave finer than the close-up then
    /// leaves little moiré, which would differ between a copy and its source (another scale).
    pub fn of(photo: &RgbImage) -> Self {
        let image = imgtype_images::image::resize_square_lanczos(photo, SIDE as u32);
        let mut planes = vec![0f32; 3 * SIDE * SIDE];
        for (index, pixel) in image.pixels().enumerate() {
            (0..3).for_each(|c| planes[c * SIDE * SIDE + index] = pixel[c] as f32);
        }
        let (column_means, row_means) = (profile(&planes, true), profile(&planes, false));
        Self { planes, column_means, row_means }
    }

    /// This photo's `crop` resampled (bilinear) to a full close-up.
    fn cropped(&self, crop: CropBox) -> Vec<f32> {
        cropped(&self.planes, crop, SIDE)
    }

    /// The photo in grey (its channels' mean): what a framing search looks at, a third of
    /// the work.
    fn grey(&self) -> Vec<f32> {
        let plane = |c: usize| &self.planes[c * SIDE * SIDE..(c + 1) * SIDE * SIDE];
        plane(0).iter().zip(plane(1)).zip(plane(2)).map(|((r, g), b)| (r + g + b) / 3.0).collect()
    }
}

/// `crop` of each `side`-square plane of `planes` resampled (bilinear) to a full plane.
fn cropped(planes: &[f32], crop: CropBox, side: usize) -> Vec<f32> {
    let [left, right, top, bottom] = crop.0;
    let columns = taps(left, right, side);
    let rows = taps(top, bottom, side);
    let mut out = vec![0f32; planes.len()];
    for (plane, out) in planes.chunks_exact(side * side).zip(out.chunks_exact_mut(side * side)) {
        for (y, &(y0, y1, fy)) in rows.iter().enumerate() {
            let (upper, lower) = (&plane[y0 * side..(y0 + 1) * side], &plane[y1 * side..(y1 + 1) * side]);
            for (x, &(x0, x1, fx)) in columns.iter().enumerate() {
                let top = upper[x0] + (upper[x1] - upper[x0]) * fx;
                let bottom = lower[x0] + (lower[x1] - lower[x0]) * fx;
                out[y * side + x] = top + (bottom - top) * fy;
            }
        }
    }
    out
}

/// Mean of each column (`by_column`) or row of `planes`, per channel: 3 × SIDE values.
fn profile(planes: &[f32], by_column: bool) -> Vec<f32> {
    let mut profile = vec![0f32; 3 * SIDE];
    for c in 0..3 {
        for y in 0..SIDE {
            for x in 0..SIDE {
                let at = if by_column { x } else { y };
                profile[c * SIDE + at] += planes[c * SIDE * SIDE + y * SIDE + x] / SIDE as f32;
            }
        }
    }
    profile
}

/// For each of `side` output positions over `[low, 1 − high]` of an axis as long: the two
/// source positions and the weight of the second (pixel centres, clamped at the edges).
fn taps(low: f32, high: f32, side: usize) -> Vec<(usize, usize, f32)> {
    let span = 1.0 - low - high;
    (0..side)
        .map(|i| {
            let at = ((low + (i as f32 + 0.5) / side as f32 * span) * side as f32 - 0.5).clamp(0.0, (side - 1) as f32);
            let first = at.floor() as usize;
            (first, (first + 1).min(side - 1), at - first as f32)
        })
        .collect()
}

/// A profile's `[low, 1 − high]` resampled to SIDE positions, per channel.
fn crop_profile(profile: &[f32], low: f32, high: f32, taps_buffer: &mut Vec<f32>) {
    taps_buffer.clear();
    let positions = taps(low, high, SIDE);
    for c in 0..3 {
        let channel = &profile[c * SIDE..(c + 1) * SIDE];
        taps_buffer.extend(positions.iter().map(|&(a, b, f)| channel[a] + (channel[b] - channel[a]) * f));
    }
}

/// The correlation of two equally long signals, blind to a gain and an offset; 0 when either
/// is flat.
fn correlation(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len() as f32;
    let (mean_a, mean_b) = (a.iter().sum::<f32>() / n, b.iter().sum::<f32>() / n);
    let (mut ab, mut aa, mut bb) = (0f32, 0f32, 0f32);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x - mean_a, y - mean_b);
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa <= f32::EPSILON || bb <= f32::EPSILON {
        0.0
    } else {
        ab / (aa * bb).sqrt()
    }
}

/// Each value less the mean of its 3×3 neighbourhood (edges clamped), per SIDE-square plane.
fn detail(planes: &[f32]) -> Vec<f32> {
    detail_of(planes, SIDE)
}

/// [`detail`] of `side`-square planes.
fn detail_of(planes: &[f32], side: usize) -> Vec<f32> {
    let smooth = smoothed(planes, side);
    planes.iter().zip(&smooth).map(|(v, s)| v - s).collect()
}

/// The mean of each value's 3×3 neighbourhood (edges clamped), per `side`-square plane: rows
/// of three summed, then columns of three.
fn smoothed(planes: &[f32], side: usize) -> Vec<f32> {
    let mut across = vec![0f32; planes.len()];
    for (row, out) in planes.chunks_exact(side).zip(across.chunks_exact_mut(side)) {
        out[0] = 2.0 * row[0] + row[1];
        for x in 1..side - 1 {
            out[x] = row[x - 1] + row[x] + row[x + 1];
        }
        out[side - 1] = row[side - 2] + 2.0 * row[side - 1];
    }
    let mut out = vec![0f32; planes.len()];
    for (plane, out) in across.chunks_exact(side * side).zip(out.chunks_exact_mut(side * side)) {
        for y in 0..side {
            let (up, down) = (y.saturating_sub(1), (y + 1).min(side - 1));
            for x in 0..side {
                out[y * side + x] = (plane[up * side + x] + plane[y * side + x] + plane[down * side + x]) / 9.0;
            }
        }
    }
    out
}

/// The crop of `source` along one axis whose profile best matches `target`'s, as (how well
/// they then agree, low, high).
fn best_axis_crop(source: &[f32], target: &[f32]) -> (f32, f32, f32) {
    let mut buffer = Vec::with_capacity(3 * SIDE);
    let mut best = (f32::MIN, 0.0, 0.0);
    let mut try_crop = |low: f32, high: f32, best: &mut (f32, f32, f32)| {
        crop_profile(source, low, high, &mut buffer);
        let score = correlation(&buffer, target);
        if score > best.0 {
            *best = (score, low, high);
        }
    };
    // A coarse grid over the whole range, then the fine one around its best: the profiles'
    // agreement changes smoothly with the crop.
    let coarse = 4.0 * CROP_STEP;
    let steps = ((CROP_RANGE.1 - CROP_RANGE.0) / coarse).round() as usize;
    for low in (0..=steps).map(|k| CROP_RANGE.0 + k as f32 * coarse) {
        for high in (0..=steps).map(|k| CROP_RANGE.0 + k as f32 * coarse) {
            try_crop(low, high, &mut best);
        }
    }
    let (_, low, high) = best;
    for dl in -4..=4 {
        for dh in -4..=4 {
            try_crop(low + dl as f32 * CROP_STEP, high + dh as f32 * CROP_STEP, &mut best);
        }
    }
    best
}

/// How far `target` is from one brightness gain of `source`: the mean absolute difference, in
/// fractions of full scale, of their smoothed values. The gain comes from the values away from
/// anything either photo has clipped. Beside the target's clip a target value is only ever
/// short of what the gain predicts (a white label brightened to 255 loses what the clip took),
/// and beside the source's clip the prediction is short of the target; so there only a miss
/// the other way counts, by what it exceeds [`CLIP_TOLERANCE`]: a pink background is not a
/// cream one brightened, even where the cream one is clipped in two of its channels. The
/// misses are summed over every value but divided by the free ones, so a photo mostly beside
/// a clip weighs each such miss more (measured: one 74% clipped, copied at gain 1.18, scores
/// 0.501).
fn colour_difference(source: &[f32], target: &[f32]) -> f32 {
    let near_clip = |planes: &[f32]| smoothed(&planes.iter().map(|&v| f32::from(v >= 250.0)).collect::<Vec<_>>(), SIDE);
    let (source_clip, target_clip) = (near_clip(source), near_clip(target));
    let (source, target) = (smoothed(source, SIDE), smoothed(target, SIDE));
    let free = |i: usize| source_clip[i] == 0.0 && target_clip[i] == 0.0;
    let (st, ss, count) = (0..source.len())
        .filter(|&i| free(i))
        .fold((0f32, 0f32, 0usize), |(st, ss, n), i| (st + source[i] * target[i], ss + source[i] * source[i], n + 1));
    // Where little is unclipped (a small garment on white) those few values are what tells a
    // red shirt from a blue one; only an all-white pair has nothing to tell.
    if count < SIDE || ss <= f32::EPSILON {
        return 0.0;
    }
    let gain = st / ss;
    // The one-sided misses add to the free values' mean rather than thin it: most are 0.
    let mut missed = 0f32;
    for i in 0..source.len() {
        let predicted = gain * source[i];
        missed += match (source_clip[i] > 0.0, target_clip[i] > 0.0) {
            (false, false) => (target[i] - predicted).abs(),
            // The target's clip lowers the target, the source's clip the prediction.
            (false, true) => (target[i] - predicted - CLIP_TOLERANCE).max(0.0),
            (true, false) => (predicted - target[i] - CLIP_TOLERANCE).max(0.0),
            (true, true) => 0.0,
        };
    }
    missed / count as f32 / 255.0
}

/// How far (in 0–255 levels) a value beside a clip may stand above the gain's prediction and
/// still count as matched: the gain, fitted on the darker free values, is a few levels out at
/// the top of the range (a near-white background brightened just into the clip: 247 → 253,
/// copies missed without it), and the encoder's noise is as much.
const CLIP_TOLERANCE: f32 = 3.0;

/// One way of framing a pair: `source`'s crop and how it then agrees with the target.
#[derive(Debug, Clone, Copy)]
struct Framing {
    crop: CropBox,
    detail: f32,
    colour: f32,
}

impl Framing {
    fn agreement(&self) -> f32 {
        self.detail - COLOUR_WEIGHT * self.colour
    }

    /// The crop of `source` that the row and column profiles point to, each axis alone, then
    /// moved by the whole-pixel shift that best lines up the two photos' detail: the profiles
    /// cannot see the phase of a fine stripe or weave, which the detail is all about. Beside
    /// it, how well the row and column means agree once cropped (the worse axis).
    fn from_profiles(source: &CloseUp, target: &CloseUp, target_detail: &[f32]) -> (Self, f32) {
        let (across, left, right) = best_axis_crop(&source.column_means, &target.column_means);
        let (down, top, bottom) = best_axis_crop(&source.row_means, &target.row_means);
        let mut crop = CropBox([left, right, top, bottom]);
        let (dx, dy) = best_shift(&detail(&source.cropped(crop)), target_detail);
        let (width, height) = (1.0 - left - right, 1.0 - top - bottom);
        let (along_x, along_y) = (dx as f32 / SIDE as f32 * width, dy as f32 / SIDE as f32 * height);
        crop.0 = [left + along_x, right - along_x, top + along_y, bottom - along_y];
        let cropped = source.cropped(crop);
        let framing = Self {
            crop,
            detail: correlation(&detail(&cropped), target_detail),
            colour: colour_difference(&cropped, &target.planes),
        };
        (framing, across.min(down))
    }

    /// Each side nudged in turn, in shrinking steps, while the detail agrees better: the
    /// profiles see each axis alone, the detail both.
    fn refined(mut self, source: &CloseUp, target: &CloseUp, target_detail: &[f32]) -> Self {
        let agreement = |crop| correlation(&detail(&source.cropped(crop)), target_detail);
        (self.detail, self.crop) = descend((self.detail, self.crop), &[0.004, 0.002, 0.001], None, false, &agreement);
        self.colour = colour_difference(&source.cropped(self.crop), &target.planes);
        self
    }

    /// The crop of `source` that [`search::searched_crop`] finds, where it finds one.
    fn searched(
        source: (&CloseUp, &GreyCloseUp),
        target: (&CloseUp, &GreyCloseUp),
        target_detail: &[f32],
    ) -> Option<Self> {
        let crop = search::searched_crop(source.1, target.1)?;
        let cropped = source.0.cropped(crop);
        Some(Self {
            crop,
            detail: correlation(&detail(&cropped), target_detail),
            colour: colour_difference(&cropped, &target.0.planes),
        })
    }
}

/// Whether two close-ups are one photo, edited: see [`MIN_AGREEMENT`].
pub fn is_same_photo(a: &CloseUp, b: &CloseUp) -> bool {
    let Comparison { detail, colour } = compare(a, b);
    detail - COLOUR_WEIGHT * colour >= MIN_AGREEMENT
}

/// How two photos agree once one is cropped to frame the other.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    /// The correlation of their fine detail: near 1 for a copy, lower for another photo of
    /// the same thing.
    pub detail: f32,
    /// How far their colours are from one brightness gain (mean absolute difference, in
    /// fractions of full scale, one-sided beside a clip): near 0 for a copy, more for another
    /// shade.
    pub colour: f32,
}

/// How alike two close-ups are, either way round (whichever frames the other better). The
/// profiles' framing is refined only where refining could make it a copy: on the bundled
/// sample's copies refining added at most 0.22 to the agreement, so a pair more than
/// [`MOST_REFINING_GAINS`] short is left as it is (most candidate pairs, at a tenth of the
/// cost). A pair still short whose row and column means agree is searched either way round
/// (see `search.rs`).
pub fn compare(a: &CloseUp, b: &CloseUp) -> Comparison {
    let (detail_a, detail_b) = (detail(&a.planes), detail(&b.planes));
    let (a_framed, a_layout) = Framing::from_profiles(a, b, &detail_b);
    let (b_framed, b_layout) = Framing::from_profiles(b, a, &detail_a);
    let mut best = if a_framed.agreement() >= b_framed.agreement() { a_framed } else { b_framed };
    if best.agreement() >= MIN_AGREEMENT - MOST_REFINING_GAINS {
        let (source, target, target_detail) =
            if a_framed.agreement() >= b_framed.agreement() { (a, b, &detail_b) } else { (b, a, &detail_a) };
        best = best.refined(source, target, target_detail);
    }
    if best.agreement() < MIN_AGREEMENT && a_layout.max(b_layout) >= search::LAYOUT_AGREES {
        let (grey_a, grey_b) = (GreyCloseUp::of(a), GreyCloseUp::of(b));
        for (source, target, target_detail) in
            [((a, &grey_a), (b, &grey_b), &detail_b), ((b, &grey_b), (a, &grey_a), &detail_a)]
        {
            match Framing::searched(source, target, target_detail) {
                Some(searched) if searched.agreement() > best.agreement() && searched.colour <= search::MAX_COLOUR => {
                    best = searched
                }
                _ => {}
            }
        }
    }
    Comparison { detail: best.detail, colour: best.colour }
}
