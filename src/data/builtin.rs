//! The built-in data set: 10 classes of RGB images generated procedurally from a seed, so
//! `train` works with no files and tests have realistic, reproducible data.
//!
//! A class is a shape or a texture, never a colour: every image draws its own colours,
//! position, size, rotation, aspect, a gradient background with clutter (lines and blobs
//! behind, sometimes one line in front) and pixel noise. Shapes are rendered from signed
//! distance functions with one-pixel anti-aliasing, at any side length.
//!
//! Each image has its own random stream keyed by (seed, split, index), so the set is the same
//! whatever the thread count.

use std::f32::consts::{PI, TAU};

use rand::{Rng, RngExt};

use super::Dataset;
use crate::random::Streams;

/// Native side of the built-in images.
pub const SIDE: usize = 32;
/// Training images per class.
pub const TRAIN_PER_CLASS: usize = 2000;
/// Test images per class.
pub const TEST_PER_CLASS: usize = 500;
/// Number of classes.
pub const CLASSES: usize = 10;
/// Class names in label order: seven shapes, then three textures on an elliptical patch.
pub const CLASS_NAMES: [&str; CLASSES] = [
    "disk", "square", "triangle", "ring", "cross", "star", "crescent", "stripes", "checker", "dots",
];

/// Generates the training and test splits (labels cycle 0..10, so every prefix is nearly
/// balanced).
pub fn generate(
    seed: u64,
    side: usize,
    train_per_class: usize,
    test_per_class: usize,
) -> (Dataset, Dataset) {
    (
        generate_split(seed, side, train_per_class * CLASSES, 0),
        generate_split(seed, side, test_per_class * CLASSES, 1),
    )
}

/// Generates `n` images of split `split` (0 train, 1 test) on all cores.
pub fn generate_split(seed: u64, side: usize, n: usize, split: u64) -> Dataset {
    let per = 3 * side * side;
    let mut images = vec![0u8; n * per];
    let labels: Vec<u32> = (0..n).map(|i| (i % CLASSES) as u32).collect();
    let threads = std::thread::available_parallelism()
        .map(|t| t.get())
        .unwrap_or(1)
        .clamp(1, n.max(1));
    let chunk = n.div_ceil(threads).max(1);
    std::thread::scope(|s| {
        for (t, dst) in images.chunks_mut(chunk * per).enumerate() {
            s.spawn(move || {
                for (j, img) in dst.chunks_exact_mut(per).enumerate() {
                    let i = t * chunk + j;
                    let mut rng = Streams(seed).builtin_image(split, i as u64);
                    render((i % CLASSES) as u32, side, &mut rng, img);
                }
            });
        }
    });
    Dataset {
        images,
        labels,
        shape: [3, side, side],
        classes: CLASSES,
        class_names: CLASS_NAMES.iter().map(|s| s.to_string()).collect(),
    }
}

type Rgb = [f32; 3];

/// A random colour from HSV with moderate-to-full saturation and value.
fn random_colour<R: Rng>(rng: &mut R) -> Rgb {
    let h = rng.random::<f32>() * 6.0;
    let s = 0.15 + 0.85 * rng.random::<f32>();
    let v = 0.15 + 0.85 * rng.random::<f32>();
    let c = v * s;
    let x = c * (1.0 - ((h % 2.0) - 1.0).abs());
    let (r, g, b) = match h as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = v - c;
    [r + m, g + m, b + m]
}

fn dist(a: Rgb, b: Rgb) -> f32 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}

/// A colour at least `min` away from `other` (best of a few tries), so the object stays
/// visible without making colour informative about the class.
fn contrasting<R: Rng>(rng: &mut R, other: Rgb, min: f32) -> Rgb {
    let mut best = random_colour(rng);
    for _ in 0..12 {
        if dist(best, other) >= min {
            break;
        }
        let c = random_colour(rng);
        if dist(c, other) > dist(best, other) {
            best = c;
        }
    }
    best
}

fn mix(a: Rgb, b: Rgb, t: f32) -> Rgb {
    [
        a[0] + (b[0] - a[0]) * t,
        a[1] + (b[1] - a[1]) * t,
        a[2] + (b[2] - a[2]) * t,
    ]
}

/// Signed distance to an axis-aligned box of half-sizes (bx, by).
fn sd_box(x: f32, y: f32, bx: f32, by: f32) -> f32 {
    let qx = x.abs() - bx;
    let qy = y.abs() - by;
    let outside = (qx.max(0.0).powi(2) + qy.max(0.0).powi(2)).sqrt();
    outside + qx.max(qy).min(0.0)
}

/// Signed distance (in units of the object radius) of the class shape's outline; textures use
/// an ellipse (the aspect jitter turns the unit circle into one).
fn shape_sdf(class: u32, x: f32, y: f32) -> f32 {
    let r = (x * x + y * y).sqrt();
    match class {
        0 => r - 1.0,
        1 => sd_box(x, y, 0.8, 0.8),
        2 => {
            // Equilateral triangle, circumradius 1.2: the farthest of three edge lines.
            let mut d = f32::MIN;
            for k in 0..3 {
                let a = PI / 2.0 + PI + k as f32 * TAU / 3.0;
                d = d.max(x * a.cos() + y * a.sin() - 0.6);
            }
            d
        }
        3 => (r - 0.74).abs() - 0.24,
        4 => sd_box(x, y, 1.0, 0.3).min(sd_box(x, y, 0.3, 1.0)),
        5 => {
            // Five-pointed star: radius varies linearly in angle between points and notches.
            let period = TAU / 5.0;
            let a = y.atan2(x).rem_euclid(period) / period - 0.5;
            let f = 0.48 + (1.15 - 0.48) * (2.0 * a.abs());
            (r - f) * 0.6
        }
        6 => (r - 1.0).max(-(((x - 0.5).powi(2) + y * y).sqrt() - 0.8)),
        _ => r - 1.0,
    }
}

/// Texture mix factor in [0, 1] (0 = first colour, 1 = second) at unit coordinates.
fn texture(class: u32, x: f32, y: f32) -> f32 {
    match class {
        7 => ((x * TAU / 0.5).sin() * 3.0 + 0.5).clamp(0.0, 1.0),
        8 => ((x * TAU / 0.62).sin() * (y * TAU / 0.62).sin() * 6.0 + 0.5).clamp(0.0, 1.0),
        9 => {
            let fx = (x / 0.46).rem_euclid(1.0) - 0.5;
            let fy = (y / 0.46).rem_euclid(1.0) - 0.5;
            (((0.2 - (fx * fx + fy * fy).sqrt()) * 8.0) + 0.5).clamp(0.0, 1.0)
        }
        _ => 0.0,
    }
}

/// One clutter item: a line segment or a blob, with a colour.
enum Clutter {
    Line {
        a: (f32, f32),
        b: (f32, f32),
        half_w: f32,
        c: Rgb,
    },
    Blob {
        p: (f32, f32),
        r: f32,
        c: Rgb,
    },
}

impl Clutter {
    fn random<R: Rng>(rng: &mut R, s: f32) -> Self {
        let pt = |rng: &mut R| (rng.random::<f32>() * s, rng.random::<f32>() * s);
        if rng.random::<f32>() < 0.6 {
            let a = pt(rng);
            let len = s * (0.15 + 0.35 * rng.random::<f32>());
            let ang = rng.random::<f32>() * TAU;
            Clutter::Line {
                a,
                b: (a.0 + len * ang.cos(), a.1 + len * ang.sin()),
                half_w: s / 32.0 * (0.35 + 0.45 * rng.random::<f32>()),
                c: random_colour(rng),
            }
        } else {
            Clutter::Blob {
                p: pt(rng),
                r: s / 32.0 * (0.8 + 1.6 * rng.random::<f32>()),
                c: random_colour(rng),
            }
        }
    }

    /// Coverage of pixel centre (px, py) in [0, 1].
    fn coverage(&self, px: f32, py: f32) -> (f32, Rgb) {
        match *self {
            Clutter::Line { a, b, half_w, c } => {
                let (dx, dy) = (b.0 - a.0, b.1 - a.1);
                let t = (((px - a.0) * dx + (py - a.1) * dy) / (dx * dx + dy * dy).max(1e-6))
                    .clamp(0.0, 1.0);
                let d = ((px - a.0 - t * dx).powi(2) + (py - a.1 - t * dy).powi(2)).sqrt();
                ((half_w + 0.5 - d).clamp(0.0, 1.0), c)
            }
            Clutter::Blob { p, r, c } => {
                let d = ((px - p.0).powi(2) + (py - p.1).powi(2)).sqrt();
                ((r + 0.5 - d).clamp(0.0, 1.0), c)
            }
        }
    }
}

/// A small shape drawn behind the labelled object.
struct Distractor {
    class: u32,
    cx: f32,
    cy: f32,
    radius: f32,
    rot: f32,
    c: Rgb,
    c2: Rgb,
}

impl Distractor {
    fn paint(&self, col: Rgb, px: f32, py: f32) -> Rgb {
        let (dx, dy) = ((px - self.cx) / self.radius, (py - self.cy) / self.radius);
        if dx.abs() > 1.6 || dy.abs() > 1.6 {
            return col;
        }
        let (rs, rc) = self.rot.sin_cos();
        let (u, v) = (dx * rc + dy * rs, -dx * rs + dy * rc);
        let cov = (0.5 - shape_sdf(self.class, u, v) * self.radius).clamp(0.0, 1.0);
        if cov <= 0.0 {
            return col;
        }
        let fill = if self.class >= 7 {
            mix(self.c, self.c2, texture(self.class, u, v))
        } else {
            self.c
        };
        mix(col, fill, cov)
    }
}

/// Renders one image of `class` at `side` x `side` into `out` (CHW bytes).
pub fn render<R: Rng>(class: u32, side: usize, rng: &mut R, out: &mut [u8]) {
    let s = side as f32;
    // Background: a two-colour linear gradient in a random direction.
    let bg0 = random_colour(rng);
    let bg1 = mix(bg0, random_colour(rng), 0.3 + 0.7 * rng.random::<f32>());
    let gang = rng.random::<f32>() * TAU;
    let (gx, gy) = (gang.cos(), gang.sin());
    let bg_mid = mix(bg0, bg1, 0.5);

    let n_behind = rng.random_range(0..3usize);
    let behind: Vec<Clutter> = (0..n_behind).map(|_| Clutter::random(rng, s)).collect();
    let front: Option<Clutter> = (rng.random::<f32>() < 0.1).then(|| Clutter::random(rng, s));
    // A quarter of the images carry a small distractor shape of a random class (possibly
    // another class), at most a third of the object's smallest size: the label is the large
    // object, which a model must learn to pick out.
    let distractor = (rng.random::<f32>() < 0.25).then(|| Distractor {
        class: rng.random_range(0..CLASSES as u32),
        cx: rng.random::<f32>() * s,
        cy: rng.random::<f32>() * s,
        radius: s * (0.05 + 0.03 * rng.random::<f32>()),
        rot: rng.random::<f32>() * TAU,
        c: random_colour(rng),
        c2: random_colour(rng),
    });

    // The object: colours, placement, size, rotation, aspect.
    let fg = contrasting(rng, bg_mid, 0.55);
    let fg2 = contrasting(rng, fg, 0.4);
    let cx = s * (0.5 + 0.3 * (rng.random::<f32>() - 0.5));
    let cy = s * (0.5 + 0.3 * (rng.random::<f32>() - 0.5));
    let radius = s * (0.26 + 0.14 * rng.random::<f32>());
    let rot = rng.random::<f32>() * TAU;
    let (rc, rs) = (rot.cos(), rot.sin());
    let aspect = 0.85 + 0.3 * rng.random::<f32>();
    let shade = 0.25 * (rng.random::<f32>() - 0.5);
    let sigma = 0.01 + 0.05 * rng.random::<f32>();

    let plane = side * side;
    for yi in 0..side {
        for xi in 0..side {
            let (px, py) = (xi as f32 + 0.5, yi as f32 + 0.5);
            // Background gradient.
            let t = (0.5 + ((px - s / 2.0) * gx + (py - s / 2.0) * gy) / s).clamp(0.0, 1.0);
            let mut col = mix(bg0, bg1, t);
            for c in &behind {
                let (cov, cc) = c.coverage(px, py);
                if cov > 0.0 {
                    col = mix(col, cc, cov);
                }
            }
            if let Some(d) = &distractor {
                col = d.paint(col, px, py);
            }
            // Object in its own unit frame: translate, rotate, scale, squash.
            let (dx, dy) = ((px - cx) / radius, (py - cy) / radius);
            let u = (dx * rc + dy * rs) / aspect;
            let v = (-dx * rs + dy * rc) * aspect;
            let d_px = shape_sdf(class, u, v) * radius;
            let cov = (0.5 - d_px).clamp(0.0, 1.0);
            if cov > 0.0 {
                let fill = if class >= 7 {
                    mix(fg, fg2, texture(class, u, v))
                } else {
                    let k = 1.0 + shade * u;
                    [fg[0] * k, fg[1] * k, fg[2] * k]
                };
                col = mix(col, fill, cov);
            }
            if let Some(c) = &front {
                let (cov, cc) = c.coverage(px, py);
                if cov > 0.0 {
                    col = mix(col, cc, cov);
                }
            }
            // Pixel noise: per channel the sum of two 10-bit uniforms (triangular, unit
            // variance after scaling), all three channels from one u64 draw.
            let bits = rng.next_u64();
            for (ch, &value) in col.iter().enumerate() {
                let a = (bits >> (20 * ch)) & 0x3FF;
                let b = (bits >> (20 * ch + 10)) & 0x3FF;
                let n = ((a + b) as f32 / 1023.0 - 1.0) * 2.45;
                let val = (value + sigma * n).clamp(0.0, 1.0);
                out[ch * plane + yi * side + xi] = (val * 255.0 + 0.5) as u8;
            }
        }
    }
}
