//! Image bytes to RGB pixels, defensively: the format is sniffed from the bytes (keys often
//! have no extension), the size is checked from the header before anything is allocated
//! (decompression bombs), JPEG and PNG data that ends early is refused rather than filled
//! in, and a decoder that panics gives an error for that image. EXIF orientation is applied:
//! the photo as a person sees it, in training and inference alike.

use anyhow::{anyhow, bail, Context, Result};
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};

mod budget;
mod jpeg;

pub use budget::{PixelPermit, PIXELS_IN_FLIGHT_PER_CORE};
pub use jpeg::{jpeg_scale_factor, MAX_JPEG_SCANS};

use super::pillow_compat;
use imgtype_base::config::DataConfig;
use jpeg::{check_scans, decode_jpeg_scaled, jpeg_end, JpegEnd};

/// What a decoder may be asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// More pixels than this get a warning, more than twice this are refused (Pillow's
    /// `MAX_IMAGE_PIXELS` rule); `None`: no limit.
    pub max_pixels: Option<u64>,
    /// Decode JPEG / PNG data that ends early, the missing part filled in (Pillow's
    /// `LOAD_TRUNCATED_IMAGES`).
    pub allow_truncated: bool,
}

impl DecodeLimits {
    pub fn from_config(data: &DataConfig) -> Self {
        Self { max_pixels: data.max_image_pixels, allow_truncated: data.allow_truncated_images }
    }
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self::from_config(&DataConfig::default())
    }
}

/// Decodes image bytes of any supported format; `label` names the image in errors.
pub fn decode_bytes(bytes: &[u8], label: &str, limits: DecodeLimits) -> Result<RgbImage> {
    decode_for_size(bytes, label, limits, None)
}

/// Decodes an image that will be resized to `target`×`target`: a JPEG at least four times
/// that size on both sides is decoded at a reduced DCT scale (1/2, 1/4 or 1/8), never below
/// twice the target on either side, so the resize that follows still averages over enough
/// pixels (tested against full decoding). Other images decode in full.
pub fn decode_for_size(bytes: &[u8], label: &str, limits: DecodeLimits, target: Option<u32>) -> Result<RgbImage> {
    decode_within_budget(bytes, label, limits, target).map(|(image, _permit)| image)
}

/// As [`decode_for_size`], with the decoded pixels' share of the process's budget (see
/// [`PixelPermit`]): keep it until the full-size image is resized and dropped.
pub fn decode_within_budget(
    bytes: &[u8],
    label: &str,
    limits: DecodeLimits,
    target: Option<u32>,
) -> Result<(RgbImage, PixelPermit)> {
    if bytes.is_empty() {
        bail!("{label}: empty file (0 bytes)");
    }
    let repaired = pillow_compat::repair(bytes);
    let bytes = &repaired[..];
    let mut reader = ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .with_context(|| format!("cannot read image {label}"))?;
    let format = match reader.format() {
        Some(format) => format,
        None if pillow_compat::looks_like_tga(bytes) => {
            reader.set_format(ImageFormat::Tga);
            ImageFormat::Tga
        }
        None => bail!("{label}: not an image (unknown format)"),
    };
    if format == ImageFormat::Ico {
        if let Some(icon) = pillow_compat::largest_png_icon(bytes) {
            return decode_within_budget(icon, label, limits, target);
        }
    }
    if format == ImageFormat::Jpeg {
        check_scans(bytes, label)?;
    }
    if format == ImageFormat::Tiff {
        let without_lzma = || {
            let uncompressed = crate::tiff_strips::without_lzma(bytes, |size| check_size(size, limits, label));
            uncompressed.transpose().with_context(|| format!("cannot decode image {label}"))
        };
        if let Some(uncompressed) = guarded(label, without_lzma)? {
            return decode_within_budget(&uncompressed, label, limits, target);
        }
        let permit = std::cell::RefCell::new(None);
        let check = |size: (u32, u32)| {
            check_size(size, limits, label)?;
            *permit.borrow_mut() = Some(PixelPermit::acquire(size));
            Ok(())
        };
        if let Some(decoded) = guarded(label, || {
            pillow_compat::decode_tiff_pillow_only(bytes, check)
                .transpose()
                .map(|image| image.unwrap_or_default())
                .with_context(|| format!("cannot decode image {label}"))
        })
        .map(|image| (image.width() > 0).then_some(image))
        .transpose()
        {
            let permit = permit.into_inner().unwrap_or_else(PixelPermit::none);
            return decoded.map(|image| (image, permit));
        }
    }
    if format == ImageFormat::Avif {
        bail!(
            "{label}: AVIF is not supported (no AVIF decoder is built in: the image crate's needs \
             dav1d 1.3 or later, newer than Debian 12's); convert the image to JPEG, PNG or WebP"
        );
    }
    if !limits.allow_truncated {
        check_complete(bytes, format).with_context(|| format!("{label}: truncated image data"))?;
    }
    if let (ImageFormat::Jpeg, Some(target)) = (format, target) {
        if let Some(decoded) = jpeg_scaled_within_budget(reader, bytes, label, limits, target)? {
            return Ok(decoded);
        }
        reader = ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format()?;
    }
    let mut decoder_limits = image::Limits::default();
    decoder_limits.max_alloc = limits.max_pixels.map(|max| max.saturating_mul(8));
    reader.limits(decoder_limits);
    let decoder = reader.into_decoder().with_context(|| format!("cannot decode image {label}"))?;
    check_size(decoder.dimensions(), limits, label)?;
    let permit = PixelPermit::acquire(decoder.dimensions());
    guarded(label, move || decode_oriented(decoder, label)).map(|image| (image, permit))
}

/// The image a decoder gives, EXIF orientation applied, as RGB.
fn decode_oriented(mut decoder: impl ImageDecoder, label: &str) -> Result<RgbImage> {
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder).with_context(|| format!("cannot decode image {label}"))?;
    image.apply_orientation(orientation);
    Ok(image.into_rgb8())
}

/// A JPEG large enough for `target` decoded at a reduced DCT scale, with its share of the
/// budget; `None`: not large enough, or one to decode in full (which takes its own permit).
fn jpeg_scaled_within_budget(
    reader: ImageReader<std::io::Cursor<&[u8]>>,
    bytes: &[u8],
    label: &str,
    limits: DecodeLimits,
    target: u32,
) -> Result<Option<(RgbImage, PixelPermit)>> {
    let (width, height) = reader.into_dimensions().with_context(|| format!("cannot decode image {label}"))?;
    check_size((width, height), limits, label)?;
    let Some(factor) = jpeg_scale_factor(width, height, target) else { return Ok(None) };
    // Full size: a progressive JPEG's coefficients are kept whole while it decodes.
    let permit = PixelPermit::acquire((width, height));
    let scaled = guarded(label, || decode_jpeg_scaled(bytes, label, (width, height), factor, limits.allow_truncated))?;
    Ok(scaled.map(|image| (image, permit)))
}

/// Runs a decoder; a bug that panics in it costs this image only, not the process.
fn guarded<T>(label: &str, decode: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode))
        .unwrap_or_else(|panic| Err(anyhow!("{label}: the image decoder failed ({})", panic_message(&panic))))
}

/// Checks that the bytes are an image this tool can use, decoding no more than needed: a
/// JPEG whose marker segments and scans run to its end-of-image marker and whose headers the
/// decoder accepts, within the size limit, is readable without its pixels; other formats
/// (and JPEGs laid out irregularly) are decoded. Refuses what decoding refuses: empty data,
/// not an image, truncated data, over the size limit, headers the decoder rejects.
pub fn check_readable(bytes: &[u8], label: &str, limits: DecodeLimits) -> Result<()> {
    if bytes.is_empty() {
        bail!("{label}: empty file (0 bytes)");
    }
    let repaired = pillow_compat::repair(bytes);
    let bytes = &repaired[..];
    let reader = ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .with_context(|| format!("cannot read image {label}"))?;
    if reader.format() != Some(ImageFormat::Jpeg) || jpeg_end(bytes) == JpegEnd::Irregular {
        return decode_bytes(bytes, label, limits).map(|_| ());
    }
    if !limits.allow_truncated {
        check_complete(bytes, ImageFormat::Jpeg).with_context(|| format!("{label}: truncated image data"))?;
    }
    check_scans(bytes, label)?;
    guarded(label, || {
        // The headers as decoding reads them (the image crate's decoder), so screening keeps
        // what decoding can decode and refuses what it refuses.
        let decoder = image::codecs::jpeg::JpegDecoder::new(std::io::Cursor::new(bytes))
            .with_context(|| format!("cannot decode image {label}"))?;
        check_size(decoder.dimensions(), limits, label)?;
        Ok(RgbImage::new(0, 0))
    })
    .map(|_| ())
}

/// The first line of a caught panic's message (libtorch appends a C++ backtrace).
pub fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into());
    text.lines().next().unwrap_or("panic").trim().to_string()
}

fn check_size((width, height): (u32, u32), limits: DecodeLimits, label: &str) -> Result<()> {
    let Some(max) = limits.max_pixels else { return Ok(()) };
    let pixels = width as u64 * height as u64;
    if pixels > max.saturating_mul(2) {
        bail!(
            "{label}: image is {width}×{height} pixels ({pixels}), over the limit of {} \
             (2 × data.max_image_pixels = {max}); a decompression bomb?",
            max.saturating_mul(2)
        );
    }
    if pixels > max {
        tracing::warn!(
            "{label}: image is {width}×{height} pixels ({pixels}), more than data.max_image_pixels = {max}; \
             decoding it"
        );
    }
    Ok(())
}

/// Fails when JPEG or PNG data ends before the image does. Other formats' decoders
/// report short data themselves.
fn check_complete(bytes: &[u8], format: ImageFormat) -> Result<()> {
    let complete = match format {
        ImageFormat::Jpeg => jpeg_end(bytes) != JpegEnd::Truncated,
        ImageFormat::Png => png_has_iend(bytes),
        _ => true,
    };
    if !complete {
        bail!(
            "the data ends before the image does ({} bytes); set data.allow_truncated_images to use such files",
            bytes.len()
        );
    }
    Ok(())
}

fn png_has_iend(data: &[u8]) -> bool {
    let mut i = 8; // signature
    while let Some(header) = data.get(i..i + 8) {
        let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let end = i + 12 + length;
        if end > data.len() {
            return false;
        }
        if &header[4..8] == b"IEND" {
            return true;
        }
        i = end;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn jpeg(width: u32, height: u32) -> Vec<u8> {
        let image = RgbImage::from_fn(width, height, |x, y| image::Rgb([(x * 9) as u8, (y * 5) as u8, (x * y) as u8]));
        let mut bytes = Vec::new();
        image.write_to(&mut std::io::Cursor::new(&mut bytes), ImageFormat::Jpeg).unwrap();
        bytes
    }

    fn png(width: u32, height: u32) -> Vec<u8> {
        let image = RgbImage::from_fn(width, height, |x, y| image::Rgb([(x * 9) as u8, (y * 5) as u8, 7]));
        let mut bytes = Vec::new();
        image.write_to(&mut std::io::Cursor::new(&mut bytes), ImageFormat::Png).unwrap();
        bytes
    }

    #[test]
    fn complete_files_decode_and_every_cut_is_refused() {
        let limits = DecodeLimits::default();
        for (name, bytes) in [("a.jpg", jpeg(40, 30)), ("a.png", png(40, 30))] {
            assert_eq!(decode_bytes(&bytes, name, limits).unwrap().dimensions(), (40, 30));
            for cut in (20..bytes.len()).step_by(37).chain([bytes.len() - 1]) {
                let err = format!("{:#}", decode_bytes(&bytes[..cut], name, limits).unwrap_err());
                assert!(err.contains(name), "{err}");
            }
            let allowed = DecodeLimits { allow_truncated: true, ..limits };
            let cut = &bytes[..bytes.len() - 2];
            if name.ends_with(".jpg") {
                assert_eq!(decode_bytes(cut, name, allowed).unwrap().dimensions(), (40, 30), "filled in when allowed");
            }
        }
    }

    #[test]
    fn size_is_checked_before_decoding() {
        let limits = DecodeLimits { max_pixels: Some(500), allow_truncated: false };
        let err = format!("{:#}", decode_bytes(&png(40, 30), "big.png", limits).unwrap_err());
        assert!(err.contains("40×30") && err.contains("over the limit of 1000"), "{err}");
        let warned = DecodeLimits { max_pixels: Some(1000), allow_truncated: false };
        assert!(decode_bytes(&png(40, 30), "big.png", warned).is_ok(), "between the limit and twice it: a warning");
        let unlimited = DecodeLimits { max_pixels: None, allow_truncated: false };
        assert!(decode_bytes(&png(40, 30), "big.png", unlimited).is_ok());
    }

    /// A grey progressive JPEG of `side`×`side` (a multiple of 64): one DC scan, then
    /// `ac_scans` scans of the same AC band, each one end-of-band run per 16,384 blocks (the
    /// shape of the 10,000-scan file that took half a minute to decode).
    #[test]
    fn empty_and_unknown_bytes_say_so() {
        let limits = DecodeLimits::default();
        assert!(format!("{:#}", decode_bytes(b"", "e.jpg", limits).unwrap_err()).contains("empty file"));
        let err = format!("{:#}", decode_bytes(b"<html></html>", "h.jpg", limits).unwrap_err());
        assert!(err.contains("not an image"), "{err}");
    }
}
