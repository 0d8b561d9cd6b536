//! Large JPEGs decoded at a reduced DCT scale, then resized, against decoding them in full
//! then resizing: photos the size of marketplace uploads (bundled samples scaled up to
//! 1600 px with camera-like noise) differ by a few levels at most.

use image::{imageops::FilterType, ImageFormat, RgbImage};
use imgtype::data::decode::{decode_bytes, decode_for_size, jpeg_scale_factor, DecodeLimits};
use imgtype::data::image::resize_square;

fn photo(sample: &std::path::Path, width: u32, height: u32, seed: u32) -> Vec<u8> {
    let small = image::open(sample).unwrap().to_rgb8();
    let mut big = image::imageops::resize(&small, width, height, FilterType::CatmullRom);
    let mut state = seed.wrapping_mul(2654435761).max(1);
    for value in big.iter_mut() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        *value = value.saturating_add((state % 9) as u8).saturating_sub(4);
    }
    let mut bytes = Vec::new();
    RgbImage::from(big).write_to(&mut std::io::Cursor::new(&mut bytes), ImageFormat::Jpeg).unwrap();
    bytes
}

#[test]
fn reduced_scale_decoding_stays_within_a_few_levels_of_full_decoding() {
    let samples: Vec<_> = imgtype_testkit::walk(&imgtype_testkit::sample_images()).into_iter().take(8).collect();
    assert_eq!(jpeg_scale_factor(1600, 1200, 224), Some(2), "600 px ≥ 2 × 224 but 300 is not");
    assert_eq!(jpeg_scale_factor(500, 400, 224), None);
    assert_eq!(jpeg_scale_factor(4000, 3000, 96), Some(8));
    assert_eq!(jpeg_scale_factor(1600, 1200, 96), Some(4), "400×300 ≥ 2 × 96 but 200×150 is not");
    let limits = DecodeLimits::default();
    // At 1/2 for a 224 px model and at 1/4 for a 96 px one, each result ≥ 2× the model's input.
    for (size, factor) in [(224u32, 2u32), (96, 4)] {
        let (mut worst, mut total, mut count) = (0u8, 0u64, 0u64);
        for (i, sample) in samples.iter().enumerate() {
            let (w, h) = if i % 2 == 0 { (1600, 1200) } else { (1200, 1600) };
            let bytes = photo(sample, w, h, i as u32 + 1);
            let scaled = decode_for_size(&bytes, "photo", limits, Some(size)).unwrap();
            assert_eq!(scaled.dimensions(), (w / factor, h / factor), "decoded at 1/{factor}");
            let ours = resize_square(&scaled, size);
            let reference = resize_square(&decode_bytes(&bytes, "photo", limits).unwrap(), size);
            for (a, b) in ours.as_raw().iter().zip(reference.as_raw()) {
                let d = a.abs_diff(*b);
                worst = worst.max(d);
                total += d as u64;
                count += 1;
            }
        }
        let mean = total as f64 / count as f64;
        println!("1/{factor}-scale vs full decoding at {size} px: max {worst} levels, mean {mean:.3}");
        assert!(worst <= 12 && mean <= 1.0, "1/{factor} at {size} px: max {worst}, mean {mean}");
    }
}
