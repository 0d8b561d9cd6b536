//! Contact sheets of wrong predictions (as fastai's top-losses view): thumbnails in a
//! grid, each captioned with the true class, the predicted class and the confidence.
//! Captions use an 8×8 bitmap font, so no font files are needed.

use std::path::Path;

use anyhow::{Context, Result};
use font8x8::{UnicodeFonts, BASIC_FONTS};
use image::{Rgb, RgbImage};

const THUMB: u32 = 144;
const GLYPH: u32 = 8;
const CAPTION_LINES: u32 = 3;
const PAD: u32 = 6;
const COLUMNS: u32 = 6;
const TITLE_HEIGHT: u32 = 28;

pub struct SheetEntry {
    /// None when the image could not be read again; a grey tile says so.
    pub image: Option<RgbImage>,
    pub lines: Vec<String>,
}

/// Draws `text` with its top-left corner at (x, y), clipped to the image.
pub fn draw_text(canvas: &mut RgbImage, x: u32, y: u32, text: &str, color: Rgb<u8>, scale: u32) {
    for (i, ch) in text.chars().enumerate() {
        let glyph = BASIC_FONTS.get(ch).or_else(|| BASIC_FONTS.get('?')).expect("ascii glyphs");
        let x0 = x + i as u32 * GLYPH * scale;
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..GLYPH {
                if bits & (1 << col) == 0 {
                    continue;
                }
                for dy in 0..scale {
                    for dx in 0..scale {
                        let (px, py) = (x0 + col * scale + dx, y + row as u32 * scale + dy);
                        if px < canvas.width() && py < canvas.height() {
                            canvas.put_pixel(px, py, color);
                        }
                    }
                }
            }
        }
    }
}

fn fit_text(text: &str, width: u32) -> String {
    let max = (width / GLYPH) as usize;
    if text.chars().count() <= max {
        text.to_string()
    } else {
        text.chars().take(max.saturating_sub(1)).chain(std::iter::once('~')).collect()
    }
}

pub fn render(title: &str, entries: &[SheetEntry]) -> RgbImage {
    let columns = COLUMNS.min(entries.len().max(1) as u32);
    let rows = (entries.len() as u32).div_ceil(columns).max(1);
    let cell_w = THUMB + PAD;
    let cell_h = THUMB + CAPTION_LINES * (GLYPH + 3) + 2 * PAD;
    let width = (columns * cell_w + PAD).max(title.len() as u32 * GLYPH * 2 + 2 * PAD);
    let height = TITLE_HEIGHT + rows * cell_h + PAD;
    let mut canvas = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    draw_text(&mut canvas, PAD, PAD, title, Rgb([0, 0, 0]), 2);
    if entries.is_empty() {
        draw_text(&mut canvas, PAD, TITLE_HEIGHT + PAD, "no wrong predictions", Rgb([0, 110, 0]), 1);
        return canvas;
    }
    for (index, entry) in entries.iter().enumerate() {
        let (col, row) = (index as u32 % columns, index as u32 / columns);
        let (x, y) = (PAD + col * cell_w, TITLE_HEIGHT + row * cell_h);
        match &entry.image {
            Some(image) => {
                let thumb = image::imageops::resize(image, THUMB, THUMB, image::imageops::FilterType::Triangle);
                image::imageops::replace(&mut canvas, &thumb, x as i64, y as i64);
            }
            None => {
                let grey = RgbImage::from_pixel(THUMB, THUMB, Rgb([200, 200, 200]));
                image::imageops::replace(&mut canvas, &grey, x as i64, y as i64);
                draw_text(&mut canvas, x + 8, y + THUMB / 2, "unreadable", Rgb([80, 80, 80]), 1);
            }
        }
        for (line_index, line) in entry.lines.iter().take(CAPTION_LINES as usize).enumerate() {
            let color = if line_index == 1 { Rgb([190, 0, 0]) } else { Rgb([0, 0, 0]) };
            let ly = y + THUMB + 4 + line_index as u32 * (GLYPH + 3);
            draw_text(&mut canvas, x, ly, &fit_text(line, THUMB), color, 1);
        }
    }
    canvas
}

/// Renders and writes a PNG atomically.
pub fn write(path: &Path, title: &str, entries: &[SheetEntry]) -> Result<()> {
    let canvas = render(title, entries);
    let mut bytes = Vec::new();
    canvas
        .write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
        .context("cannot encode the contact sheet")?;
    crate::fsutil::write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_drawn_in_the_given_colour_and_clipped() {
        let mut canvas = RgbImage::from_pixel(20, 10, Rgb([255, 255, 255]));
        draw_text(&mut canvas, 0, 0, "AAAA", Rgb([255, 0, 0]), 1);
        let red = canvas.pixels().filter(|p| **p == Rgb([255, 0, 0])).count();
        assert!(red > 10, "{red}");
        assert!(canvas.pixels().all(|p| *p == Rgb([255, 0, 0]) || *p == Rgb([255, 255, 255])));
    }

    #[test]
    fn sheet_has_one_tile_per_entry() {
        let entry =
            || SheetEntry { image: Some(RgbImage::from_pixel(10, 10, Rgb([0, 0, 255]))), lines: vec!["a".into()] };
        let sheet = render("title", &(0..8).map(|_| entry()).collect::<Vec<_>>());
        assert_eq!(sheet.width(), PAD + COLUMNS * (THUMB + PAD));
        let blue = sheet.pixels().filter(|p| **p == Rgb([0, 0, 255])).count() as u32;
        assert_eq!(blue, 8 * THUMB * THUMB);
    }
}
