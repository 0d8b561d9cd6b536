//! Chart building blocks: a PNG canvas with an embedded font, line charts with a legend,
//! and heat-map tables.

use std::path::Path;
use std::sync::Once;

use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

pub const FONT: &str = "sans-serif";
static REGISTER_FONT: Once = Once::new();

fn register_font() {
    REGISTER_FONT.call_once(|| {
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
        let _ = plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold());
    });
}

pub type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// Renders `draw` on a white canvas and writes it as PNG.
pub fn render_png(path: &Path, (width, height): (u32, u32), draw: impl FnOnce(&Area) -> Result<()>) -> Result<()> {
    register_font();
    let mut buffer = vec![0u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
        draw(&root)?;
        root.present().map_err(|e| anyhow!("{e}"))?;
    }
    let image = image::RgbImage::from_raw(width, height, buffer).ok_or_else(|| anyhow!("plot buffer size"))?;
    let mut bytes = Vec::new();
    image.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)?;
    crate::fsutil::write_atomic(path, &bytes)
}

pub fn plot_error<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("{e}")
}

/// The axis range of `values` with some room around them, not below zero when none is
/// (a learning rate never is).
fn range_of(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) =
        values.filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(hi.abs().max(lo.abs()) * 1e-3).max(1e-12);
    let bottom = if lo >= 0.0 { (lo - pad).max(0.0) } else { lo - pad };
    (bottom, hi + pad)
}

pub struct Series<'a> {
    pub label: &'a str,
    pub color: RGBColor,
    pub points: Vec<(f64, f64)>,
}

pub fn line_chart(area: &Area, title: &str, x_desc: &str, y_desc: &str, series: &[Series]) -> Result<()> {
    let (x0, x1) = range_of(series.iter().flat_map(|s| s.points.iter().map(|p| p.0)));
    let (y0, y1) = range_of(series.iter().flat_map(|s| s.points.iter().map(|p| p.1)));
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(plot_error)?;
    // Whole-number x values (epochs) get whole-number ticks, one per value up to a dozen.
    let xs: Vec<f64> = series.iter().flat_map(|s| s.points.iter().map(|p| p.0)).collect();
    let whole = !xs.is_empty() && xs.iter().all(|x| x.fract() == 0.0);
    let ticks = if whole { ((x1 - x0).floor() as usize + 1).min(12) } else { 10 };
    let format_x = |x: &f64| match (whole, (x - x.round()).abs() < 1e-6) {
        (true, true) => format!("{x:.0}"),
        (true, false) => String::new(),
        (false, _) => format!("{x:.3}"),
    };
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_labels(ticks)
        .x_label_formatter(&format_x)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .draw()
        .map_err(plot_error)?;
    for s in series.iter().filter(|s| !s.points.is_empty()) {
        let color = s.color;
        chart
            .draw_series(LineSeries::new(s.points.clone(), color.stroke_width(2)))
            .map_err(plot_error)?
            .label(s.label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(plot_error)?;
    }
    draw_legend(&mut chart)
}

pub fn draw_legend<'a, 'x: 'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, BitMapBackend<'x>, CT>,
) -> Result<()> {
    chart
        .configure_series_labels()
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(plot_error)
}

/// A heat-map cell colour from white (0) to deep blue (1).
fn heat(value: f64) -> RGBColor {
    let v = value.clamp(0.0, 1.0);
    RGBColor((255.0 - 215.0 * v) as u8, (255.0 - 160.0 * v) as u8, (255.0 - 60.0 * v) as u8)
}

fn text_color(value: f64) -> RGBColor {
    if value > 0.6 {
        WHITE
    } else {
        BLACK
    }
}

/// A table of cells: `values[row][col]` with the text in `labels`, coloured by `shade`.
pub fn heat_table(
    area: &Area,
    title: &str,
    row_names: &[String],
    col_names: &[String],
    labels: &[Vec<String>],
    shade: &[Vec<f64>],
    axis_names: (&str, &str),
) -> Result<()> {
    let (width, height) = area.dim_in_pixel();
    let (left, top) = (170i32, 96i32);
    let cell_w = ((width as i32 - left - 20) / col_names.len().max(1) as i32).max(10);
    let cell_h = ((height as i32 - top - 60) / row_names.len().max(1) as i32).clamp(10, 90);
    let title_style = TextStyle::from((FONT, 22).into_font()).color(&BLACK);
    area.draw(&Text::new(title.to_string(), (20, 15), title_style)).map_err(plot_error)?;
    let style = TextStyle::from((FONT, 15).into_font());
    area.draw(&Text::new(axis_names.1.to_string(), (left, 50), style.clone())).map_err(plot_error)?;
    area.draw(&Text::new(axis_names.0.to_string(), (10, 50), style.clone())).map_err(plot_error)?;
    for (c, name) in col_names.iter().enumerate() {
        let x = left + c as i32 * cell_w + 4;
        area.draw(&Text::new(name.clone(), (x, top - 18), style.clone())).map_err(plot_error)?;
    }
    for (r, name) in row_names.iter().enumerate() {
        let y = top + r as i32 * cell_h;
        area.draw(&Text::new(name.clone(), (10, y + cell_h / 2 - 8), style.clone())).map_err(plot_error)?;
        for c in 0..col_names.len() {
            let x = left + c as i32 * cell_w;
            let v = shade[r][c];
            area.draw(&Rectangle::new([(x, y), (x + cell_w - 2, y + cell_h - 2)], heat(v).filled()))
                .map_err(plot_error)?;
            let color = text_color(v);
            let cell_style = TextStyle::from((FONT, 16).into_font()).color(&color);
            area.draw(&Text::new(labels[r][c].clone(), (x + 8, y + cell_h / 2 - 9), cell_style)).map_err(plot_error)?;
        }
    }
    Ok(())
}
