//! Image preprocessing: fetched and decoded (`decode`), resized to a square with
//! Pillow's bilinear antialiased filter; the ImageNet mean and std every model input is
//! normalised with (as a tensor by `imgtype_model::input`, straight into its input buffer by
//! the OpenVINO engine, and inside an exported ONNX graph).

use anyhow::Result;
use image::RgbImage;

use crate::decode::{decode_bytes, decode_within_budget};
use crate::source::{check_key, ImageSource};

/// torchvision's ImageNet normalisation, per RGB channel.
pub const IMAGENET_MEAN: [f64; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f64; 3] = [0.229, 0.224, 0.225];

/// Fetches and decodes one image.
pub fn load_rgb(source: &ImageSource, key: &str) -> Result<RgbImage> {
    check_key(key)?;
    decode_bytes(&source.fetch(key)?, key, source.decode_limits())
}

/// Resizes to `size`×`size` (aspect ratio not kept, as torchvision's `Resize((s, s))`).
pub fn resize_square(image: &RgbImage, size: u32) -> RgbImage {
    resize_square_by(image, size, fast_image_resize::FilterType::Bilinear)
}

/// As [`resize_square`], with Lanczos3: its sharper cut-off lets less of a texture finer than
/// the new size fold back into it as a moiré (which moves with every change of scale).
pub fn resize_square_lanczos(image: &RgbImage, size: u32) -> RgbImage {
    resize_square_by(image, size, fast_image_resize::FilterType::Lanczos3)
}

fn resize_square_by(image: &RgbImage, size: u32, filter: fast_image_resize::FilterType) -> RgbImage {
    if image.width() == size && image.height() == size {
        return image.clone();
    }
    use fast_image_resize::{images::Image, images::ImageRef, PixelType, ResizeAlg, ResizeOptions, Resizer};
    let source = ImageRef::new(image.width(), image.height(), image.as_raw(), PixelType::U8x3)
        .expect("RGB buffer matches its size");
    let mut resized = Image::new(size, size, PixelType::U8x3);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(filter));
    Resizer::new().resize(&source, &mut resized, &options).expect("same pixel type");
    RgbImage::from_raw(size, size, resized.into_vec()).expect("resized buffer")
}

/// Loads one image as `size`×`size` RGB bytes (HWC).
pub fn load_resized(source: &ImageSource, key: &str, size: u32) -> Result<RgbImage> {
    check_key(key)?;
    let (image, _permit) = decode_within_budget(&source.fetch(key)?, key, source.decode_limits(), Some(size))?;
    Ok(resize_square(&image, size))
}
