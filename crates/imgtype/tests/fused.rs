//! The inference model (BatchNorm folded into the convolutions, channels-last weights)
//! against the plain training-time module: the same logits, in fp32 to 1e-3, whatever the
//! input layout; in bf16 the same decisions on nearly every input.

mod common;

use imgtype::config::Backbone;
use imgtype::model::fused::{channels_last, FusedClassifier};
use imgtype::{Config, ImageTypeClassifier};
use tch::{Device, Kind, Tensor};

/// An untrained model with BatchNorm statistics and affine parameters as after training,
/// so that folding them is exercised.
fn model_with_trained_statistics(backbone: Backbone) -> ImageTypeClassifier {
    let mut config = Config::default();
    config.model.backbone = backbone;
    config.augmentation.image_size = 64;
    tch::manual_seed(11);
    let model = ImageTypeClassifier::new(&config, Device::Cpu);
    common::set_trained_statistics(&model);
    model
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn fp32_inference_model_gives_the_plain_logits() {
    for backbone in
        [Backbone::EfficientNetB0, Backbone::MobileNetV3Small, Backbone::MobileNetV3Large, Backbone::MobileNetV2]
    {
        let model = model_with_trained_statistics(backbone);
        let fused = FusedClassifier::new(&model, Kind::Float);
        let input = Tensor::randn([4, 3, 64, 64], (Kind::Float, Device::Cpu));
        let plain = tch::no_grad(|| model.forward_t(&input, false));
        for (layout, images) in [("NCHW", input.shallow_clone()), ("channels-last", channels_last(&input))] {
            let diff = max_abs_diff(&fused.forward(&images), &plain);
            println!("{} fp32 {layout}: max |logit difference| = {diff:e}", backbone.as_str());
            assert!(diff < 1e-3, "{} {layout}: logits differ by {diff}", backbone.as_str());
        }
    }
}

#[test]
fn bf16_inference_model_decides_as_fp32() {
    let model = model_with_trained_statistics(Backbone::EfficientNetB0);
    let bf16 = FusedClassifier::new(&model, Kind::BFloat16);
    let input = channels_last(&Tensor::randn([64, 3, 64, 64], (Kind::Float, Device::Cpu)));
    let plain = tch::no_grad(|| model.forward_t(&input, false));
    let reduced = bf16.forward(&input);
    assert_eq!(reduced.kind(), Kind::Float, "logits come back in fp32");
    let probability_diff = max_abs_diff(&reduced.softmax(-1, Kind::Float), &plain.softmax(-1, Kind::Float));
    let agree = reduced.argmax(-1, false).eq_tensor(&plain.argmax(-1, false)).sum(Kind::Int64).int64_value(&[]);
    println!("bf16: {agree}/64 argmax agree, max |probability difference| = {probability_diff:.4}");
    assert!(probability_diff < 0.05, "{probability_diff}");
    assert!(agree >= 60, "{agree} of 64");
}

/// The same model on a CUDA device as on the CPU: fp32 logits within 1e-3 (with
/// `precision: fp32` convolutions are not TF32), and in bf16 the CPU's fp32 decisions.
#[test]
fn cuda_inference_model_matches_the_cpu() {
    if !imgtype_testkit::cuda_test_runs("cuda_inference_model_matches_the_cpu", imgtype::device::cuda_available()) {
        return;
    }
    let cuda = Device::Cuda(0);
    for backbone in [Backbone::EfficientNetB0, Backbone::MobileNetV3Large] {
        let model = model_with_trained_statistics(backbone);
        let mut on_cuda = ImageTypeClassifier::new(model.config(), cuda);
        on_cuda.load_tensors(&model.named_tensors(), std::path::Path::new("the CPU model")).unwrap();
        let input = channels_last(&Tensor::randn([64, 3, 64, 64], (Kind::Float, Device::Cpu)));
        let cpu_logits = FusedClassifier::new(&model, Kind::Float).forward(&input);

        imgtype::device::allow_tf32_convolutions(false);
        let cuda_logits = FusedClassifier::new(&on_cuda, Kind::Float).forward(&input.to_device(cuda));
        let diff = max_abs_diff(&cuda_logits.to_device(Device::Cpu), &cpu_logits);
        println!("{} CUDA fp32: max |logit difference| from the CPU = {diff:e}", backbone.as_str());
        assert!(diff < 1e-3, "{}: CUDA fp32 logits differ from the CPU's by {diff}", backbone.as_str());
        imgtype::device::allow_tf32_convolutions(true);

        let bf16 =
            FusedClassifier::new(&on_cuda, Kind::BFloat16).forward(&input.to_device(cuda)).to_device(Device::Cpu);
        assert_eq!(bf16.kind(), Kind::Float, "logits come back in fp32");
        let agree = bf16.argmax(-1, false).eq_tensor(&cpu_logits.argmax(-1, false)).sum(Kind::Int64).int64_value(&[]);
        let probability_diff = max_abs_diff(&bf16.softmax(-1, Kind::Float), &cpu_logits.softmax(-1, Kind::Float));
        println!(
            "{} CUDA bf16: {agree}/64 argmax agree with CPU fp32, max |probability difference| = {probability_diff:.4}",
            backbone.as_str()
        );
        assert!(agree >= 60 && probability_diff < 0.05, "{}: {agree} of 64, {probability_diff}", backbone.as_str());
    }
}
