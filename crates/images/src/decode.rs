//! Image bytes to RGB pixels, defensively: the format is sniffed from the bytes (keys often
//! have no extension), the size is checked from the header before anything is allocated
//! (decompression bombs), JPEG and PNG data that ends early is refused rather than filled
//! in, and a decoder that panics gives an error for that image. EXIF orientation is applied:
//! the photo as a person sees it, in training and inference alike.

use anyhow::{anyhow, bail, Context, Result};
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};

use super::pillow_compat;
use imgtype_base::config::DataConfig;

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
            "{label}: AVIF is not supported (no AVIF decoder is built in); convert the image to \
             JPEG, PNG or WebP"
        );
    }
    if !limits.allow_truncated {
        check_complete(bytes, format).with_context(|| format!("{label}: truncated image data"))?;
    }
    if let (ImageFormat::Jpeg, Some(target)) = (format, target) {
        let (width, height) = reader.into_dimensions().with_context(|| format!("cannot decode image {label}"))?;
        check_size((width, height), limits, label)?;
        if let Some(factor) = jpeg_scale_factor(width, height, target) {
            // Full size: a progressive JPEG's coefficients are kept whole while it decodes.
            let permit = PixelPermit::acquire((width, height));
            return guarded(label, || decode_jpeg_scaled(bytes, label, width, height, factor)).map(|i| (i, permit));
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

/// Most scans a JPEG may have. A progressive JPEG has about 10 (libjpeg's default script),
/// and each scan costs a pass over the whole image: 10,000 scans of a few end-of-band runs
/// in a 373 KiB file took 22–33 s to decode. The image crate's JPEG decoder (zune-jpeg)
/// stops at the same count.
pub const MAX_JPEG_SCANS: usize = 100;

fn check_scans(bytes: &[u8], label: &str) -> Result<()> {
    let scans = jpeg_scans(bytes);
    if scans > MAX_JPEG_SCANS {
        bail!("{label}: a JPEG of {scans} scans, more than the {MAX_JPEG_SCANS} this tool decodes (made to be slow to decode?)");
    }
    Ok(())
}

/// The start-of-scan markers of a JPEG, counted over its marker segments as a decoder walks
/// them: bytes between segments are skipped (as libjpeg and jpeg-decoder do), a scan's
/// entropy-coded data runs to the next marker that is neither a restart nor a stuffed `FF 00`.
/// Linear in the size of the data.
fn jpeg_scans(data: &[u8]) -> usize {
    let mut scans = 0;
    let mut i = 2;
    while i + 1 < data.len() {
        if data[i] != 0xFF {
            i += 1;
            continue;
        }
        let marker = data[i + 1];
        match marker {
            0xFF | 0x00 => i += 1,
            0xD9 => break,
            0x01 | 0xD0..=0xD7 => i += 2,
            _ => {
                let Some(length) = data.get(i + 2..i + 4).map(|b| u16::from_be_bytes([b[0], b[1]]) as usize) else {
                    break;
                };
                i += 2 + length;
                if marker == 0xDA {
                    scans += 1;
                    while i + 1 < data.len()
                        && !(data[i] == 0xFF && data[i + 1] != 0x00 && !(0xD0..=0xD7).contains(&data[i + 1]))
                    {
                        i += 1;
                    }
                }
            }
        }
    }
    scans
}

/// A share of the decoded pixels the whole process may hold at once: every decode takes
/// one, sized by the image's full size, before it allocates, and holds it until the image is
/// resized and dropped. Callers beyond the budget wait their turn (first come, first served),
/// so memory grows with the budget, not with the number of callers (32 callers of a 36 MP
/// photo each took 200 MB at once). An image larger than the whole budget decodes alone.
#[must_use = "the pixels stay counted while the permit lives"]
pub struct PixelPermit {
    pixels: u64,
    /// The budget it was taken from (given back there, also after a fork replaced it).
    budget: Option<&'static PixelBudget>,
}

struct PixelBudget {
    state: std::sync::Mutex<BudgetState>,
    turn: std::sync::Condvar,
    capacity: u64,
}

#[derive(Default)]
struct BudgetState {
    in_use: u64,
    next_ticket: u64,
    serving: u64,
}

/// Decoded pixels in flight per core (at least four cores' worth): 32 MP, a 36 MP photo's
/// worth of RGB, decoder buffers and all, is about 200 MB.
pub const PIXELS_IN_FLIGHT_PER_CORE: u64 = 32_000_000;

/// The process's budget; a child made by `fork` gets a fresh one (its parent's decodes and
/// whatever lock they held are not in it): see [`PixelPermit::reset_after_fork`].
static BUDGET: std::sync::atomic::AtomicPtr<PixelBudget> = std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());

fn new_budget() -> *mut PixelBudget {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).max(4) as u64;
    Box::into_raw(Box::new(PixelBudget {
        state: std::sync::Mutex::new(BudgetState::default()),
        turn: std::sync::Condvar::new(),
        capacity: PIXELS_IN_FLIGHT_PER_CORE * cores,
    }))
}

fn pixel_budget() -> &'static PixelBudget {
    use std::sync::atomic::Ordering;
    let mut budget = BUDGET.load(Ordering::Acquire);
    if budget.is_null() {
        let fresh = new_budget();
        budget = match BUDGET.compare_exchange(std::ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => fresh,
            Err(existing) => {
                // SAFETY: `fresh` was never shared.
                drop(unsafe { Box::from_raw(fresh) });
                existing
            }
        };
    }
    // SAFETY: a budget, once stored, is never freed (a replaced one is leaked).
    unsafe { &*budget }
}

impl PixelPermit {
    /// Waits until `width`×`height` pixels fit in the budget (or nothing else is in flight).
    pub fn acquire((width, height): (u32, u32)) -> Self {
        let budget = pixel_budget();
        let pixels = width as u64 * height as u64;
        let mut state = budget.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        while state.serving != ticket || (state.in_use > 0 && state.in_use + pixels > budget.capacity) {
            state = budget.turn.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        state.in_use += pixels;
        state.serving += 1;
        budget.turn.notify_all();
        Self { pixels, budget: Some(budget) }
    }

    /// In a child made by `fork` (called by `forksafe`'s handler, with one thread): a new,
    /// empty budget; the parent's, with the permits of threads that are not here, is left.
    pub fn reset_after_fork() {
        if !BUDGET.load(std::sync::atomic::Ordering::Acquire).is_null() {
            BUDGET.store(new_budget(), std::sync::atomic::Ordering::Release);
        }
    }

    /// A permit for nothing (an image that was not decoded here).
    pub fn none() -> Self {
        Self { pixels: 0, budget: None }
    }

    /// Pixels now held by every permit of the process.
    pub fn in_flight() -> u64 {
        pixel_budget().state.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).in_use
    }
}

impl Drop for PixelPermit {
    fn drop(&mut self) {
        let Some(budget) = self.budget else { return };
        let mut state = budget.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        state.in_use -= self.pixels;
        budget.turn.notify_all();
    }
}

/// Runs a decoder; a bug that panics in it costs this image only, not the process.
fn guarded(label: &str, decode: impl FnOnce() -> Result<RgbImage>) -> Result<RgbImage> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode))
        .unwrap_or_else(|panic| Err(anyhow!("{label}: the image decoder failed ({})", panic_message(&panic))))
}

/// The largest of 8, 4, 2 by which a `width`×`height` JPEG can be scaled down and stay at
/// least `2 × target` on both sides; `None` when even 2 is too much.
pub fn jpeg_scale_factor(width: u32, height: u32, target: u32) -> Option<u32> {
    [8, 4, 2].into_iter().find(|f| width / f >= 2 * target && height / f >= 2 * target)
}

/// Decodes a JPEG at 1/`factor` of its size, EXIF orientation applied. Grey and RGB JPEGs
/// (nearly all photos); others (CMYK) decode in full through the image crate.
fn decode_jpeg_scaled(bytes: &[u8], label: &str, width: u32, height: u32, factor: u32) -> Result<RgbImage> {
    let mut decoder = jpeg_decoder::Decoder::new(std::io::Cursor::new(bytes));
    decoder.read_info().with_context(|| format!("cannot decode image {label}"))?;
    let info = decoder.info().ok_or_else(|| anyhow!("cannot decode image {label}: no frame header"))?;
    if !matches!(info.pixel_format, jpeg_decoder::PixelFormat::RGB24 | jpeg_decoder::PixelFormat::L8) {
        // In full, within the caller's permit (its size was checked already).
        let reader = ImageReader::with_format(std::io::Cursor::new(bytes), ImageFormat::Jpeg);
        let decoder = reader.into_decoder().with_context(|| format!("cannot decode image {label}"))?;
        return decode_oriented(decoder, label);
    }
    let (w, h) = (width.div_ceil(factor) as u16, height.div_ceil(factor) as u16);
    decoder.scale(w, h).with_context(|| format!("cannot decode image {label}"))?;
    let pixels = decoder.decode().with_context(|| format!("cannot decode image {label}"))?;
    let info = decoder.info().ok_or_else(|| anyhow!("cannot decode image {label}: no frame header"))?;
    let (w, h) = (info.width as u32, info.height as u32);
    let rgb = match info.pixel_format {
        jpeg_decoder::PixelFormat::L8 => pixels.iter().flat_map(|&v| [v, v, v]).collect(),
        _ => pixels,
    };
    let mut image = DynamicImage::ImageRgb8(
        RgbImage::from_raw(w, h, rgb).ok_or_else(|| anyhow!("{label}: decoded size does not match {w}×{h}"))?,
    );
    let orientation = decoder.exif_data().and_then(image::metadata::Orientation::from_exif_chunk);
    image.apply_orientation(orientation.unwrap_or(image::metadata::Orientation::NoTransforms));
    Ok(image.into_rgb8())
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
        let mut decoder = jpeg_decoder::Decoder::new(std::io::Cursor::new(bytes));
        decoder.read_info().with_context(|| format!("cannot decode image {label}"))?;
        let info = decoder.info().ok_or_else(|| anyhow!("cannot decode image {label}: no frame header"))?;
        check_size((info.width as u32, info.height as u32), limits, label)?;
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

#[derive(Debug, PartialEq, Eq)]
enum JpegEnd {
    /// The end-of-image marker is there.
    Complete,
    /// The data stops inside a segment or a scan, or before the end-of-image marker.
    Truncated,
    /// Not laid out as markers and segments; left to the decoder to judge.
    Irregular,
}

/// Walks the JPEG marker segments and entropy-coded scans up to the end-of-image marker.
fn jpeg_end(data: &[u8]) -> JpegEnd {
    if !data.starts_with(&[0xFF, 0xD8]) {
        return JpegEnd::Irregular;
    }
    let mut i = 2;
    loop {
        if i >= data.len() {
            return JpegEnd::Truncated;
        }
        if data[i] != 0xFF {
            return JpegEnd::Irregular;
        }
        while i < data.len() && data[i] == 0xFF {
            i += 1; // fill bytes
        }
        let Some(&marker) = data.get(i) else { return JpegEnd::Truncated };
        i += 1;
        match marker {
            0xD9 => return JpegEnd::Complete,
            0x01 | 0xD0..=0xD7 => continue, // markers without a segment
            _ => {
                let Some(length) = data.get(i..i + 2).map(|b| u16::from_be_bytes([b[0], b[1]]) as usize) else {
                    return JpegEnd::Truncated;
                };
                i += length;
                if marker == 0xDA {
                    // Entropy-coded data: 0xFF is stuffed as FF 00; restart markers FF D0–D7 sit inside.
                    loop {
                        if i + 1 >= data.len() {
                            return JpegEnd::Truncated;
                        }
                        if data[i] == 0xFF && data[i + 1] != 0x00 && !(0xD0..=0xD7).contains(&data[i + 1]) {
                            break;
                        }
                        i += 1;
                    }
                }
            }
        }
    }
}

/// Whether the PNG chunk sequence reaches its `IEND` chunk.
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

    fn jpeg(width: u32, height: u32) -> Vec<u8> {
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
    fn progressive_jpeg(side: u16, ac_scans: usize) -> Vec<u8> {
        let mut jpeg = vec![0xFF, 0xD8];
        jpeg.extend([0xFF, 0xDB, 0, 67, 0]);
        jpeg.extend([1u8; 64]);
        let [h, l] = side.to_be_bytes();
        jpeg.extend([0xFF, 0xC2, 0, 11, 8, h, l, h, l, 1, 1, 0x11, 0]);
        for (class, symbol) in [(0x00, 0x00), (0x10, 0xE0)] {
            let mut counts = [0u8; 16];
            counts[0] = 1;
            jpeg.extend([0xFF, 0xC4, 0, 20, class]);
            jpeg.extend(counts);
            jpeg.push(symbol);
        }
        let blocks = (side as usize / 8).pow(2);
        jpeg.extend([0xFF, 0xDA, 0, 8, 1, 1, 0x00, 0, 0, 0]);
        jpeg.extend(vec![0u8; blocks / 8]);
        let runs = blocks.div_ceil(16_384);
        let bits = runs * 15;
        let mut ac = vec![0u8; bits.div_ceil(8)];
        if bits % 8 != 0 {
            *ac.last_mut().unwrap() = (1u8 << (8 - bits % 8)) - 1;
        }
        for _ in 0..ac_scans {
            jpeg.extend([0xFF, 0xDA, 0, 8, 1, 1, 0x00, 1, 63, 0]);
            jpeg.extend(&ac);
        }
        jpeg.extend([0xFF, 0xD9]);
        jpeg
    }

    #[test]
    fn a_jpeg_of_thousands_of_scans_is_refused_before_decoding() {
        let limits = DecodeLimits::default();
        let few = progressive_jpeg(1024, 9);
        assert_eq!(jpeg_scans(&few), 10);
        assert_eq!(jpeg_scans(&jpeg(40, 30)), 1);
        for target in [None, Some(64)] {
            let image = decode_for_size(&few, "few.jpg", limits, target).unwrap();
            assert!(image.width() >= 128 && image.width() == image.height(), "{:?}", image.dimensions());
        }
        let many = progressive_jpeg(4096, 10_000);
        assert_eq!(jpeg_scans(&many), 10_001);
        for target in [None, Some(224)] {
            let err = format!("{:#}", decode_for_size(&many, "many.jpg", limits, target).unwrap_err());
            assert!(err.contains("many.jpg: a JPEG of 10001 scans, more than the 100"), "{err}");
        }
        let err = format!("{:#}", check_readable(&many, "many.jpg", limits).unwrap_err());
        assert!(err.contains("10001 scans"), "{err}");
        // Garbage between segments, which decoders skip, does not hide scans from the count.
        let mut hidden = many.clone();
        hidden.splice(2..2, [0x00, 0x13, 0x37]);
        assert_eq!(jpeg_scans(&hidden), 10_001);
    }

    mod scan_count {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

            /// The count is that of the scans written, wherever decoders' skipped bytes (not
            /// 0xFF) are put between segments; any bytes at all are counted without a panic.
            #[test]
            fn scans_are_counted_through_garbage_between_segments(
                scans in 0usize..130,
                garbage in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..0xFF), 0..6),
                noise in proptest::collection::vec(any::<u8>(), 0..200),
            ) {
                let clean = progressive_jpeg(64, scans);
                // Segment starts: every 0xFF followed by a marker byte, outside entropy data.
                let starts: Vec<usize> = (2..clean.len() - 1)
                    .filter(|&i| clean[i] == 0xFF && clean[i + 1] != 0 && clean[i - 1] != 0xFF)
                    .collect();
                let mut messy = clean.clone();
                let mut places: Vec<(usize, u8)> = garbage.iter().map(|(at, byte)| (starts[at.index(starts.len())], *byte)).collect();
                places.sort_by(|a, b| b.0.cmp(&a.0));
                for (at, byte) in places {
                    messy.insert(at, byte);
                }
                prop_assert_eq!(jpeg_scans(&clean), scans + 1);
                prop_assert_eq!(jpeg_scans(&messy), scans + 1);
                let _ = jpeg_scans(&noise);
                let mut prefixed = vec![0xFF, 0xD8];
                prefixed.extend(&noise);
                let _ = jpeg_scans(&prefixed);
            }
        }
    }

    #[test]
    fn decoded_pixels_in_flight_stay_within_the_budget() {
        let capacity = pixel_budget().capacity;
        let side = ((capacity / 3) as f64).sqrt() as u32; // a third of the budget each
        let peak = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|scope| {
            for _ in 0..12 {
                scope.spawn(|| {
                    for _ in 0..5 {
                        let permit = PixelPermit::acquire((side, side));
                        peak.fetch_max(PixelPermit::in_flight(), std::sync::atomic::Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(2));
                        drop(permit);
                    }
                });
            }
        });
        let peak = peak.into_inner();
        assert!(peak <= capacity && peak >= 2 * side as u64 * side as u64, "peak {peak} of {capacity}");
        // An image over the whole budget still gets its turn, alone.
        drop(PixelPermit::acquire((capacity as u32, 2)));
    }

    #[test]
    fn empty_and_unknown_bytes_say_so() {
        let limits = DecodeLimits::default();
        assert!(format!("{:#}", decode_bytes(b"", "e.jpg", limits).unwrap_err()).contains("empty file"));
        let err = format!("{:#}", decode_bytes(b"<html></html>", "h.jpg", limits).unwrap_err());
        assert!(err.contains("not an image"), "{err}");
    }
}
