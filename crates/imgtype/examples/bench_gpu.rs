//! Our training step and forward pass on one device, as scripts/gpu/reference.py measures
//! PyTorch's: `bench_gpu DEVICE [size=224] [batch=64] [steps=20]`. Random tensors already on
//! the device (no data loading): the training step in fp32 and with the backbone in bf16
//! (`system.mixed_precision`), AdamW and label-smoothed cross-entropy; the inference model
//! (BatchNorm folded, channels-last) in fp32 and bf16. One JSON line per measurement:
//! `{"name": "rust_train_fp32", "images_per_second": …}`. With a fifth argument only that
//! measurement runs, so that scripts/gpu_check.sh can read one process's GPU memory and use.

use imgtype::config::{DeviceChoice, OptimizerKind};
use imgtype::loss::{Loss, Targets};
use imgtype::model::fused::{channels_last, FusedClassifier};
use imgtype::train::optim::Optimizer;
use imgtype::{Config, ImageTypeClassifier};
use tch::{Device, Kind, Tensor};

fn synchronize(device: Device) {
    if let Device::Cuda(index) = device {
        tch::Cuda::synchronize(index as i64);
    }
}

/// Images per second of `batch`-image steps: 3 warm-up steps (cuDNN picks its kernels), then
/// `steps` timed ones between device synchronisations.
fn rate(device: Device, batch: i64, steps: usize, mut step: impl FnMut()) -> f64 {
    for _ in 0..3 {
        step();
    }
    synchronize(device);
    let started = std::time::Instant::now();
    for _ in 0..steps {
        step();
    }
    synchronize(device);
    (batch as usize * steps) as f64 / started.elapsed().as_secs_f64()
}

fn report(name: &str, images_per_second: f64) {
    println!("{}", serde_json::json!({"name": name, "images_per_second": (images_per_second * 10.0).round() / 10.0}));
}

fn main() {
    imgtype::tune_memory_allocator();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let device = match args
        .first()
        .map(String::as_str)
        .unwrap_or("auto")
        .parse::<DeviceChoice>()
        .and_then(imgtype::device::resolve_device)
    {
        Ok(device) => device,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    };
    let number = |i: usize, default: usize| args.get(i).map(|a| a.parse().expect("a number")).unwrap_or(default);
    let (size, batch, steps) = (number(1, 224) as i64, number(2, 64) as i64, number(3, 20));
    let wanted = |name: &str| args.get(4).is_none_or(|only| only == name);
    let mut config = Config::default();
    config.model.dropout_rate = 0.2;
    config.model.stochastic_depth_prob = 0.1;
    config.augmentation.image_size = size as u32;
    if let Device::Cuda(_) = device {
        tch::Cuda::cudnn_set_benchmark(true);
    }
    let images = channels_last(&Tensor::randn([batch, 3, size, size], (Kind::Float, device)));
    let labels = Tensor::randint(4, [batch], (Kind::Int64, device));
    for (name, kind) in [("rust_train_fp32", Kind::Float), ("rust_train_bf16", Kind::BFloat16)] {
        if !wanted(name) {
            continue;
        }
        tch::manual_seed(0);
        let mut model = ImageTypeClassifier::new(&config, device);
        model.set_compute_kind(kind);
        let mut optimizer = Optimizer::new(OptimizerKind::AdamW, 2e-3, &model.vs);
        let loss_fn = Loss::from_config(&config, &[1, 1, 1, 1], device).unwrap();
        let images_per_second = rate(device, batch, steps, || {
            let loss = loss_fn.compute(&model.forward_t(&images, true), Targets::Hard(&labels));
            optimizer.zero_grad();
            loss.backward();
            optimizer.step();
        });
        report(name, images_per_second);
    }
    tch::manual_seed(0);
    let model = ImageTypeClassifier::new(&config, device);
    for (name, kind) in [("rust_forward_fp32", Kind::Float), ("rust_forward_bf16", Kind::BFloat16)] {
        if !wanted(name) {
            continue;
        }
        let fused = FusedClassifier::new(&model, kind);
        let images_per_second = rate(device, batch, steps, || {
            let _ = fused.forward(&images);
        });
        report(name, images_per_second);
    }
}
