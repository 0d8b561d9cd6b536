//! Image preprocessing: fetched and decoded (`decode`), resized to a square with
//! Pillow's bilinear antialiased filter, then normalised with the ImageNet mean and std.

use anyhow::Result;
use image::RgbImage;
use tch::{Kind, Tensor};

use super::decode::{decode_bytes, decode_within_budget};
use super::source::{check_key, ImageSource};
use crate::model::file::{IMAGENET_MEAN, IMAGENET_STD};

/// Fetches and decodes one image.
pub fn load_rgb(source: &ImageSource, key: &str) -> Result<RgbImage> {
    check_key(key)?;
    decode_bytes(&source.fetch(key)?, key, source.decode_limits())
}

/// Resizes to `size`×`size` (aspect ratio not kept, as torchvision's `Resize((s, s))`).
pub fn resize_square(image: &RgbImage, size: u32) -> RgbImage {
    if image.width() == size && image.height() == size {
        return image.clone();
    }
    use fast_image_resize::{
        images::Image, images::ImageRef, FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer,
    };
    let source = ImageRef::new(image.width(), image.height(), image.as_raw(), PixelType::U8x3)
        .expect("RGB buffer matches its size");
    let mut resized = Image::new(size, size, PixelType::U8x3);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
    Resizer::new().resize(&source, &mut resized, &options).expect("same pixel type");
    RgbImage::from_raw(size, size, resized.into_vec()).expect("resized buffer")
}

/// Loads one image as `size`×`size` RGB bytes (HWC).
pub fn load_resized(source: &ImageSource, key: &str, size: u32) -> Result<RgbImage> {
    check_key(key)?;
    let (image, _permit) = decode_within_budget(&source.fetch(key)?, key, source.decode_limits(), Some(size))?;
    Ok(resize_square(&image, size))
}

/// Stacks same-sized RGB images into a normalised float batch `[N, 3, H, W]` in
/// channels-last memory order: the pixels' own HWC order, so the bytes become floats in one
/// pass and are normalised in place, and the convolutions get the layout they run fastest on.
pub fn to_normalized_batch(images: &[RgbImage]) -> Tensor {
    assert!(!images.is_empty(), "empty batch");
    let (w, h) = images[0].dimensions();
    let mut bytes = Vec::with_capacity(images.len() * (w * h * 3) as usize);
    for image in images {
        bytes.extend_from_slice(image.as_raw());
    }
    let mut batch = Tensor::from_slice(&bytes).view([images.len() as i64, h as i64, w as i64, 3]).to_kind(Kind::Float);
    // (x / 255 − mean) / std, as torchvision's ToTensor + Normalize, channel last.
    let _ = batch.divide_scalar_(255.0);
    let _ = batch.g_sub_(&Tensor::from_slice(&IMAGENET_MEAN).to_kind(Kind::Float));
    let _ = batch.g_div_(&Tensor::from_slice(&IMAGENET_STD).to_kind(Kind::Float));
    batch.permute([0, 3, 1, 2])
}

/// `batch` on `device`: on CUDA through pinned host memory with a non-blocking copy, so the
/// next batch's transfer overlaps the current step; on the CPU, the same tensor.
pub fn to_device(batch: &Tensor, device: tch::Device) -> Tensor {
    match device {
        tch::Device::Cpu => batch.shallow_clone(),
        tch::Device::Cuda(_) => batch.pin_memory(device).to_device_(device, batch.kind(), true, false),
        other => batch.to_device(other),
    }
}
