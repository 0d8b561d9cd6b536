//! Our model files in the PyTorch world: read from Python into the Python system's model
//! with the same logits; torchvision-style backbone weights loaded into ours.

mod common;

use std::path::Path;

use imgtype::model::file::write_safetensors;
use imgtype::{Config, ImageTypeClassifier};
use imgtype_testkit::run_python;
use tch::{Device, Kind, Tensor};

#[test]
fn model_file_loads_in_python_with_the_same_logits() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.data.class_names = vec!["care_label".into(), "detail_shot".into(), "full_shot".into()];
    config.model.hidden_dim = None;
    config.augmentation.image_size = 96;
    tch::manual_seed(7);
    let model = ImageTypeClassifier::new(&config, Device::Cpu);
    common::set_trained_statistics(&model);
    let model_path = dir.path().join("model.safetensors");
    model.save(&model_path).unwrap();
    let input = Tensor::randn([3, 3, 96, 96], (Kind::Float, Device::Cpu));
    let logits = tch::no_grad(|| model.forward_t(&input, false));
    let reference = dir.path().join("reference.safetensors");
    write_safetensors(&reference, &[("input".into(), input), ("logits".into(), logits)], Default::default()).unwrap();
    run_python("tests/python/check_model_file.py", &[&model_path, &reference]);
}

/// Model files of every backbone load into scripts/imgtype_torch.py's PyTorch model.
#[test]
fn model_files_of_every_backbone_load_in_pytorch() {
    let dir = tempfile::tempdir().unwrap();
    for backbone in ["mobilenet_v3_small", "mobilenet_v3_large", "mobilenet_v2"] {
        let mut config = Config::default();
        config.model.backbone = serde_json::from_value(serde_json::json!(backbone)).unwrap();
        config.augmentation.image_size = 64;
        tch::manual_seed(5);
        let model = ImageTypeClassifier::new(&config, Device::Cpu);
        let model_path = dir.path().join(format!("{backbone}.safetensors"));
        model.save(&model_path).unwrap();
        let input = Tensor::randn([2, 3, 64, 64], (Kind::Float, Device::Cpu));
        let logits = tch::no_grad(|| model.forward_t(&input, false));
        let reference = dir.path().join(format!("{backbone}_reference.safetensors"));
        write_safetensors(&reference, &[("input".into(), input), ("logits".into(), logits)], Default::default())
            .unwrap();
        run_python("tests/python/check_imgtype_torch.py", &[&model_path, &reference]);
    }
}

#[test]
fn torchvision_weights_load_into_the_backbone_only() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("efficientnet_b0_random.safetensors");
    run_python("scripts/export_torchvision_weights.py", &[&weights, &"--random-init", &"--seed", &"3"]);

    let mut config = Config::default();
    config.model.pretrained = true;
    config.model.pretrained_weights = Some(weights.clone());
    let mut model = ImageTypeClassifier::new(&config, Device::Cpu);
    // The head as initialised, copied before loading (not a second model from the same seed:
    // libtorch's generator is global, and other tests of this binary draw from it meanwhile).
    let head_at_init = model.vs.variables()["classifier.1.weight"].copy();
    imgtype::model::load_backbone_weights(&mut model, &weights).unwrap();
    let (file, _) = imgtype::model::file::read_safetensors(&weights).unwrap();
    let loaded = model.vs.variables();
    for (name, tensor) in &file {
        let diff = (&loaded[name] - tensor).abs().max().double_value(&[]);
        assert_eq!(diff, 0.0, "{name} not loaded");
    }
    assert!(file.iter().all(|(n, _)| n.starts_with("backbone.features.")), "only backbone keys exported");
    assert_eq!(
        (&loaded["classifier.1.weight"] - &head_at_init).abs().max().double_value(&[]),
        0.0,
        "head kept its init"
    );

    let missing = dir.path().join("absent.safetensors");
    let err = format!("{:#}", imgtype::model::load_backbone_weights(&mut model, &missing).unwrap_err());
    assert!(err.contains("absent.safetensors") && err.contains("does not exist"), "{err}");
}

/// The Python system's `best_model.pth` read directly (no conversion step): class names
/// from its config (its own list is empty), the image size from its config, its logits.
#[test]
fn python_system_checkpoint_loads_directly() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("best_model.pth");
    let reference = dir.path().join("reference.safetensors");
    run_python("tests/python/make_seed_checkpoint.py", &[&checkpoint, &reference]);
    let model = ImageTypeClassifier::load(&checkpoint, Device::Cpu).unwrap();
    assert_eq!(model.class_names(), ["care_label", "detail_shot", "full_shot", "neck_label"]);
    assert_eq!(model.config().augmentation.image_size, 128);
    assert_eq!(model.config().training.epochs, 25);
    let (tensors, _) = imgtype::model::file::read_safetensors(&reference).unwrap();
    let get = |name: &str| tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t.shallow_clone()).unwrap();
    let logits = tch::no_grad(|| model.forward_t(&get("input"), false));
    let diff = (logits - get("logits")).abs().max().double_value(&[]);
    assert!(diff <= 1e-4, "the checkpoint's logits differ by {diff}");

    // A .pth that is not a checkpoint says so.
    let not_a_checkpoint = dir.path().join("list.pth");
    run_python("tests/python/save_object.py", &[&not_a_checkpoint]);
    let err = format!("{:#}", ImageTypeClassifier::load(&not_a_checkpoint, Device::Cpu).err().expect("refused"));
    assert!(err.contains("list.pth") && err.contains("model_state_dict"), "{err}");
}

#[test]
fn python_system_checkpoint_converts_to_a_model_file() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("best_model.pth");
    let reference = dir.path().join("reference.safetensors");
    run_python("tests/python/make_seed_checkpoint.py", &[&checkpoint, &reference]);
    let converted = dir.path().join("converted.safetensors");
    run_python("scripts/convert_seed_checkpoint.py", &[&checkpoint, &converted]);

    let model = ImageTypeClassifier::load(&converted, Device::Cpu).unwrap();
    assert_eq!(model.class_names(), ["care_label", "detail_shot", "full_shot", "neck_label"]);
    assert_eq!(model.config().augmentation.image_size, 128);
    let (tensors, _) = imgtype::model::file::read_safetensors(&reference).unwrap();
    let get = |name: &str| tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t.shallow_clone()).unwrap();
    let logits = tch::no_grad(|| model.forward_t(&get("input"), false));
    let diff = (logits - get("logits")).abs().max().double_value(&[]);
    assert!(diff <= 1e-4, "converted checkpoint's logits differ by {diff}");
    let predictor = imgtype::infer::Predictor::from_model(model);
    assert_eq!(predictor.class_names().len(), 4);
    assert!(Path::new(&converted).exists());
}

#[test]
fn onnx_export_gives_our_logits_in_onnxruntime() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.data.class_names = vec!["care_label".into(), "detail_shot".into(), "full_shot".into()];
    config.augmentation.image_size = 64;
    tch::manual_seed(9);
    let model = ImageTypeClassifier::new(&config, Device::Cpu);
    let model_path = dir.path().join("model.safetensors");
    model.save(&model_path).unwrap();
    let input = Tensor::randn([3, 3, 64, 64], (Kind::Float, Device::Cpu));
    let logits = tch::no_grad(|| model.forward_t(&input, false));
    let reference = dir.path().join("reference.safetensors");
    write_safetensors(&reference, &[("input".into(), input), ("logits".into(), logits)], Default::default()).unwrap();
    let onnx_path = dir.path().join("model.onnx");
    run_python("scripts/export_onnx.py", &[&model_path, &onnx_path]);
    run_python("tests/python/check_onnx.py", &[&onnx_path, &reference]);
}
