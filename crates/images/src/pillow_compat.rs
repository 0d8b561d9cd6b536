//! Files Pillow reads that the image crate refuses, read as Pillow reads them: TGA (it has
//! no magic number; recognised by its header, as Pillow's plugin does), ICO files whose
//! largest icon is an RGB PNG, GIFs whose frame has no colour table (grey levels), JPEGs
//! with an APP14 segment too short to hold Adobe's fields (ignored), TIFFs with a colour
//! palette or grey plus alpha, and (`tiff_strips`) Group 3 fax and LZMA TIFFs. Everything
//! else goes to the image crate untouched.

use std::borrow::Cow;
use std::io::Cursor;

use anyhow::{anyhow, Result};
use image::RgbImage;

/// The bytes with what the image crate would trip over, and Pillow ignores, repaired.
pub fn repair(bytes: &[u8]) -> Cow<'_, [u8]> {
    if bytes.starts_with(b"GIF8") {
        return gif_with_grey_palette(bytes).map_or(Cow::Borrowed(bytes), Cow::Owned);
    }
    if bytes.starts_with(&[0xff, 0xd8]) {
        return jpeg_without_short_app14(bytes).map_or(Cow::Borrowed(bytes), Cow::Owned);
    }
    Cow::Borrowed(bytes)
}

/// A GIF without a global colour table gets a grey one (Pillow's default palette), so a
/// frame without a local table decodes to grey levels; frames with their own tables keep them.
fn gif_with_grey_palette(bytes: &[u8]) -> Option<Vec<u8>> {
    const SCREEN_DESCRIPTOR_END: usize = 13;
    let packed = *bytes.get(10)?;
    if packed & 0x80 != 0 || bytes.len() < SCREEN_DESCRIPTOR_END {
        return None;
    }
    let mut repaired = Vec::with_capacity(bytes.len() + 768);
    repaired.extend_from_slice(&bytes[..SCREEN_DESCRIPTOR_END]);
    repaired[10] = 0xf7; // a global table of 256 entries, 8-bit colour resolution
    repaired.extend((0..=255u8).flat_map(|v| [v, v, v]));
    repaired.extend_from_slice(&bytes[SCREEN_DESCRIPTOR_END..]);
    Some(repaired)
}

/// Adobe's APP14 segment holds 12 bytes; a shorter one (which Pillow ignores) is dropped.
fn jpeg_without_short_app14(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut at = 2;
    let mut short = Vec::new();
    while at + 4 <= bytes.len() && bytes[at] == 0xff {
        let marker = bytes[at + 1];
        if marker == 0xda || marker == 0xd9 {
            break; // the scan data (or the end) starts: no more header segments
        }
        let length = u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]) as usize;
        if marker == 0xee && length < 14 && bytes[at + 4..].starts_with(b"Adobe") {
            short.push(at..at + 2 + length);
        }
        at += 2 + length;
    }
    if short.is_empty() {
        return None;
    }
    let mut repaired = bytes.to_vec();
    for range in short.into_iter().rev() {
        repaired.drain(range.start..range.end.min(repaired.len()));
    }
    Some(repaired)
}

/// A TGA header as Pillow's plugin accepts it: colour-map type 0 or 1 (1 only for colour-mapped
/// image types), a known image type, a size, and a known pixel depth.
pub fn looks_like_tga(bytes: &[u8]) -> bool {
    if bytes.len() < 18 {
        return false;
    }
    let (colour_map, image_type, depth) = (bytes[1], bytes[2], bytes[16]);
    let width = u16::from_le_bytes([bytes[12], bytes[13]]);
    let height = u16::from_le_bytes([bytes[14], bytes[15]]);
    let mapped = matches!(image_type, 1 | 9);
    let known_type = matches!(image_type, 1 | 2 | 3 | 9 | 10 | 11);
    known_type
        && (colour_map == 1) == mapped
        && colour_map <= 1
        && width > 0
        && height > 0
        && matches!(depth, 1 | 8 | 15 | 16 | 24 | 32)
}

/// The largest icon of an ICO file when it is stored as a PNG (the image crate takes only
/// RGBA PNG icons; Pillow takes any).
pub fn largest_png_icon(bytes: &[u8]) -> Option<&[u8]> {
    let count = u16::from_le_bytes([*bytes.get(4)?, *bytes.get(5)?]) as usize;
    let entries = (0..count).filter_map(|i| {
        let entry = bytes.get(6 + 16 * i..6 + 16 * (i + 1))?;
        let side = |b: u8| if b == 0 { 256 } else { b as u32 };
        let size = u32::from_le_bytes(entry[8..12].try_into().ok()?) as usize;
        let offset = u32::from_le_bytes(entry[12..16].try_into().ok()?) as usize;
        Some((side(entry[0]) * side(entry[1]), offset, size))
    });
    let (_, offset, size) = entries.max_by_key(|(area, _, _)| *area)?;
    let data = bytes.get(offset..offset.checked_add(size)?)?;
    data.starts_with(b"\x89PNG\r\n\x1a\n").then_some(data)
}

/// Palette, grey-plus-alpha, signed or float grey, Group 3 fax and LZMA TIFFs, which the image
/// crate refuses; `None` for any other
/// TIFF (the image crate reads those). `check_size` sees the size before pixels are decoded.
pub fn decode_tiff_pillow_only(
    bytes: &[u8],
    check_size: impl Fn((u32, u32)) -> Result<()>,
) -> Option<Result<RgbImage>> {
    use tiff::decoder::Decoder;
    use tiff::{ColorType, TiffError, TiffUnsupportedError};
    let mut decoder = Decoder::new(Cursor::new(bytes)).ok()?;
    if crate::tiff_strips::handles(&mut decoder) {
        return Some(crate::tiff_strips::decode(bytes, decoder, check_size));
    }
    match decoder.colortype() {
        Ok(ColorType::GrayA(8) | ColorType::Multiband { bit_depth: 8, num_samples: 2 }) => {
            Some(decode_grey_alpha(decoder, check_size))
        }
        Err(TiffError::UnsupportedError(TiffUnsupportedError::InterpretationWithBits(
            tiff::tags::PhotometricInterpretation::RGBPalette,
            bits,
        ))) if bits == [8] => Some(decode_palette(bytes, decoder, check_size)),
        Ok(ColorType::Gray(bits)) if bits > 8 && !has_unsigned_samples(&mut decoder) => {
            Some(decode_grey_numbers(decoder, check_size))
        }
        _ => None,
    }
}

/// Whether the samples are unsigned integers (TIFF's default sample format), which the image
/// crate decodes; signed integers and floats (scientific grey images) it refuses.
fn has_unsigned_samples(decoder: &mut tiff::decoder::Decoder<Cursor<&[u8]>>) -> bool {
    let formats: Option<Vec<u16>> = decoder.find_tag_unsigned_vec(tiff::tags::Tag::SampleFormat).ok().flatten();
    formats.is_none_or(|formats| formats.iter().all(|&f| f == 1))
}

/// Grey samples that are signed integers or floats, as Pillow's `convert("RGB")` gives them
/// (its modes `I` and `F`): each value cut to a whole number and clipped to 0..255.
fn decode_grey_numbers(
    mut decoder: tiff::decoder::Decoder<Cursor<&[u8]>>,
    check_size: impl Fn((u32, u32)) -> Result<()>,
) -> Result<RgbImage> {
    use tiff::decoder::DecodingResult;
    let (width, height) = decoder.dimensions()?;
    check_size((width, height))?;
    let clip = |v: f64| if v.is_nan() { 0 } else { v.trunc().clamp(0.0, 255.0) as u8 };
    let grey: Vec<u8> = match decoder.read_image()? {
        DecodingResult::I8(v) => v.into_iter().map(|x| clip(x as f64)).collect(),
        DecodingResult::I16(v) => v.into_iter().map(|x| clip(x as f64)).collect(),
        DecodingResult::I32(v) => v.into_iter().map(|x| clip(x as f64)).collect(),
        DecodingResult::I64(v) => v.into_iter().map(|x| clip(x as f64)).collect(),
        DecodingResult::F16(v) => v.into_iter().map(|x| clip(x.to_f64())).collect(),
        DecodingResult::F32(v) => v.into_iter().map(|x| clip(x as f64)).collect(),
        DecodingResult::F64(v) => v.into_iter().map(clip).collect(),
        _ => return Err(anyhow!("grey TIFF samples of an unexpected kind")),
    };
    crate::tiff_strips::grey_to_rgb(grey, width, height)
}

fn decode_grey_alpha(
    mut decoder: tiff::decoder::Decoder<Cursor<&[u8]>>,
    check_size: impl Fn((u32, u32)) -> Result<()>,
) -> Result<RgbImage> {
    let (width, height) = decoder.dimensions()?;
    check_size((width, height))?;
    let tiff::decoder::DecodingResult::U8(samples) = decoder.read_image()? else {
        return Err(anyhow!("grey and alpha TIFF without 8-bit samples"));
    };
    crate::tiff_strips::grey_to_rgb(samples.chunks_exact(2).map(|la| la[0]), width, height)
}

/// Decodes the indices as grey levels (the photometric tag patched in a copy) and looks them
/// up in the colour map, whose 16-bit entries Pillow reduces to their high byte.
fn decode_palette(
    bytes: &[u8],
    mut original: tiff::decoder::Decoder<Cursor<&[u8]>>,
    check_size: impl Fn((u32, u32)) -> Result<()>,
) -> Result<RgbImage> {
    let (width, height) = original.dimensions()?;
    check_size((width, height))?;
    let map: Vec<u16> = original
        .find_tag_unsigned_vec(tiff::tags::Tag::ColorMap)?
        .ok_or_else(|| anyhow!("a palette TIFF without a colour map"))?;
    if map.len() != 3 * 256 {
        return Err(anyhow!("a colour map of {} entries for 8-bit indices", map.len()));
    }
    let patched = with_photometric_min_is_black(bytes).ok_or_else(|| anyhow!("unreadable TIFF directory"))?;
    let mut decoder = tiff::decoder::Decoder::new(Cursor::new(&patched[..]))?;
    let tiff::decoder::DecodingResult::U8(indices) = decoder.read_image()? else {
        return Err(anyhow!("palette TIFF without 8-bit indices"));
    };
    let rgb = indices
        .iter()
        .flat_map(|&i| {
            let i = i as usize;
            [(map[i] >> 8) as u8, (map[256 + i] >> 8) as u8, (map[512 + i] >> 8) as u8]
        })
        .collect();
    RgbImage::from_raw(width, height, rgb).ok_or_else(|| anyhow!("TIFF pixel data does not fill {width}×{height}"))
}

/// A copy of a classic TIFF whose first directory's PhotometricInterpretation says 1 (grey).
fn with_photometric_min_is_black(bytes: &[u8]) -> Option<Vec<u8>> {
    let little = match bytes.get(..4)? {
        b"II*\0" => true,
        b"MM\0*" => false,
        _ => return None,
    };
    let u16_at = |at: usize| -> Option<u16> {
        let b: [u8; 2] = bytes.get(at..at + 2)?.try_into().ok()?;
        Some(if little { u16::from_le_bytes(b) } else { u16::from_be_bytes(b) })
    };
    let u32_at = |at: usize| -> Option<u32> {
        let b: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
        Some(if little { u32::from_le_bytes(b) } else { u32::from_be_bytes(b) })
    };
    let directory = u32_at(4)? as usize;
    let entries = u16_at(directory)? as usize;
    let entry = (0..entries).map(|i| directory + 2 + 12 * i).find(|&at| u16_at(at) == Some(262))?;
    if u16_at(entry + 2)? != 3 {
        return None; // not a SHORT: not written by any encoder we know
    }
    let mut patched = bytes.to_vec();
    let grey: [u8; 2] = if little { 1u16.to_le_bytes() } else { 1u16.to_be_bytes() };
    patched[entry + 8..entry + 10].copy_from_slice(&grey);
    Some(patched)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tga_headers_are_recognised_and_other_bytes_are_not() {
        let mut header = [0u8; 18];
        header[2] = 2;
        header[12] = 4;
        header[14] = 4;
        header[16] = 24;
        assert!(looks_like_tga(&header));
        header[1] = 1; // a colour map on a true-colour image
        assert!(!looks_like_tga(&header));
        assert!(!looks_like_tga(b"just some text that is long enough"));
        assert!(!looks_like_tga(&[0; 18]));
    }

    #[test]
    fn short_adobe_segments_are_dropped_and_others_kept() {
        let jpeg = [&[0xff, 0xd8][..], &[0xff, 0xee, 0, 9], b"Adobe\0d", &[0xff, 0xda, 0, 2, 1, 2]].concat();
        let repaired = repair(&jpeg);
        assert_eq!(&repaired[..], &[0xff, 0xd8, 0xff, 0xda, 0, 2, 1, 2]);
        let full = [&[0xff, 0xd8][..], &[0xff, 0xee, 0, 14], b"Adobe\0d\0\0\0\0\x01", &[0xff, 0xda]].concat();
        assert!(matches!(repair(&full), Cow::Borrowed(_)));
    }
}
