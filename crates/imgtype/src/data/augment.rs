//! Training augmentations, each switchable on its own (colour jitter can erase the
//! white-background cue that separates full shots from detail shots, so nothing is
//! forced on). Per-image transforms work on the resized RGB image; mixup and cutmix
//! mix whole batches and give soft targets.

use image::{Rgb, RgbImage};
use rand::Rng;
use rand_distr::{Beta, Distribution};
use tch::{Kind, Tensor};

use crate::config::AugmentationConfig;

/// The ImageNet mean as a colour: an erased patch becomes 0 after normalisation, as
/// torchvision's `RandomErasing(value=0)` on a normalised tensor.
pub const MEAN_COLOR: [u8; 3] = [124, 116, 104];

pub fn flip_horizontal(image: &mut RgbImage) {
    image::imageops::flip_horizontal_in_place(image);
}

/// Rotates about the centre by `degrees` (counter-clockwise), bilinear; pixels from outside
/// the image take the nearest edge colour, so no black corners appear on light backgrounds.
pub fn rotate(image: &RgbImage, degrees: f64) -> RgbImage {
    let (w, h) = image.dimensions();
    let (cx, cy) = ((w as f64 - 1.0) / 2.0, (h as f64 - 1.0) / 2.0);
    let (sin, cos) = degrees.to_radians().sin_cos();
    let sample = |x: f64, y: f64, c: usize| -> f64 {
        let x = x.clamp(0.0, w as f64 - 1.0);
        let y = y.clamp(0.0, h as f64 - 1.0);
        let (x0, y0) = (x.floor() as u32, y.floor() as u32);
        let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
        let (fx, fy) = (x - x0 as f64, y - y0 as f64);
        let p = |xx, yy| image.get_pixel(xx, yy)[c] as f64;
        p(x0, y0) * (1.0 - fx) * (1.0 - fy)
            + p(x1, y0) * fx * (1.0 - fy)
            + p(x0, y1) * (1.0 - fx) * fy
            + p(x1, y1) * fx * fy
    };
    RgbImage::from_fn(w, h, |x, y| {
        // Inverse mapping: where in the source does this output pixel come from.
        let (dx, dy) = (x as f64 - cx, y as f64 - cy);
        let sx = cos * dx - sin * dy + cx;
        let sy = sin * dx + cos * dy + cy;
        Rgb([0, 1, 2].map(|c| sample(sx, sy, c).round().clamp(0.0, 255.0) as u8))
    })
}

fn gray(p: [f32; 3]) -> f32 {
    0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]
}

fn rgb_to_hsv(p: [f32; 3]) -> [f32; 3] {
    let (r, g, b) = (p[0], p[1], p[2]);
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let delta = max - min;
    let hue = if delta == 0.0 {
        0.0
    } else if max == r {
        ((g - b) / delta).rem_euclid(6.0) / 6.0
    } else if max == g {
        ((b - r) / delta + 2.0) / 6.0
    } else {
        ((r - g) / delta + 4.0) / 6.0
    };
    let saturation = if max == 0.0 { 0.0 } else { delta / max };
    [hue, saturation, max]
}

fn hsv_to_rgb(p: [f32; 3]) -> [f32; 3] {
    let (h, s, v) = (p[0].rem_euclid(1.0) * 6.0, p[1], p[2]);
    let i = h.floor();
    let f = h - i;
    let (a, b, c) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    match i as i32 % 6 {
        0 => [v, c, a],
        1 => [b, v, a],
        2 => [a, v, c],
        3 => [a, b, v],
        4 => [c, a, v],
        _ => [v, a, b],
    }
}

/// Colour-jitter factors, as torchvision's `ColorJitter`: brightness, contrast and
/// saturation factors from [max(0, 1 - x), 1 + x], a hue shift from [-hue, hue].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Jitter {
    pub brightness: f32,
    pub contrast: f32,
    pub saturation: f32,
    pub hue: f32,
}

impl Jitter {
    pub fn sample<R: Rng>(config: &AugmentationConfig, rng: &mut R) -> Self {
        let mut factor = |x: f64| if x > 0.0 { rng.gen_range((1.0 - x).max(0.0)..=1.0 + x) as f32 } else { 1.0 };
        let (brightness, contrast, saturation) =
            (factor(config.brightness), factor(config.contrast), factor(config.saturation));
        let hue = if config.hue > 0.0 { rng.gen_range(-config.hue..=config.hue) as f32 } else { 0.0 };
        Self { brightness, contrast, saturation, hue }
    }

    /// Applies brightness, contrast, saturation, hue in that order, clamping after each.
    pub fn apply(&self, image: &mut RgbImage) {
        let clamp = |p: [f32; 3]| p.map(|v| v.clamp(0.0, 255.0));
        let mut pixels: Vec<[f32; 3]> = image.pixels().map(|p| p.0.map(f32::from)).collect();
        for p in pixels.iter_mut() {
            *p = clamp(p.map(|v| v * self.brightness));
        }
        let mean = pixels.iter().map(|&p| gray(p)).sum::<f32>() / pixels.len().max(1) as f32;
        for p in pixels.iter_mut() {
            *p = clamp(p.map(|v| (v - mean) * self.contrast + mean));
            let g = gray(*p);
            *p = clamp(p.map(|v| (v - g) * self.saturation + g));
            if self.hue != 0.0 {
                let [h, s, v] = rgb_to_hsv(p.map(|v| v / 255.0));
                *p = clamp(hsv_to_rgb([h + self.hue, s, v]).map(|v| v * 255.0));
            }
        }
        for (dst, p) in image.pixels_mut().zip(pixels) {
            *dst = Rgb(p.map(|v| v.round() as u8));
        }
    }
}

/// The rectangle (x, y, w, h) that random erasing would fill: area 2–33 % of the image,
/// aspect ratio log-uniform in [0.3, 3.3], as torchvision; None if no fit in 10 tries.
pub fn erasing_box<R: Rng>(width: u32, height: u32, rng: &mut R) -> Option<(u32, u32, u32, u32)> {
    let area = (width * height) as f64;
    for _ in 0..10 {
        let target = area * rng.gen_range(0.02..0.33);
        let ratio = rng.gen_range(0.3f64.ln()..3.3f64.ln()).exp();
        let w = (target * ratio).sqrt().round() as u32;
        let h = (target / ratio).sqrt().round() as u32;
        if w > 0 && h > 0 && w < width && h < height {
            return Some((rng.gen_range(0..=width - w), rng.gen_range(0..=height - h), w, h));
        }
    }
    None
}

pub fn erase(image: &mut RgbImage, (x, y, w, h): (u32, u32, u32, u32)) {
    for yy in y..y + h {
        for xx in x..x + w {
            image.put_pixel(xx, yy, Rgb(MEAN_COLOR));
        }
    }
}

/// The per-image training augmentations the config switches on, in torchvision's usual order.
pub fn augment_image<R: Rng>(image: &mut RgbImage, config: &AugmentationConfig, rng: &mut R) {
    if config.horizontal_flip && rng.gen_bool(0.5) {
        flip_horizontal(image);
    }
    if config.rotation > 0.0 {
        let degrees = rng.gen_range(-config.rotation..=config.rotation);
        *image = rotate(image, degrees);
    }
    if config.color_jitter {
        Jitter::sample(config, rng).apply(image);
    }
    if config.random_erasing && rng.gen_bool(config.random_erasing_prob) {
        if let Some(rect) = erasing_box(image.width(), image.height(), rng) {
            erase(image, rect);
        }
    }
}

/// Mixes a batch `[N, 3, H, W]` with its one-hot targets `[N, C]`: mixup (blend with a
/// permuted batch) or cutmix (paste a box of it), λ ~ Beta(α, α). With both enabled one
/// of them is chosen per batch at random, as timm does. Soft targets still sum to 1.
pub fn mix_batch<R: Rng>(
    images: &Tensor,
    targets: &Tensor,
    config: &AugmentationConfig,
    rng: &mut R,
) -> (Tensor, Tensor) {
    let use_mixup = config.mixup_alpha > 0.0;
    let use_cutmix = config.cutmix_alpha > 0.0;
    let n = images.size()[0];
    if (!use_mixup && !use_cutmix) || n < 2 {
        return (images.shallow_clone(), targets.shallow_clone());
    }
    let cutmix = use_cutmix && (!use_mixup || rng.gen_bool(0.5));
    let alpha = if cutmix { config.cutmix_alpha } else { config.mixup_alpha };
    let mut lambda = Beta::new(alpha, alpha).expect("alpha > 0").sample(rng);
    let mut permutation: Vec<i64> = (0..n).collect();
    use rand::seq::SliceRandom;
    permutation.shuffle(rng);
    let permutation = Tensor::from_slice(&permutation).to_device(images.device());
    let other_images = images.index_select(0, &permutation);
    let other_targets = targets.index_select(0, &permutation);
    let mixed = if cutmix {
        let (h, w) = (images.size()[2], images.size()[3]);
        let cut = (1.0 - lambda).sqrt();
        let (cut_h, cut_w) = ((h as f64 * cut) as i64, (w as f64 * cut) as i64);
        let (cy, cx) = (rng.gen_range(0..h), rng.gen_range(0..w));
        let (y0, y1) = ((cy - cut_h / 2).clamp(0, h), (cy + cut_h / 2).clamp(0, h));
        let (x0, x1) = ((cx - cut_w / 2).clamp(0, w), (cx + cut_w / 2).clamp(0, w));
        let mixed = images.copy();
        if y1 > y0 && x1 > x0 {
            mixed.narrow(2, y0, y1 - y0).narrow(3, x0, x1 - x0).copy_(&other_images.narrow(2, y0, y1 - y0).narrow(
                3,
                x0,
                x1 - x0,
            ));
        }
        lambda = 1.0 - ((y1 - y0) * (x1 - x0)) as f64 / (h * w) as f64;
        mixed
    } else {
        images * lambda + other_images * (1.0 - lambda)
    };
    let soft = targets.to_kind(Kind::Float) * lambda + other_targets.to_kind(Kind::Float) * (1.0 - lambda);
    (mixed, soft)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| Rgb([(x * 7 % 256) as u8, (y * 11 % 256) as u8, ((x + y) * 3 % 256) as u8]))
    }

    #[test]
    fn flip_mirrors_pixels() {
        let original = gradient(9, 5);
        let mut flipped = original.clone();
        flip_horizontal(&mut flipped);
        for (x, y, p) in original.enumerate_pixels() {
            assert_eq!(flipped.get_pixel(8 - x, y), p);
        }
    }

    #[test]
    fn rotation_by_zero_is_identity_and_by_90_turns_the_image() {
        let original = gradient(7, 7);
        assert_eq!(rotate(&original, 0.0), original);
        let turned = rotate(&original, 90.0);
        // Output (x, y) samples source (cx - (y - cy), cy + (x - cx)) for a +90° turn.
        for (x, y, p) in turned.enumerate_pixels() {
            assert_eq!(p, original.get_pixel(6 - y, x), "at ({x}, {y})");
        }
        assert_eq!(rotate(&rotate(&original, 90.0), -90.0), original);
    }

    #[test]
    fn erasing_changes_exactly_one_rectangle_to_the_mean_colour() {
        let original = gradient(32, 24);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let rect = erasing_box(32, 24, &mut rng).unwrap();
        let mut erased = original.clone();
        erase(&mut erased, rect);
        let (x0, y0, w, h) = rect;
        let area = (32 * 24) as f64;
        assert!((0.02 * area..=0.33 * area + 2.0 * (w + h) as f64).contains(&((w * h) as f64)), "{rect:?}");
        for (x, y, p) in erased.enumerate_pixels() {
            let inside = (x0..x0 + w).contains(&x) && (y0..y0 + h).contains(&y);
            if inside {
                assert_eq!(p.0, MEAN_COLOR);
            } else {
                assert_eq!(p, original.get_pixel(x, y));
            }
        }
    }

    #[test]
    fn jitter_factors_behave_as_torchvision() {
        let mut image = RgbImage::from_pixel(4, 4, Rgb([100, 50, 200]));
        Jitter { brightness: 0.5, contrast: 1.0, saturation: 1.0, hue: 0.0 }.apply(&mut image);
        assert_eq!(image.get_pixel(0, 0).0, [50, 25, 100]);
        let mut grey = RgbImage::from_pixel(2, 2, Rgb([100, 50, 200]));
        Jitter { brightness: 1.0, contrast: 1.0, saturation: 0.0, hue: 0.0 }.apply(&mut grey);
        let p = grey.get_pixel(0, 0).0;
        assert!(p[0] == p[1] && p[1] == p[2], "{p:?}");
        let mut shifted = RgbImage::from_pixel(1, 1, Rgb([255, 0, 0]));
        Jitter { brightness: 1.0, contrast: 1.0, saturation: 1.0, hue: 1.0 / 3.0 }.apply(&mut shifted);
        assert_eq!(shifted.get_pixel(0, 0).0, [0, 255, 0], "red shifted by a third of the hue circle is green");
    }

    #[test]
    fn mixup_and_cutmix_targets_sum_to_one() {
        let images = Tensor::rand([6, 3, 16, 16], (Kind::Float, tch::Device::Cpu));
        let targets = Tensor::from_slice(&[0i64, 1, 2, 3, 0, 1]).one_hot(4).to_kind(Kind::Float);
        for (mixup, cutmix) in [(0.4, 0.0), (0.0, 1.0), (0.4, 1.0)] {
            let config = AugmentationConfig { mixup_alpha: mixup, cutmix_alpha: cutmix, ..Default::default() };
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
            let (mixed, soft) = mix_batch(&images, &targets, &config, &mut rng);
            assert_eq!(mixed.size(), images.size());
            let sums = soft.sum_dim_intlist(1, false, Kind::Float);
            assert!((sums - 1.0).abs().max().double_value(&[]) < 1e-6);
            assert!(soft.max().double_value(&[]) < 1.0 + 1e-6);
        }
        let off = AugmentationConfig { mixup_alpha: 0.0, cutmix_alpha: 0.0, ..Default::default() };
        let (same, same_targets) = mix_batch(&images, &targets, &off, &mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
        assert_eq!((same - &images).abs().max().double_value(&[]), 0.0);
        assert_eq!((same_targets - &targets).abs().max().double_value(&[]), 0.0);
    }

    #[test]
    fn cutmix_pastes_a_box_from_another_image() {
        let images = Tensor::cat(
            &[
                Tensor::zeros([1, 3, 20, 20], (Kind::Float, tch::Device::Cpu)),
                Tensor::ones([1, 3, 20, 20], (Kind::Float, tch::Device::Cpu)),
            ],
            0,
        );
        let targets = Tensor::from_slice(&[0i64, 1]).one_hot(2).to_kind(Kind::Float);
        let config = AugmentationConfig { mixup_alpha: 0.0, cutmix_alpha: 1.0, ..Default::default() };
        for seed in 0..10 {
            let (mixed, soft) =
                mix_batch(&images, &targets, &config, &mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
            // Each image's target weight on the other class equals the pasted area.
            let first = mixed.get(0);
            let pasted = first.mean(Kind::Float).double_value(&[]);
            let other_weight = soft.double_value(&[0, 1]);
            let kept = soft.double_value(&[0, 0]);
            if (kept - 1.0).abs() > 1e-9 {
                assert!((pasted - other_weight).abs() < 1e-6, "seed {seed}: pasted {pasted}, target {other_weight}");
            }
        }
    }
}
