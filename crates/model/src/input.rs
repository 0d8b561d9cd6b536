//! Decoded images as a model's input tensor, and that tensor on its device.

use image::RgbImage;
use imgtype_images::image::{IMAGENET_MEAN, IMAGENET_STD};
use tch::{Kind, Tensor};

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
