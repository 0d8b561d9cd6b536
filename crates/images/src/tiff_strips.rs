//! TIFF compressions libtiff (so Pillow) reads and the tiff crate does not: CCITT modified
//! Huffman and Group 3 fax (1-D, bilevel; with the `fax` crate's code tables and Group 3
//! decoder, as the tiff crate decodes Group 4) and LZMA
//! (xz streams, liblzma via `xz2`; 8-bit grey, RGB or RGBA in strips, with or without horizontal
//! prediction). The strips are read from the file's first directory; every strip's output
//! is capped at the bytes the image's size says it holds, so a stream cannot inflate beyond it.

use std::io::Cursor;

use anyhow::{anyhow, bail, Result};
use image::RgbImage;
use tiff::decoder::Decoder;
use tiff::tags::Tag;

const HUFFMAN: u16 = 2;
const FAX3: u16 = 3;
const LZMA: u16 = 34925;
/// Bytes per pixel an LZMA TIFF may inflate to: four samples of 16 bits, as the decoders
/// allocate at most 8 bytes per pixel of the size limit.
const MAX_SAMPLE_BYTES: u64 = 8;

/// Whether the file's compression is fax, which [`decode`] decodes.
pub fn handles(decoder: &mut Decoder<Cursor<&[u8]>>) -> bool {
    matches!(decoder.find_tag_unsigned::<u16>(Tag::Compression), Ok(Some(HUFFMAN | FAX3)))
}

/// Decodes a fax TIFF [`handles`] accepts (bilevel, as libtiff writes them); `check_size`
/// sees the size before pixels are decoded.
pub fn decode(
    bytes: &[u8],
    mut decoder: Decoder<Cursor<&[u8]>>,
    check_size: impl Fn((u32, u32)) -> Result<()>,
) -> Result<RgbImage> {
    let (width, height) = decoder.dimensions()?;
    check_size((width, height))?;
    let layout = Strips::read(bytes, &mut decoder, height, "fax")?;
    if layout.offsets.len() < layout.per_plane {
        bail!("TIFF with {} strips, {} needed", layout.offsets.len(), layout.per_plane);
    }
    let compression = tag_or(&mut decoder, Tag::Compression, 1)?;
    let photometric = tag_or(&mut decoder, Tag::PhotometricInterpretation, 1)?;
    let bits = decoder.find_tag_unsigned_vec::<u16>(Tag::BitsPerSample)?.unwrap_or_else(|| vec![1]);
    if bits != [1] || tag_or(&mut decoder, Tag::SamplesPerPixel, 1)? != 1 {
        bail!("a fax TIFF of {bits:?} bits per sample: fax images are bilevel (1 bit, 1 sample)");
    }
    if compression == u32::from(FAX3) && tag_or(&mut decoder, Tag::Unknown(292), 0)? & 1 != 0 {
        bail!("2-D Group 3 fax TIFF is not supported");
    }
    let decode_strip = if compression == u32::from(HUFFMAN) { huffman_strip } else { fax_strip };
    let mut grey = Vec::with_capacity(width as usize * height as usize);
    for i in 0..layout.per_plane {
        grey.extend(decode_strip(layout.data(i)?, width, layout.rows(i), photometric)?);
    }
    grey_to_rgb(grey, width, height)
}

/// A tag's value, or `default` where the directory has none.
fn tag_or(decoder: &mut Decoder<Cursor<&[u8]>>, tag: Tag, default: u32) -> Result<u32> {
    Ok(decoder.find_tag_unsigned::<u32>(tag)?.unwrap_or(default))
}

/// The first directory's strips: where each one's bytes are, and the rows each holds.
struct Strips<'a> {
    bytes: &'a [u8],
    offsets: Vec<u64>,
    counts: Vec<u64>,
    rows_per_strip: u32,
    height: u32,
    /// Strips per plane (a planar file has one plane per sample).
    per_plane: usize,
}

impl<'a> Strips<'a> {
    /// Refuses tiles (`what` names the compression) and offsets without their counts.
    fn read(bytes: &'a [u8], decoder: &mut Decoder<Cursor<&[u8]>>, height: u32, what: &str) -> Result<Self> {
        if decoder.find_tag(Tag::TileWidth)?.is_some() {
            bail!("tiled TIFF with {what} compression is not supported");
        }
        let rows_per_strip = tag_or(decoder, Tag::RowsPerStrip, height)?.clamp(1, height.max(1));
        let offsets = decoder.get_tag_u64_vec(Tag::StripOffsets)?;
        let counts = decoder.get_tag_u64_vec(Tag::StripByteCounts)?;
        if offsets.len() != counts.len() {
            bail!("TIFF with {} strip offsets and {} counts", offsets.len(), counts.len());
        }
        let per_plane = height.div_ceil(rows_per_strip) as usize;
        Ok(Self { bytes, offsets, counts, rows_per_strip, height, per_plane })
    }

    /// Strip `i`'s bytes in the file.
    fn data(&self, i: usize) -> Result<&'a [u8]> {
        let (start, length) = (usize::try_from(self.offsets[i])?, usize::try_from(self.counts[i])?);
        let data = start.checked_add(length).and_then(|end| self.bytes.get(start..end));
        data.ok_or_else(|| anyhow!("a strip past the end of the file"))
    }

    /// The rows strip `i` holds (the last strip of a plane may hold fewer).
    fn rows(&self, i: usize) -> usize {
        let first = (i % self.per_plane) as u32 * self.rows_per_strip;
        self.rows_per_strip.min(self.height.saturating_sub(first)) as usize
    }
}

/// An LZMA-compressed TIFF as the same file uncompressed: each strip decompressed (to the
/// bytes its rows hold, never more) and appended, the directory's compression set to none
/// and its strip offsets and counts pointed at the new data; every layout, mode and
/// predictor then decodes as any other TIFF. `None` for a file that is not LZMA-compressed.
pub fn without_lzma(bytes: &[u8], check_size: impl Fn((u32, u32)) -> Result<()>) -> Option<Result<Vec<u8>>> {
    let mut decoder = Decoder::new(Cursor::new(bytes)).ok()?;
    if !matches!(decoder.find_tag_unsigned::<u16>(Tag::Compression), Ok(Some(LZMA))) {
        return None;
    }
    Some(decompress_lzma(bytes, decoder, check_size))
}

fn decompress_lzma(
    bytes: &[u8],
    mut decoder: Decoder<Cursor<&[u8]>>,
    check_size: impl Fn((u32, u32)) -> Result<()>,
) -> Result<Vec<u8>> {
    let (width, height) = decoder.dimensions()?;
    check_size((width, height))?;
    let layout = Strips::read(bytes, &mut decoder, height, "LZMA")?;
    let bits: u64 = decoder
        .find_tag_unsigned_vec::<u16>(Tag::BitsPerSample)?
        .unwrap_or_else(|| vec![1])
        .iter()
        .map(|&b| u64::from(b))
        .sum();
    let samples = u64::from(tag_or(&mut decoder, Tag::SamplesPerPixel, 1)?.max(1));
    let planar = tag_or(&mut decoder, Tag::PlanarConfiguration, 1)?;
    // Bits of one row of one strip: all samples (chunky), or one sample's (planar).
    let row_bits = if planar == 2 { u64::from(width) * (bits / samples) } else { u64::from(width) * bits };
    let row_bytes = usize::try_from(row_bits.div_ceil(8))?;
    let strips = if planar == 2 { layout.per_plane * samples as usize } else { layout.per_plane };
    if layout.offsets.len() != strips {
        bail!("TIFF with {} strips, {strips} needed", layout.offsets.len());
    }
    // What all strips inflate to, bounded before anything is decompressed: no more than
    // MAX_SAMPLE_BYTES per pixel, whatever the tags say.
    let total = row_bytes as u64 * u64::from(height) * if planar == 2 { samples } else { 1 };
    if samples > 4 || total > u64::from(width) * u64::from(height) * MAX_SAMPLE_BYTES {
        bail!("LZMA TIFF of {samples} samples of {bits} bits in all per pixel is not supported");
    }
    let mut out = bytes.to_vec();
    let (mut new_offsets, mut new_counts) = (Vec::new(), Vec::new());
    for i in 0..strips {
        let strip = inflate_xz(layout.data(i)?, row_bytes * layout.rows(i))?;
        new_offsets.push(u32::try_from(out.len()).map_err(|_| anyhow!("an LZMA TIFF over 4 GiB uncompressed"))?);
        new_counts.push(strip.len() as u32);
        out.extend(strip);
    }
    rewrite_directory(&mut out, &new_offsets, &new_counts)?;
    Ok(out)
}

/// Appends a copy of the first directory to `file`, with compression 1 and LONG strip
/// offsets and counts holding the given values, and makes it the first: the entries' other
/// values stay where they are, whatever their types and sizes.
fn rewrite_directory(file: &mut Vec<u8>, offsets: &[u32], counts: &[u32]) -> Result<()> {
    let little = match file.get(..4) {
        Some(b"II*\0") => true,
        Some(b"MM\0*") => false,
        _ => bail!("BigTIFF with LZMA compression is not supported"),
    };
    let read = |file: &[u8], at: usize, n: usize| -> Result<u32> {
        let b = file.get(at..at + n).ok_or_else(|| anyhow!("a TIFF directory past the end of the file"))?;
        let value = |bytes: &mut dyn Iterator<Item = &u8>| bytes.fold(0u32, |v, &x| v << 8 | u32::from(x));
        Ok(if little { value(&mut b.iter().rev()) } else { value(&mut b.iter()) })
    };
    let u16_bytes = |v: u16| if little { v.to_le_bytes() } else { v.to_be_bytes() };
    let u32_bytes = |v: u32| if little { v.to_le_bytes() } else { v.to_be_bytes() };
    let directory = read(file, 4, 4)? as usize;
    let count = read(file, directory, 2)? as usize;
    let mut entries: Vec<[u8; 12]> = (0..count)
        .map(|i| {
            Ok(file
                .get(directory + 2 + 12 * i..directory + 14 + 12 * i)
                .ok_or_else(|| anyhow!("a TIFF directory past the end of the file"))?
                .try_into()?)
        })
        .collect::<Result<_>>()?;
    let long_values = |file: &mut Vec<u8>, values: &[u32]| -> Result<[u8; 4]> {
        if values.len() == 1 {
            return Ok(u32_bytes(values[0]));
        }
        file.resize(file.len().next_multiple_of(2), 0);
        let at = u32::try_from(file.len())?;
        file.extend(values.iter().flat_map(|&v| u32_bytes(v)));
        Ok(u32_bytes(at))
    };
    for entry in &mut entries {
        let tag =
            if little { u16::from_le_bytes([entry[0], entry[1]]) } else { u16::from_be_bytes([entry[0], entry[1]]) };
        let (kind, values): (u16, [u8; 4]) = match tag {
            259 => (3, [u16_bytes(1)[0], u16_bytes(1)[1], 0, 0]),
            273 => (4, long_values(file, offsets)?),
            279 => (4, long_values(file, counts)?),
            _ => continue,
        };
        let n = if tag == 259 { 1 } else { offsets.len() as u32 };
        entry[2..4].copy_from_slice(&u16_bytes(kind));
        entry[4..8].copy_from_slice(&u32_bytes(n));
        entry[8..12].copy_from_slice(&values);
    }
    file.resize(file.len().next_multiple_of(2), 0);
    let at = u32::try_from(file.len())?;
    file.extend(u16_bytes(count as u16));
    file.extend(entries.iter().flatten());
    file.extend([0; 4]);
    file[4..8].copy_from_slice(&u32_bytes(at));
    Ok(())
}

/// One strip of 1-D Group 3 fax: `rows` lines of `width` pixels, white 255 and black 0 as
/// the photometric interpretation says (0: a 0 bit is white; fax white runs are 0 bits).
fn fax_strip(data: &[u8], width: u32, rows: usize, photometric: u32) -> Result<Vec<u8>> {
    let width = u16::try_from(width).map_err(|_| anyhow!("a fax line wider than 65,535 pixels"))?;
    let (white, black) = if photometric == 0 { (255u8, 0u8) } else { (0, 255) };
    let mut out = Vec::with_capacity(width as usize * rows);
    let mut lines = 0;
    // An end-of-line code after the last line: the decoder emits a line once it has read the
    // code that ends it, and a strip's last line has none.
    let ended = data.iter().copied().chain([0x00, 0x01]);
    let _ended = fax::decoder::decode_g3(ended, |transitions| {
        if lines < rows {
            let pels = fax::decoder::pels(transitions, width);
            out.extend(pels.map(|colour| if colour == fax::Color::White { white } else { black }));
            lines += 1;
        }
    });
    if lines < rows {
        bail!("a Group 3 fax strip decoded to {lines} of its {rows} lines");
    }
    Ok(out)
}

/// One strip of CCITT modified Huffman (TIFF compression 2): each line a white run, a black
/// run and so on (make-up codes of 64 and more before a terminating one), starting on a byte.
fn huffman_strip(data: &[u8], width: u32, rows: usize, photometric: u32) -> Result<Vec<u8>> {
    use fax::BitReader;
    let (white, black) = if photometric == 0 { (255u8, 0u8) } else { (0, 255) };
    // Padding: the code tables look 8 bits ahead even for a shorter last code.
    let padded = [data, &[0, 0]].concat();
    let mut reader = fax::slice_reader(&padded);
    let mut out = Vec::with_capacity(width as usize * rows);
    for line in 0..rows {
        let (mut x, mut is_white) = (0u32, true);
        while x < width {
            let mut run = 0u32;
            loop {
                let code = if is_white {
                    fax::maps::white::decode(&mut reader)
                } else {
                    fax::maps::black::decode(&mut reader)
                };
                let code = code.ok_or_else(|| anyhow!("CCITT Huffman line {line} of a strip is not a valid code"))?;
                run += u32::from(code);
                if code < 64 {
                    break;
                }
            }
            let run = run.min(width - x);
            out.extend(std::iter::repeat_n(if is_white { white } else { black }, run as usize));
            (x, is_white) = (x + run, !is_white);
        }
        let skip = reader.bits_to_byte_boundary();
        if skip > 0 {
            reader.consume(skip).map_err(|_| anyhow!("a CCITT Huffman strip ends inside line {line}"))?;
        }
    }
    Ok(out)
}

/// The first `expected` bytes an xz stream decompresses to (fewer is an error).
fn inflate_xz(data: &[u8], expected: usize) -> Result<Vec<u8>> {
    use std::io::Read;
    // As libtiff: the bytes the rows hold, whatever follows them in the stream (more data,
    // padding, a footer or check that is missing or damaged) unread.
    let mut out = vec![0; expected];
    xz2::read::XzDecoder::new(data)
        .read_exact(&mut out)
        .map_err(|e| anyhow!("an LZMA strip does not decompress to the {expected} bytes of its rows: {e}"))?;
    Ok(out)
}

/// Grey levels as an RGB image of `width`×`height` (each level in all three channels).
pub(crate) fn grey_to_rgb(grey: impl IntoIterator<Item = u8>, width: u32, height: u32) -> Result<RgbImage> {
    let rgb = grey.into_iter().flat_map(|v| [v; 3]).collect();
    RgbImage::from_raw(width, height, rgb).ok_or_else(|| anyhow!("TIFF pixel data does not fill {width}×{height}"))
}
