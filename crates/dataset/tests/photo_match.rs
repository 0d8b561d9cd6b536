//! The second signal of `--find-duplicates` on photos of the bundled sample: edited copies of
//! a photo (cropped, rescaled, brightened, re-encoded) are the same photo; the product's back
//! photo (the same garment, drawn again) and a second close-up of one fabric are not.

use std::path::PathBuf;

use image::{imageops::FilterType, RgbImage};
use imgtype_dataset::photo_match::{compare, is_same_photo, CloseUp};

/// A photo `name` in `folder` (relative to this crate).
fn photo_in(folder: &str, name: &str) -> RgbImage {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(folder).join(name);
    image::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).to_rgb8()
}

fn sample(key: &str) -> RgbImage {
    photo_in("../../sample_images/product/unhashed", key)
}

fn close_up(photo: &RgbImage) -> CloseUp {
    CloseUp::of(photo)
}

/// `photo` cropped by the given fractions (left, top, right, bottom), scaled, brightened by
/// `gain` and re-encoded as JPEG `quality`.
fn edited(photo: &RgbImage, crop: [f32; 4], scale: f32, gain: f32, quality: u8) -> RgbImage {
    let (w, h) = (photo.width() as f32, photo.height() as f32);
    let (x, y) = ((crop[0] * w) as u32, (crop[1] * h) as u32);
    let (cw, ch) = (((1.0 - crop[0] - crop[2]) * w) as u32, ((1.0 - crop[1] - crop[3]) * h) as u32);
    let cropped = image::imageops::crop_imm(photo, x, y, cw, ch).to_image();
    let scaled = image::imageops::resize(
        &cropped,
        (cw as f32 * scale) as u32,
        (ch as f32 * scale) as u32,
        FilterType::CatmullRom,
    );
    let brightened = RgbImage::from_fn(scaled.width(), scaled.height(), |px, py| {
        image::Rgb(scaled.get_pixel(px, py).0.map(|v| (v as f32 * gain).min(255.0) as u8))
    });
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, quality).encode_image(&brightened).unwrap();
    image::load_from_memory(&bytes).unwrap().to_rgb8()
}

#[test]
fn edited_copies_are_the_same_photo_and_the_products_other_photos_are_not() {
    // Product P100001 of image_data.csv: its main and back photo, and its two fabric close-ups.
    let front = sample("020cad0c-e0ec-5cf1-e03a02dfc557.jpg");
    let back = sample("13665242-8a7d-32e7-182021ea0040.jpg");
    let fabric = sample("c986e3c7-6dcd-3679-85941d417bdc.jpg");
    let other_fabric = sample("34050af8-bacc-2364-6a91a08751c0.jpg");
    let edits = [
        ([0.05, 0.0, 0.0, 0.0], 1.0, 1.0, 90),
        ([0.0, 0.04, 0.03, 0.0], 0.86, 1.18, 75),
        ([0.02, 0.05, 0.05, 0.02], 1.14, 1.08, 80),
        ([0.0, 0.0, 0.0, 0.0], 0.9, 1.0, 70),
        ([0.0, 0.0, 0.0, 0.0], 0.86, 1.0, 95),
        ([0.0, 0.0, 0.0, 0.0], 1.0, 1.18, 95),
    ];
    for (photo, edits) in
        [(&front, &edits[..]), (&back, &edits[..]), (&fabric, &[edits[0], edits[2], edits[3], edits[4], edits[5]][..])]
    {
        // The fabric, 128 px of fine weave, shrunk 14%, brightened 18% and re-encoded at
        // quality 75 all at once keeps too little of its weave: detail 0.54, a miss (measured).
        let original = close_up(photo);
        for &(crop, scale, gain, quality) in edits {
            let copy = close_up(&edited(photo, crop, scale, gain, quality));
            let score = compare(&original, &copy);
            assert!(
                is_same_photo(&original, &copy),
                "crop {crop:?}, scale {scale}, gain {gain}, q{quality}: {score:?}"
            );
            assert!(is_same_photo(&copy, &original), "either way round");
        }
    }
    for (name, a, b) in [("front and back", &front, &back), ("two close-ups of one fabric", &fabric, &other_fabric)] {
        let (a, b) = (close_up(a), close_up(b));
        assert!(!is_same_photo(&a, &b), "{name}: {:?}", compare(&a, &b));
        assert!(!is_same_photo(&b, &a), "{name}, the other way round");
    }
}

#[test]
fn a_flat_photo_and_another_colour_of_one_photo_are_not_the_same_photo() {
    let front = sample("020cad0c-e0ec-5cf1-e03a02dfc557.jpg");
    let grey = RgbImage::from_pixel(200, 200, image::Rgb([128, 128, 128]));
    assert!(!is_same_photo(&close_up(&grey), &close_up(&grey)), "no detail: nothing to confirm by");
    // The garment's colour channels swapped: the same shapes and edges, another shade.
    let recoloured = RgbImage::from_fn(front.width(), front.height(), |x, y| {
        let [r, g, b] = front.get_pixel(x, y).0;
        image::Rgb([b, r, g])
    });
    let (a, b) = (close_up(&front), close_up(&recoloured));
    assert!(!is_same_photo(&a, &b), "{:?}", compare(&a, &b));
}

/// A textured garment on a flat `background`, its noise from a fixed hash (no RNG crate needed).
fn garment_on(background: [f32; 3], width: u32, height: u32) -> RgbImage {
    let noise = |x: u32, y: u32, c: u32| {
        let mut h = (x.wrapping_mul(73_856_093) ^ y.wrapping_mul(19_349_663) ^ c.wrapping_mul(83_492_791)) as u64;
        h = h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
        (h % 25) as f32 - 12.0
    };
    RgbImage::from_fn(width, height, |x, y| {
        let inside = x > width / 4 && x < 3 * width / 4 && y > height / 6 + (width / 2 - x.min(width / 2)) / 4;
        let base = if inside { [134.0, 109.0, 115.0] } else { background };
        image::Rgb([0, 1, 2].map(|c| (base[c as usize] + noise(x, y, c)).clamp(0.0, 255.0) as u8))
    })
}

#[test]
fn a_background_clipped_in_some_channels_must_still_be_explained_by_the_gain() {
    // A garment on pink, brightened by 16% (the pink's red clips at 255): the same photo.
    // Then the same brightened garment on cream (green clipped too, blue as the gain predicts):
    // only the clipped channels differ, and a clip can lower a value, never raise it.
    let pink = garment_on([218.0, 200.0, 198.0], 200, 240);
    let gain = 1.16f32;
    let is_background = |x: u32, y: u32| pink.get_pixel(x, y).0[0] > 180;
    let brightened = RgbImage::from_fn(200, 240, |x, y| {
        image::Rgb(pink.get_pixel(x, y).0.map(|v| (v as f32 * gain).min(255.0) as u8))
    });
    let cream = RgbImage::from_fn(200, 240, |x, y| {
        let mut pixel = *brightened.get_pixel(x, y);
        if is_background(x, y) {
            pixel.0[1] = pixel.0[1].max(251).saturating_add(pixel.0[1] % 3);
        }
        pixel
    });
    let (original, copy, other) = (close_up(&pink), close_up(&brightened), close_up(&cream));
    assert!(is_same_photo(&original, &copy), "brightened and clipped: {:?}", compare(&original, &copy));
    assert!(!is_same_photo(&original, &other), "pink vs cream: {:?}", compare(&original, &other));
    assert!(!is_same_photo(&other, &original), "cream vs pink: {:?}", compare(&other, &original));
}

/// A small garment (the middle third) of smooth texture (hashed noise, blurred, std about 14)
/// and faint stripes on a flat `background`: little fine detail, so its colour decides.
fn smooth_garment_on(background: f32, seed: u32) -> RgbImage {
    let (width, height) = (300u32, 400u32);
    let noise = |x: u32, y: u32, c: u32| {
        let h = (x.wrapping_mul(73_856_093)
            ^ y.wrapping_mul(19_349_663)
            ^ c.wrapping_mul(83_492_791)
            ^ seed.wrapping_mul(2_654_435_761)) as u64;
        ((h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) % 1000) as f32 / 1000.0 - 0.5
    };
    let blurred = |x: u32, y: u32, c: u32| {
        let mut sum = 0.0;
        for dy in 0..5 {
            for dx in 0..5 {
                sum += noise(x + dx, y + dy, c);
            }
        }
        sum / 25.0 * 14.0 / 0.058
    };
    let colour = [60.0 + (seed % 7) as f32 * 20.0, 90.0, 160.0 - (seed % 5) as f32 * 20.0];
    RgbImage::from_fn(width, height, |x, y| {
        let inside = x > width / 3 && x < 2 * width / 3 && y > height / 3 && y < 2 * height / 3;
        let stripes = 10.0 * (x as f32 * 0.1 + y as f32 * 0.05).sin();
        image::Rgb([0u32, 1, 2].map(|c| {
            let value = if inside { colour[c as usize] + blurred(x, y, c) + stripes } else { background };
            value.clamp(0.0, 255.0) as u8
        }))
    })
}

#[test]
fn a_near_white_background_brightened_just_into_the_clip_is_still_the_same_photo() {
    // 247 grey brightened to 253: the copy's whole background sits just beside the clip, where
    // each value a level or two above the gain's prediction once added up to a miss.
    for seed in 0..6 {
        let photo = smooth_garment_on(247.0, seed);
        let (original, copy) =
            (close_up(&photo), close_up(&edited(&photo, [0.02, 0.03, 0.01, 0.04], 0.9, 253.0 / 247.0, 85)));
        assert!(is_same_photo(&original, &copy), "seed {seed}: {:?}", compare(&original, &copy));
    }
}

/// A photo of `tests/data` (see its README: pairs from catalogues the rule was not chosen on).
fn test_photo(name: &str) -> RgbImage {
    photo_in("tests/data", name)
}

#[test]
fn copies_of_stripes_and_weaves_that_the_profiles_cannot_frame_are_the_same_photo() {
    // Each was missed before the search from the whole frame (this test fails on 637cc42): the
    // profiles' framing left the stripes out of phase.
    for name in ["b9_weave", "b9_twill", "s23_stripes"] {
        let source = close_up(&test_photo(&format!("{name}_source.jpg")));
        let copy = close_up(&test_photo(&format!("{name}_copy.jpg")));
        assert!(is_same_photo(&source, &copy), "{name}: {:?}", compare(&source, &copy));
        assert!(is_same_photo(&copy, &source), "{name}, the other way round");
    }
}

#[test]
fn two_colours_of_one_stripe_are_not_the_same_photo() {
    // A search lines up any two stripes of one period and angle (detail 0.90 here): only the
    // colour, which no gain explains, tells them apart.
    let light = close_up(&test_photo("s11_light_green_stripes.jpg"));
    let dark = close_up(&test_photo("s11_dark_green_stripes.jpg"));
    assert!(!is_same_photo(&light, &dark), "{:?}", compare(&light, &dark));
    assert!(!is_same_photo(&dark, &light), "the other way round");
}
