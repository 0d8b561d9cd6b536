//! `divide --find-duplicates` on a catalogue with planted faults: photos of the bundled sample
//! as products, then 30 of them again under other products re-encoded, resized ±15%, cropped
//! up to 5% and brightened, and 10 as exact copies. Nearly every planted pair is found, hardly
//! any pair that was not planted (the sample has many photos of one cut in other colours), and
//! no group straddles two splits.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::process::Command;

use image::imageops::FilterType;
use imgtype_testkit::ok;

const DIVIDE: &str = env!("CARGO_BIN_EXE_divide");

/// The planted variant `k`: scaled, cropped, brightened and re-encoded, each by an amount
/// that depends on `k`.
fn near_copy(source: &Path, target: &Path, k: usize) {
    let photo = image::open(source).unwrap().to_rgb8();
    let scale = 0.85 + 0.30 * (k % 7) as f32 / 6.0;
    let (w, h) = ((photo.width() as f32 * scale) as u32, (photo.height() as f32 * scale) as u32);
    let resized = image::imageops::resize(&photo, w, h, FilterType::Triangle);
    let crop = |side: u32| side * (k % 6) as u32 / 100; // 0–5 %
    let (x, y) = (crop(w), crop(h) / 2);
    let cropped = image::imageops::crop_imm(&resized, x, y, w - x - crop(w) / 3, h - y - crop(h) / 2).to_image();
    let gain = 1.0 + 0.06 * (k % 4) as f32;
    let brightened = image::RgbImage::from_fn(cropped.width(), cropped.height(), |px, py| {
        image::Rgb(cropped.get_pixel(px, py).0.map(|v| (v as f32 * gain).min(255.0) as u8))
    });
    let mut bytes = Vec::new();
    let mut encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 70 + (k % 3) as u8 * 10);
    encoder.encode_image(&brightened).unwrap();
    std::fs::write(target, bytes).unwrap();
}

#[test]
fn planted_copies_and_near_copies_are_found_and_kept_in_one_split() {
    let dir = tempfile::tempdir().unwrap();
    let mut photos = imgtype_testkit::walk(&imgtype_testkit::sample_images());
    photos.sort();
    std::fs::create_dir(dir.path().join("img")).unwrap();
    let mut csv = String::from("id,category_name,main_image,back_image,text_tag_image,neck_tag_image,other\n");
    let mut planted = HashSet::new();
    for (i, photo) in photos.iter().enumerate() {
        let name = format!("img/{i}.jpg");
        std::fs::copy(photo, dir.path().join(&name)).unwrap();
        csv.push_str(&format!("p{i},{},{name},,,,\n", ["top", "dress", "shirt"][i % 3]));
    }
    for k in 0..40 {
        let base = k * photos.len() / 40;
        let (name, kind) =
            if k < 30 { (format!("img/near_{k}.jpg"), "near") } else { (format!("img/copy_{k}.jpg"), "copy") };
        if kind == "near" {
            near_copy(&photos[base], &dir.path().join(&name), k);
        } else {
            std::fs::copy(&photos[base], dir.path().join(&name)).unwrap();
        }
        csv.push_str(&format!("q{k},{},{name},,,,\n", ["dress", "shirt", "top"][k % 3]));
        planted.insert((format!("img/{base}.jpg"), name));
    }
    std::fs::write(dir.path().join("products.csv"), csv).unwrap();
    let started = std::time::Instant::now();
    let output = ok(Command::new(DIVIDE)
        .current_dir(dir.path())
        .args(["--input-file", "products.csv", "--output-dir", "data", "--find-duplicates", "--image-base-path", "."])
        .output()
        .unwrap());
    eprintln!("divide --find-duplicates on {} images: {:.2} s", photos.len() + 40, started.elapsed().as_secs_f64());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("no duplicate photo is in two splits"), "{stdout}");

    let mut reader = csv::Reader::from_path(dir.path().join("data/duplicates.csv")).unwrap();
    let mut groups: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for row in reader.records() {
        let row = row.unwrap();
        groups.entry(row[0].to_string()).or_default().push((row[1].to_string(), row[4].to_string()));
    }
    let mut found = HashSet::new();
    let mut false_pairs = Vec::new();
    for members in groups.values() {
        assert!(members.iter().all(|m| m.1 == members[0].1), "one split per group: {members:?}");
        for (a, (x, _)) in members.iter().enumerate() {
            for (y, _) in &members[a + 1..] {
                let pair = if x < y { (x.clone(), y.clone()) } else { (y.clone(), x.clone()) };
                let planted_pair = planted.contains(&pair) || planted.contains(&(pair.1.clone(), pair.0.clone()));
                if planted_pair {
                    found.insert(pair);
                } else {
                    false_pairs.push(pair);
                }
            }
        }
    }
    let missed: Vec<_> =
        planted.iter().filter(|p| !found.contains(*p) && !found.contains(&(p.1.clone(), p.0.clone()))).collect();
    eprintln!("planted pairs found: {} of 40, missed {missed:?}; other pairs: {false_pairs:?}", found.len());
    // Candidates by signature, each confirmed by its fine detail once cropped to frame the
    // other (`photo_match.rs`): before that second signal, 37 of 40 were found here, and 25
    // of 40 on scripts/bench/plant_duplicates.py's copies of the sample (40 now). 39, the
    // issue's target, since the framing search (`photo_match/search.rs`; 38 before it): the one
    // missed is brightened 18% and re-encoded at quality 70, below the 75-92 of the issue's
    // planted copies.
    assert!(found.len() >= 39, "found {} of 40; missed {missed:?}", found.len());
    assert!(false_pairs.len() <= 2, "{false_pairs:?}");
    let splits: HashMap<String, String> = ["train", "validation", "test"]
        .iter()
        .flat_map(|split| {
            let mut reader = csv::Reader::from_path(dir.path().join(format!("data/{split}_data.csv"))).unwrap();
            reader.records().map(|r| (r.unwrap()[1].to_string(), split.to_string())).collect::<Vec<_>>()
        })
        .collect();
    for (a, b) in &found {
        assert_eq!(splits[a], splits[b], "{a} and {b}");
    }
}
