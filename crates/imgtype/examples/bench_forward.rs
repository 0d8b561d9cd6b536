//! Eval-mode forward speed of our EfficientNet-B0 + head:
//! `bench_forward [size] [batch] [iters] [plain|fp32|bf16|openvino-fp32|openvino-bf16|openvino-int8] [backbone]`.
//! `plain` is the training-time module; `fp32` and `bf16` the inference model (BatchNorm folded,
//! channels-last) on libtorch; `openvino-*` the same model through the OpenVINO engine, from
//! decoded images (the path `test` and the API take, normalising included), or with
//! `-tensor` (`openvino-bf16-tensor`) from a normalised tensor as the other modes.
//! `openvino-int8` runs INT8 convolutions (the rest as `auto`), its ranges measured on 64
//! random images.
//! Prints one line `rust images_per_second=<x>`; scripts/bench.sh compares it with torchvision.

use imgtype::model::fused::{channels_last, FusedClassifier};
use imgtype::{Config, ImageTypeClassifier};
use tch::{Device, Kind, Tensor};

fn main() {
    imgtype::tune_memory_allocator();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |i: usize, default: usize| args.get(i).map(|a| a.parse().expect("a number")).unwrap_or(default);
    let (size, batch, iters) = (number(0, 224) as i64, number(1, 32) as i64, number(2, 3));
    let mode = args.get(3).map(String::as_str).unwrap_or("plain");
    let mut config = Config::default();
    config.augmentation.image_size = size as u32;
    if let Some(backbone) = args.get(4) {
        config.model.backbone = serde_json::from_value(serde_json::json!(backbone)).expect("a backbone name");
    }
    tch::manual_seed(0);
    let model = ImageTypeClassifier::new(&config, Device::Cpu);
    // The same network for a reference engine in another process (scripts/bench/onnx_forward.py).
    if let Some(path) = std::env::var_os("BENCH_EXPORT_ONNX") {
        imgtype::model::onnx::export_onnx(&model, std::path::Path::new(&path)).expect("ONNX written");
    }
    let input = Tensor::randn([batch, 3, size, size], (Kind::Float, Device::Cpu));
    let forward: Box<dyn Fn() -> Tensor> = match mode {
        "plain" => Box::new(|| tch::no_grad(|| model.forward_t(&input, false))),
        "fp32" | "bf16" => {
            let kind = if mode == "bf16" { Kind::BFloat16 } else { Kind::Float };
            let fused = FusedClassifier::new(&model, kind);
            let input = channels_last(&input);
            Box::new(move || fused.forward(&input))
        }
        openvino if openvino.starts_with("openvino-") => {
            use imgtype::score::InferenceEngine;
            let kind = if openvino.starts_with("openvino-bf16") { Kind::BFloat16 } else { Kind::Float };
            let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
            let engine = if openvino.starts_with("openvino-int8") {
                let normalized = |_| Tensor::randn([32, 3, size, size], (Kind::Float, Device::Cpu));
                let ranges = imgtype::model::quantize::measure(&model, 2, normalized).expect("ranges");
                let kind = imgtype::device::inference_kind(imgtype::config::Precision::Int8, Device::Cpu);
                imgtype::score::OpenVinoEngine::int8(&model, &ranges, kind, threads).expect("OpenVINO loads")
            } else {
                imgtype::score::OpenVinoEngine::new(&model, kind, threads).expect("OpenVINO loads")
            };
            if openvino.ends_with("-tensor") {
                let input = channels_last(&input);
                Box::new(move || engine.logits(&input).expect("a forward pass"))
            } else {
                let images = random_images(batch as usize, size as u32);
                Box::new(move || engine.logits_for_images(&images).expect("a forward pass"))
            }
        }
        other => panic!("unknown mode {other}: plain, fp32, bf16, openvino-{{fp32,bf16,int8}}[-tensor]"),
    };
    let _ = forward(); // warm-up
    let started = std::time::Instant::now();
    for _ in 0..iters {
        let _ = forward();
    }
    let rate = (batch as usize * iters) as f64 / started.elapsed().as_secs_f64();
    println!(
        "rust images_per_second={rate:.2} ({mode}, size {size}, batch {batch}, {iters} iterations, {} threads)",
        tch::get_num_threads()
    );
}

/// Decoded images of random pixels, as the decoder hands them to the engine.
fn random_images(count: usize, size: u32) -> Vec<image::RgbImage> {
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    (0..count)
        .map(|_| {
            image::RgbImage::from_fn(size, size, |_, _| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let bytes = (state >> 40).to_le_bytes();
                image::Rgb([bytes[0], bytes[1], bytes[2]])
            })
        })
        .collect()
}
