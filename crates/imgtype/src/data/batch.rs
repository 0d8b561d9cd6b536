//! Decoding batches of images on several threads, skipping unreadable ones.

use image::RgbImage;

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
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|r| load_resized(source, &r.image_path, size).map_err(|e| format!("{e:#}")))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("image loader thread panicked")).collect()
    })
}
