//! What is JPEG-specific in decoding: the scan count checked before any decoder runs, where
//! the data ends, and decoding at a reduced DCT scale (libjpeg-turbo).

use anyhow::{anyhow, bail, Result};
use image::{DynamicImage, ImageDecoder, RgbImage};

/// Most scans a JPEG may have. A progressive JPEG has about 10 (libjpeg's default script),
/// and each scan costs a pass over the whole image: 10,000 scans of a few end-of-band runs
/// in a 373 KiB file took 22–33 s to decode. The image crate's JPEG decoder (zune-jpeg)
/// stops at the same count.
pub const MAX_JPEG_SCANS: usize = 100;

pub(super) fn check_scans(bytes: &[u8], label: &str) -> Result<()> {
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

/// The largest of 8, 4, 2 by which a `width`×`height` JPEG can be scaled down and stay at
/// least `2 × target` on both sides; `None` when even 2 is too much.
pub fn jpeg_scale_factor(width: u32, height: u32, target: u32) -> Option<u32> {
    [8, 4, 2].into_iter().find(|f| width / f >= 2 * target && height / f >= 2 * target)
}

/// Decodes a JPEG at 1/`factor` of its size with libjpeg-turbo, EXIF orientation applied, at
/// most [`MAX_JPEG_SCANS`] scans (libjpeg-turbo's own limit besides our count). `size` is the
/// size the image crate read, the one checked against the limits and the one screening reads.
/// Grey, YCbCr and RGB JPEGs (nearly all photos) decode scaled; data that ends early is
/// refused, as Pillow refuses it (or, with `allow_truncated`, decoded in full and filled in).
/// Everything else is `None`: decoded in full through the image crate by the caller, as every
/// other image, so a scaled decode is never less forgiving than a full one and never reads a
/// file differently: CMYK, YCCK, lossless JPEGs, anything libjpeg-turbo fails or warns about,
/// and headers it reads as another size (a restart marker among the header segments can make
/// one decoder skip a header the other reads: a 64 KB file of 256×256 was 46000×46000 to
/// libjpeg-turbo).
pub(super) fn decode_jpeg_scaled(
    bytes: &[u8],
    label: &str,
    size: (u32, u32),
    factor: u32,
    allow_truncated: bool,
) -> Result<Option<RgbImage>> {
    let (w, h, rgb) = match decode_scaled_rgb(bytes, size, factor) {
        Ok(decoded) => decoded,
        Err(Scaled::EndsEarly(message)) if !allow_truncated => bail!("{label}: truncated image data ({message})"),
        Err(_) => return Ok(None),
    };
    let mut image = DynamicImage::ImageRgb8(
        RgbImage::from_raw(w, h, rgb).ok_or_else(|| anyhow!("{label}: decoded size does not match {w}×{h}"))?,
    );
    let orientation = image::codecs::jpeg::JpegDecoder::new(std::io::Cursor::new(bytes))
        .ok()
        .and_then(|mut decoder| decoder.orientation().ok());
    image.apply_orientation(orientation.unwrap_or(image::metadata::Orientation::NoTransforms));
    Ok(Some(image.into_rgb8()))
}

/// Why libjpeg-turbo gave no scaled pixels.
enum Scaled {
    /// The data ends before the image does (libjpeg's "premature end" warnings).
    EndsEarly(String),
    /// Another size than the image crate's, a colour space it does not turn into RGB, or any
    /// other failure or warning.
    NotScaled,
}

impl From<turbojpeg::Error> for Scaled {
    fn from(error: turbojpeg::Error) -> Self {
        let message = error.to_string();
        if message.contains("Premature end") {
            Scaled::EndsEarly(message)
        } else {
            Scaled::NotScaled
        }
    }
}

/// libjpeg-turbo's RGB pixels of a JPEG at 1/`factor`, with their width and height.
fn decode_scaled_rgb(bytes: &[u8], size: (u32, u32), factor: u32) -> Result<(u32, u32, Vec<u8>), Scaled> {
    let mut decompressor = turbojpeg::Decompressor::new()?;
    let header = decompressor.read_header(bytes)?;
    if (header.width, header.height) != (size.0 as usize, size.1 as usize) {
        return Err(Scaled::NotScaled);
    }
    if matches!(header.colorspace, turbojpeg::Colorspace::CMYK | turbojpeg::Colorspace::YCCK) || header.is_lossless {
        return Err(Scaled::NotScaled);
    }
    let scale = turbojpeg::ScalingFactor::new(1, factor as usize);
    decompressor.set_scaling_factor(scale)?;
    decompressor.set_scan_limit(MAX_JPEG_SCANS as u32)?;
    let scaled = header.scaled(scale);
    let mut image = turbojpeg::Image {
        pixels: vec![0u8; 3 * scaled.width * scaled.height],
        width: scaled.width,
        pitch: 3 * scaled.width,
        height: scaled.height,
        format: turbojpeg::PixelFormat::RGB,
    };
    decompressor.decompress(bytes, image.as_deref_mut())?;
    Ok((scaled.width as u32, scaled.height as u32, image.pixels))
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum JpegEnd {
    /// The end-of-image marker is there.
    Complete,
    /// The data stops inside a segment or a scan, or before the end-of-image marker.
    Truncated,
    /// Not laid out as markers and segments; left to the decoder to judge.
    Irregular,
}

/// Walks the JPEG marker segments and entropy-coded scans up to the end-of-image marker.
pub(super) fn jpeg_end(data: &[u8]) -> JpegEnd {
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
#[cfg(test)]
mod tests {
    use super::super::tests::jpeg;
    use super::super::{check_readable, decode_for_size, DecodeLimits};
    use super::*;
    use image::ImageFormat;

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

    /// `jpeg` with an EXIF APP1 segment right after SOI giving `orientation`.
    fn with_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
        let mut tiff = b"II*\0\x08\0\0\0".to_vec();
        tiff.extend(1u16.to_le_bytes()); // one IFD entry
        tiff.extend(0x0112u16.to_le_bytes()); // Orientation
        tiff.extend(3u16.to_le_bytes()); // SHORT
        tiff.extend(1u32.to_le_bytes());
        tiff.extend((orientation as u32).to_le_bytes());
        tiff.extend(0u32.to_le_bytes()); // no next IFD
        let payload = [b"Exif\0\0".as_slice(), &tiff].concat();
        let mut out = jpeg[..2].to_vec();
        out.extend([0xFF, 0xE1]);
        out.extend(((payload.len() + 2) as u16).to_be_bytes());
        out.extend(payload);
        out.extend(&jpeg[2..]);
        out
    }

    #[test]
    fn scaled_decoding_turns_photos_as_full_decoding_does() {
        let limits = DecodeLimits::default();
        let turned = with_orientation(&jpeg(1600, 1000), 6);
        let scaled = decode_for_size(&turned, "turned.jpg", limits, Some(224)).unwrap();
        assert_eq!(scaled.dimensions(), (500, 800), "decoded at 1/2, then turned a quarter");
        let full = decode_for_size(&turned, "turned.jpg", limits, None).unwrap();
        assert_eq!(full.dimensions(), (1000, 1600));
    }

    #[test]
    fn grey_photos_decode_scaled_and_what_libjpeg_turbo_only_warns_about_decodes_in_full() {
        let limits = DecodeLimits::default();
        let grey = image::GrayImage::from_fn(1000, 1000, |x, y| image::Luma([((x + y) / 8) as u8]));
        let mut bytes = Vec::new();
        grey.write_to(&mut std::io::Cursor::new(&mut bytes), ImageFormat::Jpeg).unwrap();
        let scaled = decode_for_size(&bytes, "grey.jpg", limits, Some(100)).unwrap();
        assert_eq!(scaled.dimensions(), (250, 250), "1/4: 250 ≥ 2 × 100");
        assert!(scaled.pixels().all(|p| p[0] == p[1] && p[1] == p[2]));
        // Cut short, with truncated images allowed: libjpeg-turbo warns, the full decoder fills.
        let cut = &jpeg(1000, 1000)[..20_000];
        let lenient = DecodeLimits { allow_truncated: true, ..limits };
        let full = decode_for_size(cut, "cut.jpg", lenient, None).map(|i| i.dimensions());
        let scaled = decode_for_size(cut, "cut.jpg", lenient, Some(100)).map(|i| i.dimensions());
        assert_eq!(scaled.is_ok(), full.is_ok(), "scaled {scaled:?}, full {full:?}");
        // And refused when they are not.
        assert!(decode_for_size(cut, "cut.jpg", limits, Some(100)).is_err());
    }

    /// Found by a hostile review: a restart marker among the header segments; the image crate
    /// reads 256×256, libjpeg-turbo 20000×20000 (Pillow refuses it as a bomb). Decoded as the
    /// image crate reads it, whose size the limits checked, on every path.
    #[test]
    fn headers_the_decoders_read_as_other_sizes_decode_as_checked() {
        let bytes = include_bytes!("../../testdata/header_sizes_disagree.jpg");
        assert_eq!(decode_scaled_rgb(bytes, (256, 256), 2).err().map(|e| matches!(e, Scaled::NotScaled)), Some(true));
        let limits = DecodeLimits::default();
        for target in [None, Some(64)] {
            match decode_for_size(bytes, "disagree.jpg", limits, target) {
                Ok(image) => assert_eq!(image.dimensions(), (256, 256), "{target:?}"),
                Err(e) => panic!("{target:?}: {e:#}"),
            }
        }
        assert!(check_readable(bytes, "disagree.jpg", limits).is_ok());
    }

    #[test]
    fn data_cut_short_is_decoded_scaled_as_it_is_decoded_in_full() {
        // The end of the scan data cut off, the end-of-image marker kept: the markers look
        // complete, libjpeg-turbo runs out of data.
        let whole = jpeg(1000, 1000);
        let cut = [&whole[..whole.len() / 3], &whole[whole.len() - 2..]].concat();
        let strict = DecodeLimits::default();
        let scaled = decode_for_size(&cut, "cut.jpg", strict, Some(100));
        let full = decode_for_size(&cut, "cut.jpg", strict, None);
        assert_eq!(
            scaled.is_ok(),
            full.is_ok(),
            "scaled {:?}, full {:?}",
            scaled.map(|i| i.dimensions()),
            full.map(|i| i.dimensions())
        );
    }
}
