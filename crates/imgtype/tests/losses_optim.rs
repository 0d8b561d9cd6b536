//! Losses and optimisers against numbers PyTorch computes
//! (tests/python/loss_optim_reference.py): cross-entropy with weights and label smoothing,
//! hard and soft targets; focal loss with scalar and per-class gamma, weighted; AdamW,
//! Adam and SGD over three steps; gradient clipping by global norm.

use std::collections::HashMap;

use imgtype::config::{Config, FocalGamma, OptimizerKind};
use imgtype::loss::{Loss, Targets};
use imgtype::model::file::read_safetensors;
use imgtype::train::optim::Optimizer;
use tch::{nn, Device, Kind, Tensor};

fn reference() -> HashMap<String, Tensor> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reference.safetensors");
    imgtype_testkit::run_python("tests/python/loss_optim_reference.py", &[&path]);
    read_safetensors(&path).unwrap().0.into_iter().collect()
}

fn value(t: &Tensor) -> f64 {
    t.double_value(&[0])
}

fn close(name: &str, got: f64, expected: f64) {
    assert!((got - expected).abs() < 1e-5, "{name}: got {got}, PyTorch {expected}");
}

#[test]
fn cross_entropy_losses_match_pytorch() {
    let r = reference();
    let (logits, targets, soft) = (&r["logits"], &r["targets"].to_kind(Kind::Int64), &r["soft"]);
    let weights = Some(r["weights"].shallow_clone());
    let ce = |w: Option<Tensor>, smoothing: f64| Loss::CrossEntropy { weights: w, label_smoothing: smoothing };
    close("ce", value(&ce(None, 0.0).compute(logits, Targets::Hard(targets)).reshape([1])), value(&r["ce"]));
    close(
        "ce_smooth",
        value(&ce(None, 0.1).compute(logits, Targets::Hard(targets)).reshape([1])),
        value(&r["ce_smooth"]),
    );
    close(
        "ce_weighted_smooth",
        value(
            &ce(weights.as_ref().map(|w| w.shallow_clone()), 0.1).compute(logits, Targets::Hard(targets)).reshape([1]),
        ),
        value(&r["ce_weighted_smooth"]),
    );
    close(
        "ce_soft_weighted_smooth",
        value(&ce(weights.as_ref().map(|w| w.shallow_clone()), 0.1).compute(logits, Targets::Soft(soft)).reshape([1])),
        value(&r["ce_soft_weighted_smooth"]),
    );
}

#[test]
fn focal_losses_match_pytorch() {
    let r = reference();
    let (logits, targets, soft) = (&r["logits"], &r["targets"].to_kind(Kind::Int64), &r["soft"]);
    let weights = Some(r["weights"].shallow_clone());
    // Focal losses built from config, as training builds them.
    let mut config = Config::default();
    config.training.focal_loss = true;
    config.training.use_class_weights = false;
    config.training.focal_alpha = 0.25;
    config.training.focal_gamma = FocalGamma::Scalar(2.0);
    config.training.label_smoothing = 0.0;
    let focal = Loss::from_config(&config, &[1, 1, 1, 1], Device::Cpu).unwrap();
    close(
        "focal_scalar",
        value(&focal.compute(logits, Targets::Hard(targets)).reshape([1])),
        value(&r["focal_scalar"]),
    );

    let by_name = [("care_label", 1.0), ("detail_shot", 2.0), ("full_shot", 3.0), ("neck_label", 0.5)];
    for gamma in [
        FocalGamma::PerClass(vec![1.0, 2.0, 3.0, 0.5]),
        FocalGamma::ByClass(by_name.iter().map(|(n, g)| (n.to_string(), *g)).collect()),
    ] {
        config.training.focal_gamma = gamma;
        config.training.focal_alpha = 1.0;
        let weighted = Loss::Focal {
            weights: weights.as_ref().map(|w| w.shallow_clone()),
            alpha: 1.0,
            gamma: Tensor::from_slice(&[1.0f32, 2.0, 3.0, 0.5]),
            label_smoothing: 0.0,
        };
        let from_config = match Loss::from_config(&config, &[1, 1, 1, 1], Device::Cpu).unwrap() {
            Loss::Focal { gamma, .. } => gamma,
            _ => unreachable!(),
        };
        assert_eq!(Vec::<f32>::try_from(&from_config).unwrap(), vec![1.0, 2.0, 3.0, 0.5]);
        close(
            "focal_list_weighted",
            value(&weighted.compute(logits, Targets::Hard(targets)).reshape([1])),
            value(&r["focal_list_weighted"]),
        );
    }
    let focal_with = |label_smoothing: f64| Loss::Focal {
        weights: weights.as_ref().map(|w| w.shallow_clone()),
        alpha: 0.5,
        gamma: Tensor::from_slice(&[1.0f32, 2.0, 3.0, 0.5]),
        label_smoothing,
    };
    close(
        "focal_soft_weighted",
        value(&focal_with(0.0).compute(logits, Targets::Soft(soft)).reshape([1])),
        value(&r["focal_soft_weighted"]),
    );
    // label_smoothing with focal loss: the targets smoothed as cross-entropy smooths them,
    // then the (PyTorch-checked) soft focal loss; not dropped.
    let classes = logits.size()[1];
    let smoothed = targets.one_hot(classes).to_kind(Kind::Float) * 0.9 + 0.1 / classes as f64;
    let with_smoothing = value(&focal_with(0.1).compute(logits, Targets::Hard(targets)).reshape([1]));
    close(
        "focal_smoothed",
        with_smoothing,
        value(&focal_with(0.0).compute(logits, Targets::Soft(&smoothed)).reshape([1])),
    );
    let without = value(&focal_with(0.0).compute(logits, Targets::Hard(targets)).reshape([1]));
    assert!((with_smoothing - without).abs() > 1e-4, "smoothing changes the focal loss");
}

#[test]
fn balanced_class_weights_follow_sklearn() {
    // n_samples / (n_classes * count): 10 / (4 * [1, 2, 3, 4])
    let w = imgtype::loss::balanced_class_weights(&[1, 2, 3, 4]);
    for (got, expected) in w.iter().zip([2.5, 1.25, 10.0 / 12.0, 0.625]) {
        assert!((got - expected).abs() < 1e-12);
    }
}

#[test]
fn optimisers_match_pytorch_over_three_steps() {
    let r = reference();
    for (name, kind) in [("adamw", OptimizerKind::AdamW), ("adam", OptimizerKind::Adam), ("sgd", OptimizerKind::Sgd)] {
        let vs = nn::VarStore::new(Device::Cpu);
        let param = vs.root().var_copy("weight", &r["param_start"]);
        let mut optimizer = Optimizer::new(kind, 0.1, &vs);
        optimizer.set_lr(imgtype::model::HEAD_GROUP, 0.01);
        for step in 0..3 {
            optimizer.zero_grad();
            (&param * &r[&format!("grad_{step}")]).sum(Kind::Float).backward();
            optimizer.step();
        }
        let diff = (&param - &r[&format!("after_{name}")]).abs().max().double_value(&[]);
        assert!(diff < 1e-6, "{name}: parameters differ from PyTorch by {diff}");
    }
}

#[test]
fn gradient_clipping_matches_pytorch() {
    let r = reference();
    let vs = nn::VarStore::new(Device::Cpu);
    let a = vs.root().zeros("a", &[3]);
    let b = vs.root().zeros("b", &[2, 2]);
    let optimizer = Optimizer::new(OptimizerKind::Sgd, 0.0, &vs);
    let loss = (&a * Tensor::from_slice(&[3.0f32, 4.0, 0.0])).sum(Kind::Float)
        + (&b * Tensor::from_slice(&[12.0f32, 0.0, 0.0, 0.0]).view([2, 2])).sum(Kind::Float);
    loss.backward();
    let norm = optimizer.clip_grad_norm(1.0);
    close("clip_norm", norm.double_value(&[]), value(&r["clip_norm"]));
    assert!((a.grad() - &r["clipped_a"]).abs().max().double_value(&[]) < 1e-6);
    assert!((b.grad() - &r["clipped_b"]).abs().max().double_value(&[]) < 1e-6);
}

/// A few training steps of the whole model on a CUDA device, as `train` takes them: in fp32
/// and with the backbone in bf16 (`system.mixed_precision`), the loss on a fixed batch falls
/// and stays finite, and the weights stay fp32.
#[test]
fn cuda_training_steps_lower_the_loss_in_fp32_and_mixed_precision() {
    if !imgtype_testkit::cuda_test_runs("cuda_training_steps_lower_the_loss", imgtype::device::cuda_available()) {
        return;
    }
    let cuda = Device::Cuda(0);
    for kind in [Kind::Float, Kind::BFloat16] {
        tch::manual_seed(5);
        let config = Config::default();
        let mut model = imgtype::ImageTypeClassifier::new(&config, cuda);
        model.set_compute_kind(kind);
        let mut optimizer = Optimizer::new(OptimizerKind::AdamW, 1e-3, &model.vs);
        let loss_fn = Loss::from_config(&config, &[1, 1, 1, 1], cuda).unwrap();
        let images = Tensor::randn([16, 3, 64, 64], (Kind::Float, cuda));
        let labels = Tensor::randint(4, [16], (Kind::Int64, cuda));
        let losses: Vec<f64> = (0..12)
            .map(|_| {
                let loss = loss_fn.compute(&model.forward_t(&images, true), Targets::Hard(&labels));
                optimizer.zero_grad();
                loss.backward();
                optimizer.step();
                loss.double_value(&[])
            })
            .collect();
        println!("CUDA {kind:?} training losses: {losses:.4?}");
        assert!(losses.iter().all(|l| l.is_finite()), "{kind:?}: a loss is not finite: {losses:?}");
        assert!(losses[11] < 0.7 * losses[0], "{kind:?}: the loss did not fall: {losses:?}");
        assert!(model.vs.variables().values().all(|v| v.kind() == Kind::Float), "{kind:?}: weights left fp32");
    }
}
