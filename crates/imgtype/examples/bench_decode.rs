//! Decoding speed on a folder of photos: `bench_decode DIR [size=224]`. Times full decoding
//! then resizing (as before reduced-scale decoding) against `decode_for_size` then resizing,
//! alternating, and prints images/s of each and the largest pixel difference.

use imgtype::data::decode::{decode_bytes, decode_for_size, DecodeLimits};
use imgtype::data::image::resize_square;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args.first().expect("usage: bench_decode DIR [size]");
    let size: u32 = args.get(1).map(|s| s.parse().unwrap()).unwrap_or(224);
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let bytes: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    let limits = DecodeLimits::default();
    let (mut full_s, mut scaled_s, mut worst) = (0.0, 0.0, 0u8);
    for data in &bytes {
        let t = std::time::Instant::now();
        let full = resize_square(&decode_bytes(data, "x", limits).unwrap(), size);
        full_s += t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        let scaled = resize_square(&decode_for_size(data, "x", limits, Some(size)).unwrap(), size);
        scaled_s += t.elapsed().as_secs_f64();
        let diff = full.as_raw().iter().zip(scaled.as_raw()).map(|(a, b)| a.abs_diff(*b)).max().unwrap_or(0);
        worst = worst.max(diff);
    }
    let n = bytes.len() as f64;
    println!(
        "full decode+resize {:.1} images/s, reduced-scale decode+resize {:.1} images/s ({:.2}x), max pixel difference {worst}",
        n / full_s,
        n / scaled_s,
        full_s / scaled_s
    );
}
