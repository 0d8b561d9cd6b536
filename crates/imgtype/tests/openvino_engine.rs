//! The OpenVINO engine behind the batch scorer: fed our ONNX export in memory, it gives our
//! libtorch fp32 logits within 1e-4 for every backbone, and in bf16 the same decisions on
//! nearly every input.

mod common;

use imgtype::config::{Backbone, InferenceEngineChoice, Precision};
use imgtype::infer::Predictor;
use imgtype::{Config, ImageTypeClassifier};
use tch::{Device, Kind, Tensor};

fn model(backbone: Backbone) -> ImageTypeClassifier {
    let mut config = Config::default();
    config.model.backbone = backbone;
    config.augmentation.image_size = 64;
    tch::manual_seed(31);
    let model = ImageTypeClassifier::new(&config, Device::Cpu);
    common::set_trained_statistics(&model);
    model
}

/// Two copies of one model, whatever else draws from libtorch's generator meanwhile.
fn twins(backbone: Backbone) -> (ImageTypeClassifier, ImageTypeClassifier) {
    let first = model(backbone);
    let mut second = ImageTypeClassifier::new(first.config(), Device::Cpu);
    second.load_tensors(&first.snapshot(), std::path::Path::new("the first copy")).unwrap();
    (first, second)
}

fn logits(predictor: &Predictor, batch: &Tensor) -> Vec<f32> {
    predictor.scorer().score_batch(batch).unwrap().into_iter().flat_map(|s| s.logits).collect()
}

#[test]
fn openvino_fp32_gives_our_libtorch_logits_for_every_backbone() {
    for backbone in
        [Backbone::EfficientNetB0, Backbone::MobileNetV2, Backbone::MobileNetV3Small, Backbone::MobileNetV3Large]
    {
        let batch = Tensor::randn([5, 3, 64, 64], (Kind::Float, Device::Cpu));
        let (first, second) = twins(backbone);
        let torch = Predictor::with_settings(first, Some(Precision::Fp32), Some(InferenceEngineChoice::Libtorch));
        let openvino = Predictor::with_settings(second, Some(Precision::Fp32), Some(InferenceEngineChoice::Openvino));
        assert_eq!(torch.engine_description(), "libtorch fp32");
        assert_eq!(openvino.engine_description(), "openvino fp32", "the venv's OpenVINO loads");
        let (a, b) = (logits(&torch, &batch), logits(&openvino, &batch));
        let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        eprintln!("{}: max |logit diff| openvino fp32 vs libtorch fp32 = {diff:.3e}", backbone.as_str());
        assert!(diff <= 1e-4, "{}: {diff}", backbone.as_str());
        // A batch of one through the same compiled model (the batch dimension is dynamic).
        let one = logits(&openvino, &batch.narrow(0, 2, 1));
        let diff = one.iter().zip(&a[2 * one.len()..3 * one.len()]).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert!(diff <= 1e-4, "batch of one: {diff}");
    }
}

#[test]
fn openvino_bf16_decides_as_fp32() {
    let batch = Tensor::randn([64, 3, 64, 64], (Kind::Float, Device::Cpu));
    let (first, second) = twins(Backbone::EfficientNetB0);
    let fp32 = Predictor::with_settings(first, Some(Precision::Fp32), None);
    let bf16 = Predictor::with_settings(second, Some(Precision::Bf16), Some(InferenceEngineChoice::Openvino));
    assert_eq!(bf16.engine_description(), "openvino bf16");
    let argmax = |p: &Predictor| -> Vec<usize> {
        p.probabilities(&batch)
            .unwrap()
            .iter()
            .map(|row| (0..row.len()).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap())
            .collect()
    };
    let (a, b) = (argmax(&fp32), argmax(&bf16));
    let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
    eprintln!("openvino bf16 vs libtorch fp32: {same} of {} argmaxes agree", a.len());
    assert!(same * 100 >= a.len() * 95, "{same} of {}", a.len());
}

/// Real photos, decoded and resized as `test` does it, at the model's input size.
fn sample_photos(count: usize, size: u32) -> Vec<image::RgbImage> {
    let mut paths: Vec<_> = walk(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../sample_images")));
    paths.sort();
    paths
        .iter()
        .take(count)
        .map(|path| {
            let photo = image::open(path).unwrap().to_rgb8();
            image::imageops::resize(&photo, size, size, image::imageops::FilterType::Triangle)
        })
        .collect()
}

fn walk(folder: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(folder)
        .unwrap()
        .flatten()
        .flat_map(|entry| if entry.path().is_dir() { walk(&entry.path()) } else { vec![entry.path()] })
        .collect()
}

#[test]
fn openvino_normalises_decoded_photos_as_libtorch_does() {
    let photos = sample_photos(6, 64);
    let (first, second) = twins(Backbone::EfficientNetB0);
    let torch = Predictor::with_settings(first, Some(Precision::Fp32), Some(InferenceEngineChoice::Libtorch));
    let openvino = Predictor::with_settings(second, Some(Precision::Fp32), Some(InferenceEngineChoice::Openvino));
    let scores = |p: &Predictor, photos: &[image::RgbImage]| -> Vec<f32> {
        p.scorer().score_images(photos).unwrap().into_iter().flat_map(|s| s.logits).collect()
    };
    let (a, b) = (scores(&torch, &photos), scores(&openvino, &photos));
    let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    eprintln!("photos: max |logit diff| openvino fp32 vs libtorch fp32 = {diff:.3e}");
    assert!(diff <= 1e-4, "{diff}");
    // Batches of other sizes reuse or replace OpenVINO's input buffer: still the same rows.
    let (two, all) = (scores(&openvino, &photos[1..3]), scores(&openvino, &photos));
    assert_eq!(all, b);
    assert!(two.iter().zip(&b[two.len() / 2..]).all(|(x, y)| (x - y).abs() <= 1e-4));
    // A photo of another size is this batch's error, and the engine stays usable.
    let wrong =
        vec![photos[0].clone(), image::imageops::resize(&photos[1], 32, 32, image::imageops::FilterType::Triangle)];
    let error = openvino.scorer().score_images(&wrong).unwrap_err();
    assert!(error.contains("64×64") && error.contains("32×32"), "{error}");
    assert_eq!(scores(&openvino, &photos), b);
}
