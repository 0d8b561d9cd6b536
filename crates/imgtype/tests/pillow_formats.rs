//! The photo formats the Python system's Pillow reads, read here as Pillow reads them: a
//! corpus made by tests/python/make_pillow_corpus.py (TIFF strips and tiles with each
//! compression, 16-bit and CMYK, BMP variants, TGA, ICO, PNM, QOI, PNG, GIF, WebP, JPEG edge
//! cases, AVIF), each file decoded by us and compared with Pillow's `convert("RGB")` after
//! the resize the model sees. Target: at most 1% refused (AVIF, which needs a newer dav1d
//! than Debian 12 packages, is refused with its own reason and counted apart; the files we
//! still refuse are marked in the corpus and must be refused naming themselves), and every
//! decoded file within the JPEG tolerance of the resize test. One deliberate difference:
//! 16-bit greyscale, which Pillow's `convert("RGB")` clips to white (every value over 255)
//! and we scale to 8 bits; those files are checked to be that difference and nothing else.

use std::collections::{BTreeMap, HashMap};

use imgtype::data::decode::{decode_bytes, DecodeLimits};
use imgtype::data::image::resize_square;
use imgtype::model::file::read_safetensors;

/// After resizing both decodes to 64 px: the largest and the mean difference in levels.
const MAX_LEVELS: f32 = 4.0;
const MEAN_LEVELS: f32 = 0.5;

#[test]
fn files_pillow_reads_are_read_as_pillow_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    imgtype_testkit::run_python("tests/python/make_pillow_corpus.py", &[&dir.path()]);
    let manifest: BTreeMap<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("manifest.json")).unwrap()).unwrap();
    let reference: HashMap<String, tch::Tensor> =
        read_safetensors(&dir.path().join("reference.safetensors")).unwrap().0.into_iter().collect();
    let (mut refused, mut unsupported_avif, mut off, mut saturated) = (Vec::new(), Vec::new(), Vec::new(), 0);
    let mut known_refused = Vec::new();
    for (name, entry) in &manifest {
        let bytes = std::fs::read(dir.path().join("files").join(name)).unwrap();
        let ours = match decode_bytes(&bytes, name, DecodeLimits::default()) {
            Ok(image) => image,
            Err(e) if entry["format"] == "avif" => {
                let reason = format!("{e:#}");
                assert!(reason.contains("AVIF is not supported"), "{name}: {reason}");
                unsupported_avif.push(name.clone());
                continue;
            }
            Err(e) if entry["refused"] == true => {
                let reason = format!("{e:#}");
                assert!(reason.contains(name.as_str()), "{name}: the reason names the file: {reason}");
                known_refused.push(format!("{name} ({}): {reason}", entry["note"]));
                continue;
            }
            Err(e) => {
                refused.push(format!("{name} ({}): {e:#}", entry["note"]));
                continue;
            }
        };
        assert!(entry["refused"] != true, "{name} is read now: take it off the refused list (README too)");
        let expected = &reference[name];
        let (h, w) = (expected.size()[0] as u32, expected.size()[1] as u32);
        if ours.dimensions() != (w, h) {
            off.push(format!("{name}: {:?}, Pillow {w}x{h}", ours.dimensions()));
            continue;
        }
        let theirs = image::RgbImage::from_raw(w, h, Vec::<u8>::try_from(expected.flatten(0, -1)).unwrap()).unwrap();
        if entry["pillow_saturates"] == true {
            // Pillow: min(v, 255) of 16-bit values; ours: v / 257. The same image, clipped.
            let clipped = ours.as_raw().iter().zip(theirs.as_raw()).all(|(&o, &t)| t == if o == 0 { 0 } else { 255 });
            assert!(clipped, "{name}: not just Pillow's clipping");
            saturated += 1;
            continue;
        }
        let (a, b) = (resize_square(&ours, 64), resize_square(&theirs, 64));
        let diffs: Vec<f32> = a.as_raw().iter().zip(b.as_raw()).map(|(&x, &y)| (x as f32 - y as f32).abs()).collect();
        let max = diffs.iter().cloned().fold(0.0, f32::max);
        let mean = diffs.iter().sum::<f32>() / diffs.len() as f32;
        if max > MAX_LEVELS || mean > MEAN_LEVELS {
            off.push(format!("{name} ({}): max {max}, mean {mean:.3}", entry["note"]));
        }
    }
    let counted = manifest.len() - unsupported_avif.len();
    println!(
        "{} files: {} refused ({} of them known: {}), {} AVIF unsupported, {} 16-bit grey (Pillow clips), {} \
         decoded differently",
        manifest.len(),
        refused.len() + known_refused.len(),
        known_refused.len(),
        known_refused.join("; "),
        unsupported_avif.len(),
        saturated,
        off.len()
    );
    assert!(manifest.len() >= 80, "the corpus has {} files", manifest.len());
    // Any refusal but the known ones (README, Image formats) is a regression; all of them
    // together stay within the target of 1%.
    assert!(refused.is_empty(), "refused beyond the known ones:\n{}", refused.join("\n"));
    assert!(known_refused.len() * 100 <= counted, "more than 1% refused: {}", known_refused.join("\n"));
    assert!(off.is_empty(), "decoded differently from Pillow:\n{}", off.join("\n"));
}
