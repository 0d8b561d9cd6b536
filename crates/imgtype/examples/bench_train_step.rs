//! Training-step speed on random tensors (no data loading), as scripts/bench/bare_train_loop.py
//! does in PyTorch: `bench_train_step [size=96] [batch=32] [steps=10]`. Prints
//! `rust_step images_per_second=<x>`. A fourth argument `default-malloc` leaves glibc's
//! allocator settings as they are, to measure what `tune_memory_allocator` contributes.

use imgtype::config::OptimizerKind;
use imgtype::loss::{Loss, Targets};
use imgtype::model::fused::channels_last;
use imgtype::train::optim::Optimizer;
use imgtype::{Config, ImageTypeClassifier};
use tch::{Device, Kind, Tensor};

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.last().map(String::as_str) == Some("default-malloc") {
        args.pop();
    } else {
        imgtype::tune_memory_allocator();
    }
    let args: Vec<usize> = args.iter().map(|a| a.parse().expect("numbers")).collect();
    let (size, batch, steps) =
        (*args.first().unwrap_or(&96) as i64, *args.get(1).unwrap_or(&32) as i64, *args.get(2).unwrap_or(&10));
    let mut config = Config::default();
    config.model.dropout_rate = 0.2;
    config.model.stochastic_depth_prob = 0.1;
    config.training.use_class_weights = false;
    tch::manual_seed(0);
    let model = ImageTypeClassifier::new(&config, Device::Cpu);
    let mut optimizer = Optimizer::new(OptimizerKind::AdamW, 1e-4, &model.vs);
    optimizer.set_lr(imgtype::model::HEAD_GROUP, 2e-3);
    optimizer.set_lr(imgtype::model::BACKBONE_GROUP, 2e-3);
    let loss_fn = Loss::from_config(&config, &[1, 1, 1, 1], Device::Cpu).unwrap();
    let images = channels_last(&Tensor::randn([batch, 3, size, size], (Kind::Float, Device::Cpu)));
    let labels = Tensor::randint(4, [batch], (Kind::Int64, Device::Cpu));
    let mut step = || {
        imgtype::threads::share_cores();
        let loss = loss_fn.compute(&model.forward_t(&images, true), Targets::Hard(&labels));
        optimizer.zero_grad();
        loss.backward();
        optimizer.step();
    };
    step();
    step();
    let started = std::time::Instant::now();
    for _ in 0..steps {
        step();
    }
    println!("rust_step images_per_second={:.2}", (batch as usize * steps) as f64 / started.elapsed().as_secs_f64());
}
