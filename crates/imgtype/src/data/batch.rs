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
    let workers = workers.clamp(1, records.len().max(1));
    let chunk = records.len().div_ceil(workers).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = records
            .chunks(chunk)
            .map(|part| (part.len(), scope.spawn(move || part.iter().map(|r| load_one(source, r, size)).collect())))
            .collect();
        handles
            .into_iter()
            .flat_map(|(count, handle)| {
                handle
                    .join()
                    .unwrap_or_else(|panic| vec![Err(format!("image loader failed: {}", panic_message(&panic))); count])
            })
            .collect::<Vec<_>>()
    })
}

fn load_one(source: &ImageSource, record: &ImageRecord, size: u32) -> Result<RgbImage, String> {
    // The source is only read: nothing a panic interrupts is seen again.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| load_resized(source, &record.image_path, size)))
        .unwrap_or_else(|panic| {
            Err(anyhow::anyhow!("{}: image loader failed: {}", record.image_path, panic_message(&panic)))
        })
        .map_err(|e| format!("{e:#}"))
}
