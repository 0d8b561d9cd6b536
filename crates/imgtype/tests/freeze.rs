//! Freeze-then-unfreeze: while frozen, the backbone gets no gradients and its BatchNorm
//! running statistics do not move in a training-mode forward; after unfreezing they do.

use imgtype::config::Backbone;
use imgtype::{Config, ImageTypeClassifier};
use tch::{Device, Kind, Tensor};

fn backbone_stats(model: &ImageTypeClassifier) -> Vec<(String, Tensor)> {
    let mut stats: Vec<(String, Tensor)> = model
        .vs
        .variables()
        .into_iter()
        .filter(|(n, _)| n.starts_with("backbone.") && (n.ends_with("running_mean") || n.ends_with("running_var")))
        .map(|(n, t)| (n, t.detach().copy()))
        .collect();
    stats.sort_by(|a, b| a.0.cmp(&b.0));
    stats
}

fn changed(before: &[(String, Tensor)], after: &[(String, Tensor)]) -> usize {
    before.iter().zip(after).filter(|((_, a), (_, b))| (a - b).abs().max().double_value(&[]) > 0.0).count()
}

#[test]
fn frozen_backbone_keeps_batchnorm_statistics_and_gets_no_gradients() {
    for backbone in
        [Backbone::EfficientNetB0, Backbone::MobileNetV3Small, Backbone::MobileNetV3Large, Backbone::MobileNetV2]
    {
        freeze_and_unfreeze(backbone, Device::Cpu);
    }
}

#[test]
fn cuda_frozen_backbone_keeps_batchnorm_statistics_and_gets_no_gradients() {
    if imgtype_testkit::cuda_test_runs(
        "cuda_frozen_backbone_keeps_batchnorm_statistics",
        imgtype::device::cuda_available(),
    ) {
        for backbone in [Backbone::EfficientNetB0, Backbone::MobileNetV3Small] {
            freeze_and_unfreeze(backbone, Device::Cuda(0));
        }
    }
}

fn freeze_and_unfreeze(backbone: Backbone, device: Device) {
    tch::manual_seed(0);
    let mut config = Config::default();
    config.model.backbone = backbone;
    let mut model = ImageTypeClassifier::new(&config, device);
    let input = Tensor::randn([4, 3, 64, 64], (Kind::Float, device));
    let targets = Tensor::from_slice(&[0i64, 1, 2, 3]).to_device(device);

    let train_step =
        |model: &ImageTypeClassifier| model.forward_t(&input, true).cross_entropy_for_logits(&targets).backward();

    model.set_backbone_frozen(true);
    let before = backbone_stats(&model);
    train_step(&model);
    assert_eq!(changed(&before, &backbone_stats(&model)), 0, "frozen BatchNorm statistics moved");
    let variables = model.vs.variables();
    assert!(!variables["backbone.features.0.0.weight"].grad().defined(), "frozen backbone got a gradient");
    assert!(variables["classifier.5.weight"].grad().defined(), "head got no gradient");

    model.set_backbone_frozen(false);
    train_step(&model);
    assert_eq!(changed(&before, &backbone_stats(&model)), before.len(), "unfrozen BatchNorm statistics did not move");
    assert!(model.vs.variables()["backbone.features.0.0.weight"].grad().defined());
    assert!(!model.vs.variables()["backbone.features.0.1.running_mean"].requires_grad());
}
