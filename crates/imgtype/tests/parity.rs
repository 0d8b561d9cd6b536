//! The Rust EfficientNet-B0 + head against torchvision, on weights and inputs that
//! tests/python/parity_reference.py writes: eval logits, a train-mode forward and the
//! BatchNorm running statistics after it.

use std::collections::HashMap;
use std::path::Path;

use imgtype::model::file::{copy_named_tensors, read_safetensors};
use imgtype::{Config, ImageTypeClassifier};
use tch::{Device, Tensor};

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

#[test]
fn matches_torchvision_in_eval_and_train_mode() {
    let dir = tempfile::tempdir().unwrap();
    imgtype_testkit::run_python("tests/python/parity_reference.py", &[&dir.path()]);
    let (weights, _) = read_safetensors(&dir.path().join("weights.safetensors")).unwrap();
    let reference: HashMap<String, Tensor> =
        read_safetensors(&dir.path().join("reference.safetensors")).unwrap().0.into_iter().collect();

    let mut config = Config::default();
    config.model.dropout_rate = 0.0;
    config.model.stochastic_depth_prob = 0.0;
    let mut model = ImageTypeClassifier::new(&config, Device::Cpu);
    copy_named_tensors(&weights, &mut model.vs, Path::new("weights.safetensors"), "").unwrap();

    let input = &reference["input"];
    let eval_logits = tch::no_grad(|| model.forward_t(input, false));
    let eval_diff = max_abs_diff(&eval_logits, &reference["eval_logits"]);
    println!("eval-mode max |diff| = {eval_diff:e}");
    assert!(eval_diff <= 1e-4, "eval logits differ by {eval_diff}");

    let train_logits = tch::no_grad(|| model.forward_t(input, true));
    let train_diff = max_abs_diff(&train_logits, &reference["train_logits"]);
    println!("train-mode max |diff| = {train_diff:e}");
    assert!(train_diff <= 1e-4, "train-mode logits differ by {train_diff}");

    let variables = model.vs.variables();
    let mut checked = 0;
    for (key, expected) in &reference {
        if let Some(name) = key.strip_prefix("after_train.") {
            let diff = max_abs_diff(&variables[name], expected);
            assert!(diff <= 1e-5, "{name} after a train-mode forward differs by {diff}");
            checked += 1;
        }
    }
    assert_eq!(checked, 2 * 49, "every BatchNorm layer's running mean and var compared");
}

#[test]
fn loading_names_missing_unexpected_and_misshaped_keys() {
    let config = Config::default();
    let mut model = ImageTypeClassifier::new(&config, Device::Cpu);
    let mut tensors: Vec<(String, Tensor)> =
        model.vs.variables().into_iter().map(|(n, t)| (n, t.detach().copy())).collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let source = Path::new("weights.safetensors");

    let mut missing = tensors.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect::<Vec<_>>();
    missing.retain(|(n, _)| n != "classifier.5.bias");
    let err = copy_named_tensors(&missing, &mut model.vs, source, "").unwrap_err().to_string();
    assert!(err.contains("missing") && err.contains("classifier.5.bias"), "{err}");

    let mut extra = tensors.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect::<Vec<_>>();
    extra.push(("classifier.9.weight".into(), Tensor::zeros([2], (tch::Kind::Float, Device::Cpu))));
    extra.push(("backbone.features.0.1.num_batches_tracked".into(), Tensor::from(3i64)));
    let err = copy_named_tensors(&extra, &mut model.vs, source, "").unwrap_err().to_string();
    assert!(err.contains("unexpected") && err.contains("classifier.9.weight"), "{err}");
    assert!(!err.contains("num_batches_tracked"), "{err}");

    let mut misshaped = tensors.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect::<Vec<_>>();
    for (name, t) in misshaped.iter_mut() {
        if name == "classifier.5.weight" {
            *t = Tensor::zeros([7, 512], (tch::Kind::Float, Device::Cpu));
        }
    }
    let err = copy_named_tensors(&misshaped, &mut model.vs, source, "").unwrap_err().to_string();
    assert!(err.contains("classifier.5.weight") && err.contains("[7, 512]"), "{err}");
}

#[test]
fn model_file_round_trips_with_class_names_and_config() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.data.class_names = vec!["a".into(), "b".into(), "c".into()];
    config.augmentation.image_size = 64;
    let model = ImageTypeClassifier::new(&config, Device::Cpu);
    let path = dir.path().join("model.safetensors");
    model.save(&path).unwrap();
    let loaded = ImageTypeClassifier::load(&path, Device::Cpu).unwrap();
    assert_eq!(loaded.class_names(), ["a", "b", "c"]);
    assert_eq!(loaded.config().augmentation.image_size, 64);
    let x = Tensor::randn([2, 3, 64, 64], (tch::Kind::Float, Device::Cpu));
    let diff = max_abs_diff(&model.forward_t(&x, false), &loaded.forward_t(&x, false));
    assert_eq!(diff, 0.0);
    // Python-side readers see the metadata too.
    let bytes = std::fs::read(&path).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().as_ref().unwrap();
    assert_eq!(meta["class_names"], r#"["a","b","c"]"#);
    assert!(!bytes.is_empty());
}

/// MobileNetV3 Small and Large and MobileNetV2 against torchvision: torchvision's own
/// `torch.save`d weights load by name, and the pooled features match in eval mode and with
/// BatchNorm in train mode, as do the running statistics after that forward.
#[test]
fn mobilenets_match_torchvision_in_eval_and_train_mode() {
    let dir = tempfile::tempdir().unwrap();
    imgtype_testkit::run_python("tests/python/mobilenet_reference.py", &[&dir.path()]);
    for (name, backbone, width) in [
        ("mobilenet_v3_small", imgtype::config::Backbone::MobileNetV3Small, 576),
        ("mobilenet_v3_large", imgtype::config::Backbone::MobileNetV3Large, 960),
        ("mobilenet_v2", imgtype::config::Backbone::MobileNetV2, 1280),
    ] {
        let reference: HashMap<String, Tensor> =
            read_safetensors(&dir.path().join(format!("{name}_reference.safetensors")))
                .unwrap()
                .0
                .into_iter()
                .collect();
        let mut config = Config::default();
        config.model.backbone = backbone;
        let mut model = ImageTypeClassifier::new(&config, Device::Cpu);
        imgtype::model::load_backbone_weights(&mut model, &dir.path().join(format!("{name}_weights.pth"))).unwrap();
        let input = &reference["input"];
        let eval = tch::no_grad(|| model.backbone_features(input, false));
        assert_eq!(eval.size(), [3, width]);
        let eval_diff = max_abs_diff(&eval, &reference["eval_features"]);
        let train_diff =
            max_abs_diff(&tch::no_grad(|| model.backbone_features(input, true)), &reference["train_features"]);
        println!("{name}: eval max |diff| = {eval_diff:e}, train-mode {train_diff:e}");
        assert!(eval_diff <= 1e-4, "{name}: eval features differ by {eval_diff}");
        assert!(train_diff <= 1e-4, "{name}: train-mode features differ by {train_diff}");
        let variables = model.vs.variables();
        let mut checked = 0;
        for (key, expected) in &reference {
            if let Some(key) = key.strip_prefix("after_train.") {
                // Relative: late layers' variances run into the hundreds.
                let scale = expected.abs().max().double_value(&[]).max(1.0);
                let diff = max_abs_diff(&variables[&format!("backbone.{key}")], expected) / scale;
                assert!(diff <= 1e-5, "{name}: {key} after a train-mode forward differs by {diff} (relative)");
                checked += 1;
            }
        }
        assert!(checked > 40, "{name}: {checked} running statistics compared");
        let logits = tch::no_grad(|| model.forward_t(input, false));
        assert_eq!(logits.size(), [3, 4], "{name}: the head reads {width} features");
    }
}
