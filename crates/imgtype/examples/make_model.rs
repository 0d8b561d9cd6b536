//! A model file with freshly initialised weights, for benchmarks and trials:
//! `make_model OUT.safetensors [image_size=224] [batch_size=32]`.

use imgtype::{Config, ImageTypeClassifier};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = args.first().ok_or_else(|| anyhow::anyhow!("usage: make_model OUT.safetensors [size] [batch]"))?;
    let mut config = Config::default();
    config.augmentation.image_size = args.get(1).map(|a| a.parse()).transpose()?.unwrap_or(224);
    config.inference.batch_size = args.get(2).map(|a| a.parse()).transpose()?.unwrap_or(32);
    tch::manual_seed(0);
    ImageTypeClassifier::new(&config, tch::Device::Cpu).save(std::path::Path::new(out))?;
    println!("{out}: image size {}, batch {}", config.augmentation.image_size, config.inference.batch_size);
    Ok(())
}
