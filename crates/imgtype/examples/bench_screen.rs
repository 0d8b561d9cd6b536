//! Screening speed on a folder of photos: `bench_screen DIR`. Times what training did before
//! to prove an image readable (decode it in full, resize it to 16 px) against what it does
//! now (`check_readable`: headers and structure where they prove enough), alternating.

use imgtype::data::decode::{check_readable, decode_bytes, DecodeLimits};
use imgtype::data::image::resize_square;

fn main() {
    imgtype::tune_memory_allocator();
    let dir = std::env::args().nth(1).expect("usage: bench_screen DIR");
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let limits = DecodeLimits::default();
    let (mut before, mut now) = (0.0, 0.0);
    for file in &files {
        let t = std::time::Instant::now();
        let bytes = std::fs::read(file).unwrap();
        resize_square(&decode_bytes(&bytes, "x", limits).unwrap(), 16);
        before += t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        let bytes = std::fs::read(file).unwrap();
        check_readable(&bytes, "x", limits).unwrap();
        now += t.elapsed().as_secs_f64();
    }
    let n = files.len() as f64;
    println!("screen before {:.1} images/s, now {:.1} images/s ({:.1}x)", n / before, n / now, before / now);
}
