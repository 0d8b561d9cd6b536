//! Eval-mode forward speed of our EfficientNet-B0 + head: `bench_forward [size] [batch] [iters]`.
//! Prints one line `rust images_per_second=<x>`; scripts/bench_forward.sh compares it with torchvision.

use imgtype::{Config, ImageTypeClassifier};
use tch::{Device, Kind, Tensor};

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().expect("numbers")).collect();
    let size = *args.first().unwrap_or(&224) as i64;
    let batch = *args.get(1).unwrap_or(&32) as i64;
    let iters = *args.get(2).unwrap_or(&3);
    tch::manual_seed(0);
    let model = ImageTypeClassifier::new(&Config::default(), Device::Cpu);
    let input = Tensor::randn([batch, 3, size, size], (Kind::Float, Device::Cpu));
    let _ = tch::no_grad(|| model.forward_t(&input, false)); // warm-up
    let started = std::time::Instant::now();
    for _ in 0..iters {
        let _ = tch::no_grad(|| model.forward_t(&input, false));
    }
    let rate = (batch as usize * iters) as f64 / started.elapsed().as_secs_f64();
    println!(
        "rust images_per_second={rate:.2} (size {size}, batch {batch}, {iters} iterations, {} threads)",
        tch::get_num_threads()
    );
}
