//! ONNX export written in Rust: for every backbone, the exported graph passes
//! `onnx.checker` and onnxruntime gives our fp32 logits within 1e-4, for a batch and for a
//! batch of one (the batch dimension is dynamic). The model has BatchNorm statistics and
//! affine parameters as after training, so the folding is exercised.

mod common;

use imgtype::config::Backbone;
use imgtype::model::file::write_safetensors;
use imgtype::{Config, ImageTypeClassifier};
use imgtype_testkit::run_python;
use tch::{Device, Kind, Tensor};

fn model_with_trained_statistics(backbone: Backbone, class_names: &[&str]) -> ImageTypeClassifier {
    let mut config = Config::default();
    config.model.backbone = backbone;
    config.augmentation.image_size = 48;
    config.data.class_names = class_names.iter().map(|s| s.to_string()).collect();
    tch::manual_seed(21);
    let model = ImageTypeClassifier::new(&config, Device::Cpu);
    common::set_trained_statistics(&model);
    // The head's LayerNorm away from its initial 1 and 0 as well.
    tch::no_grad(|| {
        for name in ["classifier.2.bias", "classifier.2.weight"] {
            let _ = model.vs.variables()[name].shallow_clone().uniform_(-0.5, 1.5);
        }
    });
    model
}

#[test]
fn every_backbone_exports_and_onnxruntime_gives_our_logits() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["care_label", "detail_shot", "full_shot", "neck_label", "other"];
    for backbone in
        [Backbone::EfficientNetB0, Backbone::MobileNetV2, Backbone::MobileNetV3Small, Backbone::MobileNetV3Large]
    {
        let model = model_with_trained_statistics(backbone, &names);
        let input = Tensor::randn([3, 3, 48, 48], (Kind::Float, Device::Cpu));
        let logits = tch::no_grad(|| model.forward_t(&input, false));
        let reference = dir.path().join(format!("{}.safetensors", backbone.as_str()));
        write_safetensors(&reference, &[("input".into(), input), ("logits".into(), logits)], Default::default())
            .unwrap();
        let onnx_path = dir.path().join(format!("{}.onnx", backbone.as_str()));
        imgtype::model::onnx::export_onnx(&model, &onnx_path).unwrap();
        let names_json = serde_json::to_string(&names).unwrap();
        let out = run_python("tests/python/check_onnx.py", &[&onnx_path, &reference, &names_json]);
        eprintln!("{}: {}", backbone.as_str(), String::from_utf8_lossy(&out.stdout).trim());
    }
}
