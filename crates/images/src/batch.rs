//! Decoding batches of images on several threads, skipping unreadable ones. Whatever goes
//! wrong with one image (a missing file, a bomb, a decoder panic) is that image's error.

use image::RgbImage;

use super::decode::panic_message;
use super::image::load_resized;
use super::records::ImageRecord;
use super::source::ImageSource;

/// One image that could not be used, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SkippedImage {
    pub image_path: String,
    pub reason: String,
}

/// Loads the given records' images (resized) with up to `workers` threads, in order.
/// Results are per record: the image, or why it could not be read.
pub fn load_images(
    records: &[&ImageRecord],
    source: &ImageSource,
    size: u32,
    workers: usize,
) -> Vec<Result<RgbImage, String>> {
    per_record(records, workers, |record| load_resized(source, &record.image_path, size))
}

/// As [`load_images`], with each image's own loading time in milliseconds (fetch, decode,
/// resize), so per-image latencies are per image.
pub fn load_images_timed(
    records: &[&ImageRecord],
    source: &ImageSource,
    size: u32,
    workers: usize,
) -> Vec<(Result<RgbImage, String>, f64)> {
    per_record(records, workers, |record| {
        let started = std::time::Instant::now();
        let image = load_resized(source, &record.image_path, size).map_err(|e| format!("{e:#}"));
        Ok((image, started.elapsed().as_secs_f64() * 1000.0))
    })
    .into_iter()
    .map(|result| result.unwrap_or_else(|reason| (Err(reason), 0.0)))
    .collect()
}

/// Checks that the records' images can be used ([`ImageSource::check_readable`]), with up
/// to `workers` threads, in order.
pub fn check_images(records: &[&ImageRecord], source: &ImageSource, workers: usize) -> Vec<Result<(), String>> {
    per_record(records, workers, |record| source.check_readable(&record.image_path))
}

/// `work` for each record on up to `workers` threads, results in order; an error or a
/// panic is that record's.
pub fn per_record<T: Send>(
    records: &[&ImageRecord],
    workers: usize,
    work: impl Fn(&ImageRecord) -> anyhow::Result<T> + Sync,
) -> Vec<Result<T, String>> {
    let workers = workers.clamp(1, records.len().max(1));
    let chunk = records.len().div_ceil(workers).max(1);
    let work = &work;
    let mut parts = records.chunks(chunk);
    let first = parts.next().unwrap_or_default();
    // The first part on the calling thread: one image (a single-image API call) spawns none.
    std::thread::scope(|scope| {
        let handles: Vec<_> = parts
            .map(|part| (part.len(), scope.spawn(move || part.iter().map(|r| guarded(r, work)).collect::<Vec<_>>())))
            .collect();
        let mut results: Vec<_> = first.iter().map(|r| guarded(r, work)).collect();
        for (count, handle) in handles {
            results.extend(handle.join().unwrap_or_else(|panic| {
                (0..count).map(|_| Err(format!("image loader failed: {}", panic_message(&panic)))).collect()
            }));
        }
        results
    })
}

fn guarded<T>(record: &ImageRecord, work: &(impl Fn(&ImageRecord) -> anyhow::Result<T> + Sync)) -> Result<T, String> {
    // The source is only read: nothing a panic interrupts is seen again.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(record)))
        .unwrap_or_else(|panic| {
            Err(anyhow::anyhow!("{}: image loader failed: {}", record.image_path, panic_message(&panic)))
        })
        .map_err(|e| format!("{e:#}"))
}
