//! Image decoding and preprocessing: RGB, EXIF orientation applied (the photo as a
//! person sees it, in training and inference alike), resized to a square with a
//! bilinear (triangle) filter, then normalised with the ImageNet mean and std.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};
use tch::{Kind, Tensor};

use crate::model::file::{IMAGENET_MEAN, IMAGENET_STD};

/// A local path for an image key: absolute paths as they are; a relative key under `base`
/// when it exists there, else as given (relative to the working folder).
pub fn resolve_local_path(key: &str, base: Option<&Path>) -> PathBuf {
    let path = Path::new(key);
    match base {
        Some(base) if path.is_relative() => {
            let under_base = base.join(path);
            if under_base.exists() || !path.exists() {
                under_base
            } else {
                path.to_path_buf()
            }
        }
        _ => path.to_path_buf(),
    }
}

/// Decodes any supported format (the extension may be missing, as with `product/unhashed/<uuid>`).
pub fn decode_rgb(path: &Path) -> Result<RgbImage> {
    let key = path.display().to_string();
    if key.starts_with("http://") || key.starts_with("https://") {
        bail!("{key}: remote images are not supported by this loader; download them or set data.base_image_path");
    }
    let reader = ImageReader::open(path)
        .with_context(|| format!("cannot open image {}", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("cannot read image {}", path.display()))?;
    if reader.format().is_none() {
        bail!("{}: not an image (unknown format)", path.display());
    }
    let mut decoder = reader.into_decoder().with_context(|| format!("cannot decode image {}", path.display()))?;
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut image =
        DynamicImage::from_decoder(decoder).with_context(|| format!("cannot decode image {}", path.display()))?;
    image.apply_orientation(orientation);
    Ok(image.to_rgb8())
}

/// Resizes to `size`×`size` (aspect ratio not kept, as torchvision's `Resize((s, s))`).
pub fn resize_square(image: &RgbImage, size: u32) -> RgbImage {
    if image.width() == size && image.height() == size {
        return image.clone();
    }
    image::imageops::resize(image, size, size, image::imageops::FilterType::Triangle)
}

/// Loads one image as `size`×`size` RGB bytes (HWC).
pub fn load_resized(path: &Path, size: u32) -> Result<RgbImage> {
    Ok(resize_square(&decode_rgb(path)?, size))
}

/// Stacks same-sized RGB images into a normalised float batch `[N, 3, H, W]`.
pub fn to_normalized_batch(images: &[RgbImage]) -> Tensor {
    assert!(!images.is_empty(), "empty batch");
    let (w, h) = images[0].dimensions();
    let mut bytes = Vec::with_capacity(images.len() * (w * h * 3) as usize);
    for image in images {
        bytes.extend_from_slice(image.as_raw());
    }
    let batch = Tensor::from_slice(&bytes).view([images.len() as i64, h as i64, w as i64, 3]);
    let batch = batch.permute([0, 3, 1, 2]).to_kind(Kind::Float) / 255.0;
    let mean = Tensor::from_slice(&IMAGENET_MEAN).to_kind(Kind::Float).view([1, 3, 1, 1]);
    let std = Tensor::from_slice(&IMAGENET_STD).to_kind(Kind::Float).view([1, 3, 1, 1]);
    (batch - mean) / std
}
