//! Backend use of the prediction API, as the Python system's `run.py`:
//!
//! ```sh
//! cargo run --release -p imgtype-infer --example backend_api -- results/run_xxx img1.jpg img2.jpg
//! ```
//!
//! One `ImageClassificationApi` is shared by all request threads (it is Send + Sync).

use std::sync::Arc;

use imgtype_infer::ImageClassificationApi;

fn main() -> anyhow::Result<()> {
    // The library only emits `tracing` events; the embedding program decides where they go.
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let mut args = std::env::args().skip(1);
    let model_path = args.next().ok_or_else(|| anyhow::anyhow!("usage: backend_api MODEL_OR_RUN_DIR IMAGE..."))?;
    let images: Vec<String> = args.collect();

    let api = Arc::new(ImageClassificationApi::new(&model_path)?);
    // A request handler would do this for each request, from its own thread:
    let handler = {
        let api = api.clone();
        std::thread::spawn(move || api.predict(&images))
    };
    for result in handler.join().expect("request thread") {
        println!("{}\t{}\t{:.4}", result.image_path, result.predicted_class, result.confidence);
    }
    Ok(())
}
