//! Image augmentations of the strong view: padded random crop, horizontal flip, AutoAugment
//! with the CIFAR-10 policy, and Cutout. Images are CHW bytes with 1 or 3 channels.
//!
//! The AutoAugment operations follow the definitions of the AutoAugment paper as PIL
//! implements them (magnitude bins 0..9, signed geometric and enhancement ops, nearest
//! sampling), written here from those definitions.

use rand::{Rng, RngExt};

/// Value of pixels a geometric op moves in from outside the image (mid grey, as in the
/// reference CIFAR policy, so the hole is neutral after normalisation).
pub const FILL: u8 = 128;

/// One AutoAugment operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Horizontal shear: output pixel (x, y) reads x + m (y - centre), PIL's affine map, so
    /// for m > 0 the rows above the centre move right and those below move left.
    ShearX,
    /// Vertical shear: output pixel (x, y) reads y + m (x - centre), so for m > 0 the columns
    /// right of the centre move up and those left of it move down.
    ShearY,
    /// Horizontal shift by a fraction m of the width; the content moves right for m > 0.
    TranslateX,
    /// Vertical shift by a fraction m of the height; the content moves down for m > 0.
    TranslateY,
    /// Rotation about the centre by m degrees, clockwise as displayed (y down) for m > 0:
    /// the opposite sense of PIL's `rotate`. The policy draws the sign at random, so the
    /// distribution of views is the same either way.
    Rotate,
    /// Scale towards black by factor 1 + m.
    Brightness,
    /// Saturation: blend with the grey image by factor 1 + m.
    Color,
    /// Blend with the mean grey level by factor 1 + m.
    Contrast,
    /// Blend with a smoothed image by factor 1 + m.
    Sharpness,
    /// Keep the top `m` bits.
    Posterize,
    /// Invert pixels at or above threshold `m`.
    Solarize,
    /// Stretch each channel to the full range.
    AutoContrast,
    /// Histogram-equalise each channel.
    Equalize,
    /// 255 - v.
    Invert,
}

/// The 25 CIFAR-10 sub-policies of AutoAugment: two (op, probability, magnitude bin) each.
pub const CIFAR10_POLICY: [[(Op, f32, u8); 2]; 25] = {
    use Op::*;
    [
        [(Invert, 0.1, 0), (Contrast, 0.2, 6)],
        [(Rotate, 0.7, 2), (TranslateX, 0.3, 9)],
        [(Sharpness, 0.8, 1), (Sharpness, 0.9, 3)],
        [(ShearY, 0.5, 8), (TranslateY, 0.7, 9)],
        [(AutoContrast, 0.5, 0), (Equalize, 0.9, 0)],
        [(ShearY, 0.2, 7), (Posterize, 0.3, 7)],
        [(Color, 0.4, 3), (Brightness, 0.6, 7)],
        [(Sharpness, 0.3, 9), (Brightness, 0.7, 9)],
        [(Equalize, 0.6, 0), (Equalize, 0.5, 0)],
        [(Contrast, 0.6, 7), (Sharpness, 0.6, 5)],
        [(Color, 0.7, 7), (TranslateX, 0.5, 8)],
        [(Equalize, 0.3, 0), (AutoContrast, 0.4, 0)],
        [(TranslateY, 0.4, 3), (Sharpness, 0.2, 6)],
        [(Brightness, 0.9, 6), (Color, 0.2, 8)],
        [(Solarize, 0.5, 2), (Invert, 0.0, 0)],
        [(Equalize, 0.2, 0), (AutoContrast, 0.6, 0)],
        [(Equalize, 0.2, 0), (Equalize, 0.6, 0)],
        [(Color, 0.9, 9), (Equalize, 0.6, 0)],
        [(AutoContrast, 0.8, 0), (Solarize, 0.2, 8)],
        [(Brightness, 0.1, 3), (Color, 0.7, 0)],
        [(Solarize, 0.4, 5), (AutoContrast, 0.9, 0)],
        [(TranslateY, 0.9, 9), (TranslateY, 0.7, 9)],
        [(AutoContrast, 0.9, 0), (Solarize, 0.8, 3)],
        [(Equalize, 0.8, 0), (Invert, 0.1, 0)],
        [(TranslateY, 0.7, 9), (AutoContrast, 0.9, 0)],
    ]
};

/// Whether the op's magnitude takes a random sign.
pub fn signed(op: Op) -> bool {
    matches!(
        op,
        Op::ShearX
            | Op::ShearY
            | Op::TranslateX
            | Op::TranslateY
            | Op::Rotate
            | Op::Brightness
            | Op::Color
            | Op::Contrast
            | Op::Sharpness
    )
}

/// The unsigned magnitude of bin `bin` (0..=9) of `op`: linear ramps over 10 bins.
pub fn magnitude(op: Op, bin: u8) -> f32 {
    let t = bin.min(9) as f32 / 9.0;
    match op {
        Op::ShearX | Op::ShearY => 0.3 * t,
        Op::TranslateX | Op::TranslateY => 150.0 / 331.0 * t,
        Op::Rotate => 30.0 * t,
        Op::Brightness | Op::Color | Op::Contrast | Op::Sharpness => 0.9 * t,
        // Bits kept: 8, 8, 7, 7, 6, 6, 5, 5, 4, 4.
        Op::Posterize => 8.0 - (bin.min(9) as f32 / 2.25).round(),
        Op::Solarize => 256.0 * (1.0 - t),
        Op::AutoContrast | Op::Equalize | Op::Invert => 0.0,
    }
}

/// Nearest-neighbour inverse warp about the image centre: output pixel p samples the input
/// at `m * (p - centre) + centre + t`; outside pixels become [`FILL`].
fn warp(img: &mut [u8], c: usize, h: usize, w: usize, m: [f32; 4], t: [f32; 2]) {
    let src = img.to_vec();
    let (cx, cy) = (w as f32 / 2.0, h as f32 / 2.0);
    for y in 0..h {
        for x in 0..w {
            let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
            let sx = (m[0] * dx + m[1] * dy + cx + t[0]).floor();
            let sy = (m[2] * dx + m[3] * dy + cy + t[1]).floor();
            let inside = sx >= 0.0 && sy >= 0.0 && (sx as usize) < w && (sy as usize) < h;
            for ch in 0..c {
                img[ch * h * w + y * w + x] = if inside {
                    src[ch * h * w + sy as usize * w + sx as usize]
                } else {
                    FILL
                };
            }
        }
    }
}

/// The grey level (ITU-R 601 luma, as PIL's "L" conversion) of each pixel.
fn grey(img: &[u8], c: usize, plane: usize) -> Vec<f32> {
    if c < 3 {
        return img[..plane].iter().map(|&v| v as f32).collect();
    }
    (0..plane)
        .map(|i| {
            (img[i] as f32 * 299.0
                + img[plane + i] as f32 * 587.0
                + img[2 * plane + i] as f32 * 114.0)
                / 1000.0
        })
        .collect()
}

fn to_u8(v: f32) -> u8 {
    v.round().clamp(0.0, 255.0) as u8
}

/// `degenerate + f * (img - degenerate)` per pixel, PIL's enhancement blend.
fn blend(img: &mut [u8], degenerate: &[f32], f: f32) {
    for (v, &d) in img.iter_mut().zip(degenerate) {
        *v = to_u8(d + f * (*v as f32 - d));
    }
}

/// Applies `op` with signed magnitude `m` (see [`magnitude`]) to a CHW image in place.
pub fn apply(img: &mut [u8], c: usize, h: usize, w: usize, op: Op, m: f32) {
    let plane = h * w;
    match op {
        Op::ShearX => warp(img, c, h, w, [1.0, m, 0.0, 1.0], [0.0, 0.0]),
        Op::ShearY => warp(img, c, h, w, [1.0, 0.0, m, 1.0], [0.0, 0.0]),
        Op::TranslateX => {
            let t = (m * w as f32).trunc();
            warp(img, c, h, w, [1.0, 0.0, 0.0, 1.0], [-t, 0.0]);
        }
        Op::TranslateY => {
            let t = (m * h as f32).trunc();
            warp(img, c, h, w, [1.0, 0.0, 0.0, 1.0], [0.0, -t]);
        }
        Op::Rotate => {
            let (s, co) = m.to_radians().sin_cos();
            warp(img, c, h, w, [co, s, -s, co], [0.0, 0.0]);
        }
        Op::Brightness => img
            .iter_mut()
            .for_each(|v| *v = to_u8(*v as f32 * (1.0 + m))),
        Op::Color => {
            if c >= 3 {
                let g = grey(img, c, plane);
                for ch in 0..c {
                    blend(&mut img[ch * plane..(ch + 1) * plane], &g, 1.0 + m);
                }
            }
        }
        Op::Contrast => {
            let g = grey(img, c, plane);
            let mean = (g.iter().sum::<f32>() / plane.max(1) as f32 + 0.5).floor();
            let d = vec![mean; img.len()];
            blend(img, &d, 1.0 + m);
        }
        Op::Sharpness => {
            // Smoothing kernel [[1,1,1],[1,5,1],[1,1,1]] / 13 inside; borders stay as they are.
            let mut d: Vec<f32> = img.iter().map(|&v| v as f32).collect();
            if h >= 3 && w >= 3 {
                for ch in 0..c {
                    let p = &img[ch * plane..(ch + 1) * plane];
                    for y in 1..h - 1 {
                        for x in 1..w - 1 {
                            let mut s = 4.0 * p[y * w + x] as f32;
                            for yy in y - 1..=y + 1 {
                                for xx in x - 1..=x + 1 {
                                    s += p[yy * w + xx] as f32;
                                }
                            }
                            d[ch * plane + y * w + x] = (s / 13.0).round();
                        }
                    }
                }
            }
            blend(img, &d, 1.0 + m);
        }
        Op::Posterize => {
            let bits = m.clamp(0.0, 8.0) as u32;
            let mask = if bits == 0 {
                0
            } else {
                (0xFFu32 << (8 - bits)) as u8
            };
            img.iter_mut().for_each(|v| *v &= mask);
        }
        Op::Solarize => img.iter_mut().for_each(|v| {
            if *v as f32 >= m {
                *v = 255 - *v;
            }
        }),
        Op::AutoContrast => {
            for ch in 0..c {
                let p = &mut img[ch * plane..(ch + 1) * plane];
                let lo = *p.iter().min().unwrap_or(&0) as f32;
                let hi = *p.iter().max().unwrap_or(&255) as f32;
                if hi > lo {
                    let scale = 255.0 / (hi - lo);
                    p.iter_mut()
                        .for_each(|v| *v = to_u8((*v as f32 - lo) * scale));
                }
            }
        }
        Op::Equalize => {
            for ch in 0..c {
                equalize(&mut img[ch * plane..(ch + 1) * plane]);
            }
        }
        Op::Invert => img.iter_mut().for_each(|v| *v = 255 - *v),
    }
}

/// Histogram equalisation of one channel with PIL's rule: the step ignores the last occupied
/// bin, and a channel with (almost) one level is left alone.
pub fn equalize(p: &mut [u8]) {
    let mut hist = [0usize; 256];
    for &v in p.iter() {
        hist[v as usize] += 1;
    }
    let last = hist.iter().rposition(|&n| n > 0).map_or(0, |i| hist[i]);
    let step = (p.len() - last) / 255;
    if step == 0 {
        return;
    }
    let mut lut = [0u8; 256];
    let mut n = step / 2;
    for (i, &count) in hist.iter().enumerate() {
        lut[i] = (n / step).min(255) as u8;
        n += count;
    }
    p.iter_mut().for_each(|v| *v = lut[*v as usize]);
}

/// AutoAugment, CIFAR-10 policy: a uniformly chosen sub-policy, each of its two ops applied
/// with its probability and a random sign where the op is signed.
pub fn auto_augment<R: Rng>(img: &mut [u8], c: usize, h: usize, w: usize, rng: &mut R) {
    let sub = &CIFAR10_POLICY[rng.random_range(0..CIFAR10_POLICY.len())];
    for &(op, p, bin) in sub {
        let draw = rng.random::<f32>();
        let negative = rng.random::<bool>();
        if draw < p {
            let mut m = magnitude(op, bin);
            if signed(op) && negative {
                m = -m;
            }
            apply(img, c, h, w, op, m);
        }
    }
}

/// Random crop of `h` x `w` from the image zero-padded by `pad` on every side, then a
/// horizontal flip with probability 1/2; writes into `dst`.
pub fn pad_crop_flip<R: Rng>(
    src: &[u8],
    c: usize,
    h: usize,
    w: usize,
    pad: usize,
    rng: &mut R,
    dst: &mut [u8],
) {
    let oy = rng.random_range(0..=2 * pad) as isize - pad as isize;
    let ox = rng.random_range(0..=2 * pad) as isize - pad as isize;
    let flip = rng.random::<bool>();
    for ch in 0..c {
        for y in 0..h {
            let sy = y as isize + oy;
            for x in 0..w {
                let xx = if flip { w - 1 - x } else { x };
                let sx = xx as isize + ox;
                dst[ch * h * w + y * w + x] =
                    if sy >= 0 && sx >= 0 && (sy as usize) < h && (sx as usize) < w {
                        src[ch * h * w + sy as usize * w + sx as usize]
                    } else {
                        0
                    };
            }
        }
    }
}

/// Cutout: zeroes a `size` x `size` square (clipped at the border) centred on a uniformly
/// random pixel of an already normalised CHW image (zero = the data set's mean colour).
pub fn cutout<R: Rng>(x: &mut [f32], c: usize, h: usize, w: usize, size: usize, rng: &mut R) {
    let cy = rng.random_range(0..h.max(1));
    let cx = rng.random_range(0..w.max(1));
    let (y0, y1) = (cy.saturating_sub(size / 2), (cy + size.div_ceil(2)).min(h));
    let (x0, x1) = (cx.saturating_sub(size / 2), (cx + size.div_ceil(2)).min(w));
    for ch in 0..c {
        for y in y0..y1 {
            x[ch * h * w + y * w + x0..ch * h * w + y * w + x1].fill(0.0);
        }
    }
}
