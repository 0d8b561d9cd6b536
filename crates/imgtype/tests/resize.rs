//! Our resize against torchvision's `Resize((s, s))` on PIL images (bilinear with
//! antialias), computed by tests/python/pil_resize_reference.py on bundled sample images.
//! From the same pixels the two resizes differ by at most 1 level; from the JPEG files
//! the decoders (libjpeg in PIL, zune-jpeg here) add up to a few levels.

use imgtype::data::image::{load_rgb, resize_square};
use imgtype::data::ImageSource;
use imgtype::model::file::read_safetensors;
use tch::Kind;

#[test]
fn resize_matches_torchvision_on_pil_images() {
    let root = imgtype_testkit::repo_root();
    let csv = std::fs::read_to_string(root.join("image_data.csv")).unwrap();
    let keys: Vec<String> = csv.lines().skip(1).take(3).map(|l| l.split(',').nth(2).unwrap().to_string()).collect();
    let paths: Vec<std::path::PathBuf> = keys.iter().map(|k| root.join("sample_images").join(k)).collect();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("resized.safetensors");
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&out];
    args.extend(paths.iter().map(|p| p as &dyn AsRef<std::ffi::OsStr>));
    imgtype_testkit::run_python("tests/python/pil_resize_reference.py", &args);
    let reference: std::collections::HashMap<String, tch::Tensor> =
        read_safetensors(&out).unwrap().0.into_iter().collect();

    let source = ImageSource::local(None);
    let compare = |name: &str, ours: &image::RgbImage, max_allowed: f32| {
        let expected = Vec::<f32>::try_from(reference[name].to_kind(Kind::Float).flatten(0, -1)).unwrap();
        assert_eq!(expected.len(), ours.as_raw().len(), "{name}");
        let diffs: Vec<f32> = ours.as_raw().iter().zip(&expected).map(|(&a, &b)| (a as f32 - b).abs()).collect();
        let max = diffs.iter().cloned().fold(0.0, f32::max);
        let mean = diffs.iter().sum::<f32>() / diffs.len() as f32;
        println!("{name}: max |diff| {max}, mean {mean:.4}");
        assert!(max <= max_allowed && mean <= 0.25, "{name}: max {max}, mean {mean}");
    };
    for (i, path) in paths.iter().enumerate() {
        let image = load_rgb(&source, path.to_str().unwrap()).unwrap();
        for size in [48, 64, 96, 224] {
            compare(&format!("{i}_{size}"), &resize_square(&image, size), 4.0);
        }
        let wide_source = &reference[&format!("{i}_wide_source")];
        let (h, w) = (wide_source.size()[0] as u32, wide_source.size()[1] as u32);
        let bytes = Vec::<u8>::try_from(wide_source.flatten(0, -1)).unwrap();
        let wide = image::RgbImage::from_raw(w, h, bytes).unwrap();
        compare(&format!("{i}_wide_64"), &resize_square(&wide, 64), 1.0);
    }
}
