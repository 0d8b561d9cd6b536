//! Peak memory of many callers predicting large photos at once:
//! `bench_callers_memory MODEL IMAGE [callers=32]`. Every caller is a thread of one shared
//! `ImageClassificationApi` (absolute paths allowed) calling `predict(&[IMAGE])` once, all
//! released together. Prints the callers, the seconds and the process's peak RSS
//! (`getrusage`), as `peak_mib=`.

use std::sync::{Arc, Barrier};

use imgtype::infer::ImageClassificationApi;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = || anyhow::anyhow!("usage: bench_callers_memory MODEL IMAGE [callers=32]");
    let model = args.next().ok_or_else(usage)?;
    let image = args.next().ok_or_else(usage)?;
    let callers: usize = args.next().map(|n| n.parse()).transpose()?.unwrap_or(32);
    let api = ImageClassificationApi::with_device(&model, tch::Device::Cpu)?
        .with_source_policy(imgtype::data::SourcePolicy::trusted())?;
    let api = Arc::new(api);
    let start = Arc::new(Barrier::new(callers));
    let started = std::time::Instant::now();
    let threads: Vec<_> = (0..callers)
        .map(|_| {
            let (api, start, image) = (api.clone(), start.clone(), image.clone());
            std::thread::spawn(move || {
                start.wait();
                api.predict(&[image]).remove(0)
            })
        })
        .collect();
    let predictions: Vec<_> = threads.into_iter().map(|t| t.join().expect("a caller")).collect();
    let failed = predictions.iter().filter(|p| p.error.is_some()).count();
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    println!(
        "{callers} callers, {failed} failed, {:.2} s, peak_mib={:.0}",
        started.elapsed().as_secs_f64(),
        usage.ru_maxrss as f64 / 1024.0
    );
    Ok(())
}
