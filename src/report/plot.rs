//! PNG charts drawn pixel by pixel with the `image` crate and the built-in bitmap font, so a
//! report renders the same on every machine (no system fonts, no plotting library). One
//! renderer (canvas, axes, legend, line and bar charts) in one file, since the charts share its
//! layout code.

use std::path::Path;

use image::{Rgb, RgbImage};

use super::font::{self, CELL_W};
use crate::error::{Error, Result};

/// Series colours (a colour-blind-friendly qualitative palette); series cycle through them.
pub const PALETTE: [[u8; 3]; 10] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [188, 189, 34],
    [23, 190, 207],
];

const WHITE: [u8; 3] = [255, 255, 255];
const INK: [u8; 3] = [30, 30, 30];
const AXIS: [u8; 3] = [60, 60, 60];
const GRID: [u8; 3] = [225, 225, 225];
/// Text scale for titles, legends and axis labels (5x7 glyphs doubled: readable at 100%).
const BIG: u32 = 2;
/// Text scale for dense labels.
const SMALL: u32 = 1;

/// An RGB image with the few drawing primitives the charts need; all drawing clips.
pub struct Canvas {
    /// The pixels.
    pub img: RgbImage,
}

impl Canvas {
    /// A white canvas of `w` x `h` pixels.
    pub fn new(w: u32, h: u32) -> Self {
        Canvas {
            img: RgbImage::from_pixel(w.max(1), h.max(1), Rgb(WHITE)),
        }
    }

    /// Sets one pixel; coordinates outside the image are ignored.
    pub fn put(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as u32) < self.img.width() && (y as u32) < self.img.height() {
            self.img.put_pixel(x as u32, y as u32, Rgb(c));
        }
    }

    /// Fills the rectangle with corners (x0, y0) inclusive and (x1, y1) exclusive.
    pub fn fill_rect(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, c: [u8; 3]) {
        let (w, h) = (self.img.width() as i64, self.img.height() as i64);
        for y in y0.max(0)..y1.min(h) {
            for x in x0.max(0)..x1.min(w) {
                self.img.put_pixel(x as u32, y as u32, Rgb(c));
            }
        }
    }

    /// Draws a line of the given thickness by stamping squares along it (no anti-aliasing:
    /// crisp lines compress well and stay legible when scaled).
    pub fn line(&mut self, x0: f64, y0: f64, x1: f64, y1: f64, thick: u32, c: [u8; 3]) {
        let steps = (x1 - x0).abs().max((y1 - y0).abs()).ceil().max(1.0) as i64;
        let half = thick as i64 / 2;
        for i in 0..=steps {
            let t = i as f64 / steps as f64;
            let x = (x0 + (x1 - x0) * t).round() as i64;
            let y = (y0 + (y1 - y0) * t).round() as i64;
            self.fill_rect(
                x - half,
                y - half,
                x - half + thick as i64,
                y - half + thick as i64,
                c,
            );
        }
    }

    /// Draws `text` with its top-left corner at (x, y).
    pub fn text(&mut self, x: i64, y: i64, text: &str, scale: u32, c: [u8; 3]) {
        let s = scale as i64;
        for (i, ch) in text.chars().enumerate() {
            let cx = x + i as i64 * CELL_W as i64 * s;
            for row in 0..9 {
                for col in 0..5 {
                    if font::ink(ch, col, row) {
                        let px = cx + col as i64 * s;
                        let py = y + row as i64 * s;
                        self.fill_rect(px, py, px + s, py + s, c);
                    }
                }
            }
        }
    }

    /// Draws `text` rotated a quarter turn anticlockwise (reading upwards), with the start of
    /// the text at the bottom: (x, y) is the bottom-left corner of the rotated box.
    pub fn text_up(&mut self, x: i64, y: i64, text: &str, scale: u32, c: [u8; 3]) {
        let s = scale as i64;
        for (i, ch) in text.chars().enumerate() {
            let along = i as i64 * CELL_W as i64 * s;
            for row in 0..9 {
                for col in 0..5 {
                    if font::ink(ch, col, row) {
                        let px = x + row as i64 * s;
                        let py = y - along - (col as i64 + 1) * s;
                        self.fill_rect(px, py, px + s, py + s, c);
                    }
                }
            }
        }
    }

    /// Draws `text` centred horizontally on `cx` with its top at `y`.
    pub fn text_centered(&mut self, cx: i64, y: i64, text: &str, scale: u32, c: [u8; 3]) {
        let w = font::text_width(text, scale) as i64;
        self.text(cx - w / 2, y, text, scale, c);
    }

    /// Encodes the canvas as PNG and writes it atomically to `path`.
    pub fn save_png(&self, path: &Path) -> Result<()> {
        let mut bytes = Vec::new();
        let enc = image::codecs::png::PngEncoder::new(&mut bytes);
        self.img
            .write_with_encoder(enc)
            .map_err(|e| Error::Format {
                path: path.to_path_buf(),
                msg: format!("cannot encode PNG: {e}"),
            })?;
        super::write_atomic(path, &bytes)
    }
}

/// Round tick positions covering [lo, hi] with about `target` steps of 1, 2 or 5 x 10^k.
pub fn nice_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    let (mut lo, mut hi) = if lo.is_finite() && hi.is_finite() {
        (lo.min(hi), lo.max(hi))
    } else {
        (0.0, 1.0)
    };
    if hi - lo <= f64::EPSILON * hi.abs().max(1.0) {
        // A flat series still needs a visible axis: widen around the value.
        let pad = (lo.abs() * 0.1).max(1.0);
        lo -= pad;
        hi += pad;
    }
    let raw = (hi - lo) / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let step = mag
        * if norm <= 1.0 {
            1.0
        } else if norm <= 2.0 {
            2.0
        } else if norm <= 5.0 {
            5.0
        } else {
            10.0
        };
    // The tolerance keeps a bound that is a multiple of the step from gaining an extra tick.
    let first = (lo / step + 1e-9).floor() as i64;
    let last = (hi / step - 1e-9).ceil() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

/// Formats a tick value with just enough decimals for the tick step.
pub fn format_tick(v: f64, step: f64) -> String {
    let v = if v.abs() < step.abs() * 1e-6 { 0.0 } else { v };
    if v.abs() >= 1e7 || (v != 0.0 && v.abs() < 1e-4) {
        return format!("{v:.1e}");
    }
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10()).ceil().clamp(0.0, 6.0) as usize
    };
    format!("{v:.decimals$}")
}

/// Where the plot area sits inside the image.
struct Frame {
    left: i64,
    top: i64,
    right: i64,
    bottom: i64,
}

impl Frame {
    fn width(&self) -> f64 {
        (self.right - self.left) as f64
    }
    fn height(&self) -> f64 {
        (self.bottom - self.top) as f64
    }
}

/// Lays out the legend entries in rows of at most `max_w` pixels; returns each entry's
/// offset and the total height.
fn legend_layout(names: &[&str], max_w: i64) -> (Vec<(i64, i64)>, i64) {
    let box_w = 14i64;
    let row_h = font::text_height(BIG) as i64 + 8;
    let mut pos = Vec::with_capacity(names.len());
    let (mut x, mut y) = (0i64, 0i64);
    for name in names {
        let w = box_w + 6 + font::text_width(name, BIG) as i64 + 24;
        if x > 0 && x + w > max_w {
            x = 0;
            y += row_h;
        }
        pos.push((x, y));
        x += w;
    }
    let height = if names.is_empty() { 0 } else { y + row_h };
    (pos, height)
}

/// Draws the legend rows centred under the title, starting at `top`.
fn draw_legend(cv: &mut Canvas, names: &[&str], top: i64, width: i64) {
    let (pos, _) = legend_layout(names, width - 40);
    // Centre each row: find its extent first.
    let mut rows: Vec<(i64, i64)> = Vec::new(); // (y, row width)
    for (i, name) in names.iter().enumerate() {
        let w = 14 + 6 + font::text_width(name, BIG) as i64;
        let (x, y) = pos[i];
        match rows.iter_mut().find(|r| r.0 == y) {
            Some(r) => r.1 = r.1.max(x + w),
            None => rows.push((y, x + w)),
        }
    }
    for (i, name) in names.iter().enumerate() {
        let (x, y) = pos[i];
        let row_w = rows.iter().find(|r| r.0 == y).map_or(0, |r| r.1);
        let x0 = (width - row_w) / 2 + x;
        let y0 = top + y;
        let c = PALETTE[i % PALETTE.len()];
        cv.fill_rect(x0, y0 + 1, x0 + 14, y0 + 13, c);
        cv.text(x0 + 20, y0, name, BIG, INK);
    }
}

/// Draws horizontal grid lines, y tick labels and the y axis for `ticks` inside `f`.
fn draw_y_axis(cv: &mut Canvas, f: &Frame, ticks: &[f64]) -> impl Fn(f64) -> f64 + use<> {
    let (lo, hi) = (ticks[0], *ticks.last().unwrap_or(&1.0));
    let step = if ticks.len() > 1 {
        ticks[1] - ticks[0]
    } else {
        1.0
    };
    let (top, h) = (f.top as f64, f.height());
    let map = move |v: f64| top + h - (v - lo) / (hi - lo) * h;
    for &t in ticks {
        let y = map(t).round() as i64;
        cv.fill_rect(f.left + 1, y, f.right, y + 1, GRID);
        cv.fill_rect(f.left - 5, y, f.left, y + 1, AXIS);
        let label = format_tick(t, step);
        let w = font::text_width(&label, BIG) as i64;
        cv.text(f.left - 9 - w, y - 7, &label, BIG, INK);
    }
    cv.fill_rect(f.left, f.top, f.left + 1, f.bottom + 1, AXIS);
    map
}

/// Widest y tick label of `ticks` in pixels.
fn tick_label_width(ticks: &[f64]) -> i64 {
    let step = if ticks.len() > 1 {
        ticks[1] - ticks[0]
    } else {
        1.0
    };
    ticks
        .iter()
        .map(|&t| font::text_width(&format_tick(t, step), BIG) as i64)
        .max()
        .unwrap_or(0)
}

/// Cuts `s` to at most `n` characters, marking the cut with '~' (the font has no ellipsis).
fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('~');
        t
    }
}

/// The text written above a bar: whole numbers as integers, others with two decimals.
fn value_label(v: f64) -> String {
    format_tick(v, if v.fract() == 0.0 { 1.0 } else { 0.01 })
}

/// Writes a grouped bar chart: one group per label, one bar per series, a legend and a y
/// axis with round ticks. Non-finite values draw no bar.
pub fn bar_chart(
    path: &Path,
    title: &str,
    labels: &[String],
    series: &[(&str, Vec<f64>)],
) -> Result<()> {
    if labels.is_empty() || series.is_empty() {
        return Err(Error::Config(format!(
            "bar chart '{title}' needs at least one label and one series"
        )));
    }
    for (name, v) in series {
        if v.len() != labels.len() {
            return Err(Error::Config(format!(
                "bar chart '{title}': series '{name}' has {} values for {} labels",
                v.len(),
                labels.len()
            )));
        }
    }
    let (n, s) = (labels.len() as i64, series.len() as i64);
    let finite = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .filter(|v| v.is_finite());
    let (vmin, vmax) = finite.fold((0.0f64, 0.0f64), |(a, b), v| (a.min(v), b.max(v)));
    let ticks = nice_ticks(vmin, if vmax == vmin { vmin + 1.0 } else { vmax }, 6);

    // Counts are labelled on their bars when there are few bars: make bars wide enough.
    let value_labels = n * s <= 40;
    let label_w = if value_labels {
        series
            .iter()
            .flat_map(|(_, v)| v.iter())
            .map(|&v| font::text_width(&value_label(v), SMALL) as i64 + 6)
            .max()
            .unwrap_or(0)
    } else {
        0
    };
    let plot_w = (n * (s * 5 + 5)).max(n * s * label_w * 5 / 4).max(600);
    let group_w = plot_w as f64 / n as f64;
    // Label placement: horizontal when every label fits its group, else rotated.
    let max_chars = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    let horizontal_scale = [BIG, SMALL]
        .into_iter()
        .find(|&sc| (max_chars as u32 * CELL_W * sc) as f64 <= group_w - 4.0);
    let shown: Vec<String> = labels.iter().map(|l| truncate(l, 16)).collect();
    let label_h = match horizontal_scale {
        Some(sc) => font::text_height(sc) as i64 + 4,
        None => {
            shown
                .iter()
                .map(|l| font::text_width(l, SMALL) as i64)
                .max()
                .unwrap_or(0)
                + 4
        }
    };
    // Rotated labels are 8 px tall across; thin them out so they never overlap.
    let every = if horizontal_scale.is_none() {
        (9.0 / group_w).ceil().max(1.0) as usize
    } else {
        1
    };

    let names: Vec<&str> = series.iter().map(|(name, _)| *name).collect();
    let left = tick_label_width(&ticks) + 20;
    let width = (left + plot_w + 30).max(font::text_width(title, BIG) as i64 + 40);
    let title_h = font::text_height(BIG) as i64 + 20;
    let (_, legend_h) = legend_layout(&names, width - 40);
    let top = title_h + legend_h + 16;
    let plot_h = 360i64;
    let height = top + plot_h + 12 + label_h + 12;
    let f = Frame {
        left,
        top,
        right: left + plot_w,
        bottom: top + plot_h,
    };

    let mut cv = Canvas::new(width as u32, height as u32);
    cv.text_centered(width / 2, 10, title, BIG, INK);
    draw_legend(&mut cv, &names, title_h, width);
    let map = draw_y_axis(&mut cv, &f, &ticks);
    let zero = map(0.0).round() as i64;

    let bar_w = group_w * 0.8 / s as f64;
    for g in 0..n {
        let gx = f.left as f64 + g as f64 * group_w + group_w * 0.1;
        for (k, (_, vals)) in series.iter().enumerate() {
            let v = vals[g as usize];
            if !v.is_finite() {
                continue;
            }
            let x0 = (gx + k as f64 * bar_w).round() as i64;
            let x1 = ((gx + (k + 1) as f64 * bar_w).round() as i64 - 1).max(x0 + 1);
            let y = map(v).round() as i64;
            let (y0, y1) = if y <= zero {
                (y, zero)
            } else {
                (zero + 1, y + 1)
            };
            cv.fill_rect(x0, y0, x1, y1.max(y0 + 1), PALETTE[k % PALETTE.len()]);
            if value_labels {
                let label = value_label(v);
                if font::text_width(&label, SMALL) as f64 <= bar_w + 1.0 {
                    let ly = if v >= 0.0 { y0 - 10 } else { y1 + 3 };
                    cv.text_centered((x0 + x1) / 2, ly, &label, SMALL, INK);
                }
            }
        }
        if (g as usize).is_multiple_of(every) {
            let cx = (f.left as f64 + (g as f64 + 0.5) * group_w).round() as i64;
            let label = &shown[g as usize];
            match horizontal_scale {
                Some(sc) => cv.text_centered(cx, f.bottom + 8, &labels[g as usize], sc, INK),
                None => {
                    let w = font::text_width(label, SMALL) as i64;
                    cv.text_up(cx - 3, f.bottom + 8 + w, label, SMALL, INK);
                }
            }
        }
    }
    cv.fill_rect(f.left, zero, f.right, zero + 1, AXIS);
    cv.save_png(path)
}

/// Writes a line chart: one polyline per series with markers where points are sparse, axes
/// with round ticks, axis labels and a legend. Non-finite points break the line.
pub fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(&str, Vec<(f64, f64)>)],
) -> Result<()> {
    let pts = || {
        series
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .filter(|(x, y)| x.is_finite() && y.is_finite())
    };
    let (mut xmin, mut xmax, mut ymin, mut ymax) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in pts() {
        xmin = xmin.min(x);
        xmax = xmax.max(x);
        ymin = ymin.min(y);
        ymax = ymax.max(y);
    }
    if xmin > xmax {
        (xmin, xmax, ymin, ymax) = (0.0, 1.0, 0.0, 1.0);
    }
    let xt = nice_ticks(xmin, xmax, 8);
    let yt = nice_ticks(ymin, ymax, 6);

    let names: Vec<&str> = series.iter().map(|(name, _)| *name).collect();
    let width = 820i64;
    let ylab_w = if y_label.is_empty() {
        0
    } else {
        font::text_height(BIG) as i64 + 12
    };
    let left = 14 + ylab_w + tick_label_width(&yt) + 12;
    let title_h = font::text_height(BIG) as i64 + 20;
    let (_, legend_h) = legend_layout(&names, width - 40);
    let top = title_h + legend_h + 16;
    let plot_h = 380i64;
    let xlab_h = if x_label.is_empty() {
        0
    } else {
        font::text_height(BIG) as i64 + 10
    };
    let height = top + plot_h + 10 + font::text_height(BIG) as i64 + 8 + xlab_h + 10;
    let f = Frame {
        left,
        top,
        right: width - 30,
        bottom: top + plot_h,
    };

    let mut cv = Canvas::new(width as u32, height as u32);
    cv.text_centered(width / 2, 10, title, BIG, INK);
    draw_legend(&mut cv, &names, title_h, width);

    // Vertical grid and x ticks first so the y axis and data draw over them.
    let (x0, x1) = (xt[0], *xt.last().unwrap_or(&1.0));
    let xstep = if xt.len() > 1 { xt[1] - xt[0] } else { 1.0 };
    let mapx = |v: f64| f.left as f64 + (v - x0) / (x1 - x0) * f.width();
    let mut last_label_end = i64::MIN;
    for &t in &xt {
        let x = mapx(t).round() as i64;
        cv.fill_rect(x, f.top, x + 1, f.bottom, GRID);
        cv.fill_rect(x, f.bottom, x + 1, f.bottom + 5, AXIS);
        let label = format_tick(t, xstep);
        let w = font::text_width(&label, BIG) as i64;
        if x - w / 2 > last_label_end + 6 {
            cv.text(x - w / 2, f.bottom + 10, &label, BIG, INK);
            last_label_end = x - w / 2 + w;
        }
    }
    let mapy = draw_y_axis(&mut cv, &f, &yt);
    cv.fill_rect(f.left, f.bottom, f.right + 1, f.bottom + 1, AXIS);

    for (k, (_, points)) in series.iter().enumerate() {
        let c = PALETTE[k % PALETTE.len()];
        let markers = points.len() <= 60;
        let mut prev: Option<(f64, f64)> = None;
        for &(x, y) in points {
            if !(x.is_finite() && y.is_finite()) {
                prev = None;
                continue;
            }
            let p = (mapx(x), mapy(y));
            if let Some(q) = prev {
                cv.line(q.0, q.1, p.0, p.1, 2, c);
            }
            if markers {
                let (px, py) = (p.0.round() as i64, p.1.round() as i64);
                cv.fill_rect(px - 2, py - 2, px + 3, py + 3, c);
            }
            prev = Some(p);
        }
    }

    if !x_label.is_empty() {
        let y = f.bottom + 10 + font::text_height(BIG) as i64 + 10;
        cv.text_centered((f.left + f.right) / 2, y, x_label, BIG, INK);
    }
    if !y_label.is_empty() {
        let w = font::text_width(y_label, BIG) as i64;
        cv.text_up(14, (f.top + f.bottom) / 2 + w / 2, y_label, BIG, INK);
    }
    cv.save_png(path)
}
