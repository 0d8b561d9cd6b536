//! Image decoding and preprocessing: RGB, EXIF orientation applied (the photo as a
//! person sees it, in training and inference alike), resized to a square with a
//! bilinear (triangle) filter, then normalised with the ImageNet mean and std.

use anyhow::{bail, Context, Result};
use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};
use tch::{Kind, Tensor};

use super::source::{check_key, ImageSource};
use crate::model::file::{IMAGENET_MEAN, IMAGENET_STD};

/// Decodes image bytes of any supported format (keys often have no extension, as
/// `product/unhashed/<uuid>`); `label` names the image in errors.
pub fn decode_bytes(bytes: &[u8], label: &str) -> Result<RgbImage> {
    let reader = ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .with_context(|| format!("cannot read image {label}"))?;
    if reader.format().is_none() {
        bail!("{label}: not an image (unknown format)");
    }
    let mut decoder = reader.into_decoder().with_context(|| format!("cannot decode image {label}"))?;
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder).with_context(|| format!("cannot decode image {label}"))?;
    image.apply_orientation(orientation);
    Ok(image.to_rgb8())
}

/// Fetches and decodes one image.
pub fn load_rgb(source: &ImageSource, key: &str) -> Result<RgbImage> {
    check_key(key)?;
    decode_bytes(&source.fetch(key)?, key)
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
    Ok(resize_square(&load_rgb(source, key)?, size))
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
