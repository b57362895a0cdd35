//! Weak, standard and strong views, the AutoAugment ops, and the background loader (order, drop_last,
//! determinism across worker counts, throughput).

use std::sync::Arc;
use std::time::Instant;

use dynloss_wgpu::data::augment::{self, CIFAR10_POLICY, Op, apply, equalize, magnitude};
use dynloss_wgpu::data::views::{make_batch, prepare_sample};
use dynloss_wgpu::data::{Dataset, Loader, View, builtin, mean_std};
use rand::SeedableRng;

fn small_set(n: usize) -> Arc<Dataset> {
    Arc::new(builtin::generate_split(2, 32, n, 0))
}

#[test]
fn weak_view_is_normalisation_only() {
    let ds = small_set(20);
    let (mean, std) = mean_std(&ds);
    assert_eq!(mean.len(), 3);
    let b = make_batch(&ds, &[4, 7], View::Weak, &mean, &std, 0, 0, 0);
    assert_eq!(b.x.len(), 2 * 3072);
    assert_eq!(b.indices, vec![4, 7]);
    assert_eq!(b.labels, vec![ds.labels[4], ds.labels[7]]);
    for (k, &i) in [4usize, 7].iter().enumerate() {
        for (j, &v) in ds.image(i).iter().enumerate() {
            let c = j / 1024;
            let want = (v as f32 / 255.0 - mean[c]) / std[c];
            assert!((b.x[k * 3072 + j] - want).abs() < 1e-6);
        }
    }
    // Normalised training data has mean ~0 and deviation ~1 per channel.
    let all: Vec<usize> = (0..ds.len()).collect();
    let x = make_batch(&ds, &all, View::Weak, &mean, &std, 0, 0, 0).x;
    for c in 0..3 {
        let vals: Vec<f64> = x
            .chunks(3072)
            .flat_map(|s| s[c * 1024..(c + 1) * 1024].iter().map(|&v| v as f64))
            .collect();
        let m = vals.iter().sum::<f64>() / vals.len() as f64;
        let var = vals.iter().map(|v| (v - m).powi(2)).sum::<f64>() / vals.len() as f64;
        assert!(
            m.abs() < 1e-3 && (var.sqrt() - 1.0).abs() < 1e-2,
            "channel {c}: {m} {var}"
        );
    }
}

/// The normalised image `src` shifted by (oy, ox), mirrored if `flip`, zero-filled outside:
/// what a padded crop with those choices gives (zero pixels normalise to -mean/std).
fn shifted(src: &[u8], h: usize, w: usize, oy: isize, ox: isize, flip: bool) -> Vec<u8> {
    let mut out = vec![0u8; src.len()];
    for ch in 0..src.len() / (h * w) {
        for y in 0..h {
            for x in 0..w {
                let xx = if flip { w - 1 - x } else { x };
                let (sy, sx) = (y as isize + oy, xx as isize + ox);
                if sy >= 0 && sx >= 0 && (sy as usize) < h && (sx as usize) < w {
                    out[ch * h * w + y * w + x] = src[ch * h * w + sy as usize * w + sx as usize];
                }
            }
        }
    }
    out
}

#[test]
fn standard_view_is_a_padded_crop_and_flip_only() {
    let ds = small_set(40);
    let (mean, std) = mean_std(&ds);
    let (h, w) = (32usize, 32usize);
    let pad = dynloss_wgpu::data::views::crop_pad(h) as isize;
    let idx: Vec<usize> = (0..24).collect();
    let standard = make_batch(&ds, &idx, View::Standard, &mean, &std, 5, 3, 0);
    let strong = make_batch(&ds, &idx, View::Strong, &mean, &std, 5, 3, 0);
    let (mut moved, mut flipped, mut strong_differs) = (0, 0, 0);
    for (k, &i) in idx.iter().enumerate() {
        let got = &standard.x[k * 3072..(k + 1) * 3072];
        // Exactly one of the crops and flips the padding allows, normalised, nothing else.
        let mut hit = None;
        'search: for oy in -pad..=pad {
            for ox in -pad..=pad {
                for flip in [false, true] {
                    let img = shifted(ds.image(i), h, w, oy, ox, flip);
                    let same = img.iter().enumerate().all(|(j, &v)| {
                        let c = j / 1024;
                        (got[j] - (v as f32 / 255.0 - mean[c]) / std[c]).abs() < 1e-6
                    });
                    if same {
                        hit = Some((oy, ox, flip));
                        break 'search;
                    }
                }
            }
        }
        let (oy, ox, flip) = hit.unwrap_or_else(|| panic!("sample {i}: not a crop and flip"));
        moved += usize::from((oy, ox) != (0, 0));
        flipped += usize::from(flip);
        strong_differs += usize::from(got != &strong.x[k * 3072..(k + 1) * 3072]);
    }
    // The crop and the flip are drawn: most of 24 samples move, some flip, some do not.
    assert!(
        moved >= 18 && (4..=20).contains(&flipped),
        "{moved} moved, {flipped} flipped"
    );
    // The strong view adds AutoAugment and Cutout on top (Cutout alone changes every sample).
    assert_eq!(strong_differs, idx.len());
    // And it is keyed like the strong view: the same seed, epoch and position repeat it.
    let again = make_batch(&ds, &idx, View::Standard, &mean, &std, 5, 3, 0);
    assert_eq!(again.x, standard.x);
    let other = make_batch(&ds, &idx, View::Standard, &mean, &std, 5, 4, 0);
    assert_ne!(other.x, standard.x);
}

#[test]
fn strong_view_is_deterministic_by_seed_and_epoch() {
    let ds = small_set(16);
    let (mean, std) = mean_std(&ds);
    let idx: Vec<usize> = (0..16).collect();
    let a = make_batch(&ds, &idx, View::Strong, &mean, &std, 5, 3, 0);
    let b = make_batch(&ds, &idx, View::Strong, &mean, &std, 5, 3, 0);
    let other_epoch = make_batch(&ds, &idx, View::Strong, &mean, &std, 5, 4, 0);
    let other_seed = make_batch(&ds, &idx, View::Strong, &mean, &std, 6, 3, 0);
    let weak = make_batch(&ds, &idx, View::Weak, &mean, &std, 5, 3, 0);
    assert_eq!(a, b);
    assert_ne!(a.x, other_epoch.x);
    assert_ne!(a.x, other_seed.x);
    assert_ne!(a.x, weak.x);
    // Every strong view has its Cutout hole: the spec's 16x16 square, clipped by the border.
    let holes: Vec<(usize, usize)> =
        a.x.chunks(3072)
            .map(|s| zero_rectangle(s, 3, 32, 32))
            .collect();
    for &(hh, ww) in &holes {
        assert!(
            (8..=16).contains(&hh) && (8..=16).contains(&ww),
            "hole {hh}x{ww}"
        );
    }
    assert!(
        holes.contains(&(16, 16)),
        "some hole lies inside: {holes:?}"
    );
    // The position in the order, not the batch split, keys the augmentation.
    let mut one = vec![0f32; 3072];
    prepare_sample(&ds, 9, View::Strong, &mean, &std, 5, 3, 9, &mut one);
    assert_eq!(&one[..], &a.x[9 * 3072..10 * 3072]);
}

/// The zero cells of a CHW image: the same in every channel and a filled rectangle; returns
/// its height and width.
fn zero_rectangle(x: &[f32], c: usize, h: usize, w: usize) -> (usize, usize) {
    let plane = h * w;
    let zeros: Vec<usize> = (0..plane).filter(|&i| x[i] == 0.0).collect();
    for ch in 1..c {
        let other: Vec<usize> = (0..plane).filter(|&i| x[ch * plane + i] == 0.0).collect();
        assert_eq!(other, zeros, "channel {ch} has another hole");
    }
    assert!(!zeros.is_empty(), "no hole");
    let (y0, y1) = (zeros[0] / w, zeros[zeros.len() - 1] / w);
    let x0 = zeros.iter().map(|i| i % w).min().unwrap();
    let x1 = zeros.iter().map(|i| i % w).max().unwrap();
    let (hh, ww) = (y1 - y0 + 1, x1 - x0 + 1);
    assert_eq!(zeros.len(), hh * ww, "the hole is a filled rectangle");
    (hh, ww)
}

/// Cutout's hole is the spec's square: 16x16 at side 32 (side / 2 in general), centred on a
/// uniformly random pixel and clipped by the border, so it is exactly 16x16 whenever the
/// centre is 8 or more pixels from the top and left and 8 or more from the bottom and right.
#[test]
fn cutout_hole_is_the_spec_square() {
    use dynloss_wgpu::data::views::cutout_size;
    assert_eq!(cutout_size(32), 16, "the spec's 16x16 at 32x32");
    assert_eq!(cutout_size(28), 14);
    let (c, h, w) = (3usize, 32usize, 32usize);
    let mut sizes = std::collections::BTreeMap::new();
    for seed in 0..400u64 {
        let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut x = vec![1.0f32; c * h * w];
        augment::cutout(&mut x, c, h, w, cutout_size(h), &mut rng);
        let (hh, ww) = zero_rectangle(&x, c, h, w);
        assert!(hh <= 16 && ww <= 16 && hh >= 8 && ww >= 8, "hole {hh}x{ww}");
        *sizes.entry((hh, ww)).or_insert(0usize) += 1;
    }
    // A side is 16 for 17 of the 32 centres (8..=24), so a quarter or so of the holes are
    // whole squares; the rest are clipped squares, never anything larger.
    let whole = sizes.get(&(16, 16)).copied().unwrap_or(0);
    assert!(
        (60..=160).contains(&whole),
        "{whole} whole squares of 400: {sizes:?}"
    );
}

#[test]
fn loader_yields_every_sample_in_order() {
    let ds = small_set(103);
    let (mean, std) = mean_std(&ds);
    let order: Vec<usize> = (0..103).rev().collect();
    let batches: Vec<_> = Loader::new(
        ds.clone(),
        order.clone(),
        10,
        View::Weak,
        mean.clone(),
        std.clone(),
        0,
    )
    .unwrap()
    .collect();
    assert_eq!(batches.len(), 11);
    assert_eq!(batches[10].indices.len(), 3);
    let seen: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
    assert_eq!(seen, order);

    let mut l = Loader::new(
        ds.clone(),
        order.clone(),
        10,
        View::Weak,
        mean.clone(),
        std.clone(),
        0,
    )
    .unwrap()
    .with_drop_last(true);
    assert_eq!(l.len(), 10);
    assert!(l.all(|b| b.indices.len() == 10));

    // Dropping a loader mid-epoch stops its workers (no hang).
    let mut l = Loader::new(
        ds.clone(),
        order,
        1,
        View::Strong,
        mean.clone(),
        std.clone(),
        0,
    )
    .unwrap()
    .with_workers(2);
    l.next();
    // Reconfiguring a started loader rewinds it to the first batch.
    let mut l = l.with_epoch(1);
    assert_eq!(l.len(), 103);
    assert_eq!(l.next().unwrap().indices, vec![102]);
    drop(l);

    // Bad arguments are errors, not panics.
    assert!(
        Loader::new(
            ds.clone(),
            vec![0],
            0,
            View::Weak,
            mean.clone(),
            std.clone(),
            0
        )
        .is_err()
    );
    assert!(
        Loader::new(
            ds.clone(),
            vec![103],
            4,
            View::Weak,
            mean.clone(),
            std.clone(),
            0
        )
        .is_err()
    );
    assert!(
        Loader::new(
            ds.clone(),
            vec![0],
            4,
            View::Weak,
            vec![0.5],
            std.clone(),
            0
        )
        .is_err()
    );
    assert!(Loader::new(ds, vec![0], 4, View::Weak, mean, vec![1.0, 0.0, 1.0], 0).is_err());
}

#[test]
fn loader_results_do_not_depend_on_workers_or_batch_size() {
    let ds = small_set(64);
    let (mean, std) = mean_std(&ds);
    let order: Vec<usize> = (0..64).map(|i| (i * 17) % 64).collect();
    let run = |batch: usize, workers: usize| -> Vec<f32> {
        Loader::new(
            ds.clone(),
            order.clone(),
            batch,
            View::Strong,
            mean.clone(),
            std.clone(),
            9,
        )
        .unwrap()
        .with_epoch(2)
        .with_workers(workers)
        .flat_map(|b| b.x)
        .collect()
    };
    let reference = run(16, 1);
    assert_eq!(run(16, 2), reference);
    assert_eq!(run(5, 3), reference);
}

#[test]
fn loader_throughput_strong_view() {
    let ds = Arc::new(builtin::generate_split(1, 32, 4096, 0));
    let (mean, std) = mean_std(&ds);
    let order: Vec<usize> = (0..ds.len()).collect();
    for workers in [1, 2] {
        let t = Instant::now();
        let n: usize = Loader::new(
            ds.clone(),
            order.clone(),
            256,
            View::Strong,
            mean.clone(),
            std.clone(),
            0,
        )
        .unwrap()
        .with_workers(workers)
        .map(|b| b.indices.len())
        .sum();
        let secs = t.elapsed().as_secs_f64();
        println!(
            "strong view, 32x32, {workers} worker(s): {:.0} images/s",
            n as f64 / secs
        );
        assert_eq!(n, 4096);
    }
}

#[test]
fn autoaugment_ops_do_what_they_say() {
    let (c, h, w) = (3usize, 8usize, 8usize);
    let ramp: Vec<u8> = (0..c * h * w).map(|i| (i * 4 % 256) as u8).collect();

    let mut x = ramp.clone();
    apply(&mut x, c, h, w, Op::Invert, 0.0);
    assert!(x.iter().zip(&ramp).all(|(a, b)| *a == 255 - b));

    let mut x = ramp.clone();
    apply(&mut x, c, h, w, Op::Posterize, magnitude(Op::Posterize, 9));
    assert!(x.iter().all(|v| v & 0x0F == 0), "4 bits kept");

    let mut x = ramp.clone();
    apply(&mut x, c, h, w, Op::Solarize, 128.0);
    assert!(
        x.iter()
            .zip(&ramp)
            .all(|(a, &b)| *a == if b >= 128 { 255 - b } else { b })
    );

    let mut x = vec![50u8, 60, 70, 80];
    apply(&mut x, 1, 2, 2, Op::AutoContrast, 0.0);
    assert_eq!(x, vec![0, 85, 170, 255]);

    let mut x = vec![100u8; 16];
    equalize(&mut x);
    assert_eq!(x, vec![100; 16], "a flat channel stays");

    // Four equally common levels spread over the full range (PIL's rule: 0, 85, 171, 255).
    let mut x: Vec<u8> = (0..1024).map(|i| 100 + (i % 4) as u8).collect();
    equalize(&mut x);
    assert_eq!(&x[..4], &[0, 85, 171, 255]);

    // Brightness 1 + m, with m in [-0.9, 0.9].
    let mut x = vec![100u8; 12];
    apply(&mut x, 3, 2, 2, Op::Brightness, -0.5);
    assert_eq!(x, vec![50; 12]);

    // Colour at factor 0 makes the image grey.
    let mut x = vec![255, 255, 255, 255, 0, 0, 0, 0, 0, 0, 0, 0];
    apply(&mut x, 3, 2, 2, Op::Color, -1.0);
    assert!(x.iter().all(|&v| v == 76), "{x:?}");

    // Translating by half the width moves the left half right and fills with grey.
    let mut x: Vec<u8> = (0..8).collect();
    apply(&mut x, 1, 1, 8, Op::TranslateX, 0.5);
    assert_eq!(x, vec![128, 128, 128, 128, 0, 1, 2, 3]);

    // A 90 degree rotation keeps the centre 2x2 block's pixels.
    let mut x: Vec<u8> = (0..16).collect();
    apply(&mut x, 1, 4, 4, Op::Rotate, 90.0);
    let mut centre = vec![x[5], x[6], x[9], x[10]];
    centre.sort();
    assert_eq!(centre, vec![5, 6, 9, 10]);
    geometric_directions();

    // Zero-magnitude geometric ops are the identity.
    for op in [Op::ShearX, Op::ShearY, Op::TranslateY, Op::Rotate] {
        let mut x = ramp.clone();
        apply(&mut x, c, h, w, op, 0.0);
        assert_eq!(x, ramp, "{op:?}");
    }
    assert_eq!(CIFAR10_POLICY.len(), 25);

    // Every op survives every magnitude on 1- and 3-channel images.
    let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(0);
    for ch in [1, 3] {
        for _ in 0..200 {
            let mut img: Vec<u8> = (0..ch * 32 * 32).map(|i| (i * 7 % 256) as u8).collect();
            augment::auto_augment(&mut img, ch, 32, 32, &mut rng);
        }
    }
}

/// Where a single marked pixel of a 9x9 image lands under `op` with magnitude `m`.
fn lands(op: Op, m: f32, from: (usize, usize)) -> (usize, usize) {
    let mut x = vec![0u8; 81];
    x[from.1 * 9 + from.0] = 200;
    apply(&mut x, 1, 9, 9, op, m);
    let at: Vec<usize> = (0..81).filter(|&i| x[i] == 200).collect();
    assert_eq!(at.len(), 1, "{op:?} {m}: the marker once, at {at:?}");
    (at[0] % 9, at[0] / 9)
}

/// The geometric ops' directions as `Op`'s documentation states them (x to the right, y
/// down, the centre at pixel (4, 4) of a 9x9 image): a rotation by +90 degrees takes the
/// pixel above the centre to its right (clockwise as displayed) and -90 to its left; ShearX
/// by +m moves each row by -m times its height from the centre (rows above go right),
/// ShearY by +m moves each column by -m times its distance right of the centre (columns on
/// the right go up), TranslateY by +m moves the content down. The policy draws each sign at
/// random, so only a mix-up of axes or a reflection would change the distribution of views,
/// and these catch both.
fn geometric_directions() {
    let above = (4, 1);
    assert_eq!(
        lands(Op::Rotate, 90.0, above),
        (7, 4),
        "rotate +90: above -> right"
    );
    assert_eq!(
        lands(Op::Rotate, -90.0, above),
        (1, 4),
        "rotate -90: above -> left"
    );
    assert_eq!(
        lands(Op::Rotate, 180.0, above),
        (4, 7),
        "rotate 180: above -> below"
    );
    assert_eq!(
        lands(Op::Rotate, 90.0, (7, 4)),
        (4, 7),
        "rotate +90: right -> below"
    );
    let m = 2.0 / 3.0; // moves a pixel 3 rows or columns from the centre by exactly 2
    assert_eq!(
        lands(Op::ShearX, m, above),
        (6, 1),
        "shear x: rows above go right"
    );
    assert_eq!(
        lands(Op::ShearX, m, (4, 7)),
        (2, 7),
        "shear x: rows below go left"
    );
    assert_eq!(
        lands(Op::ShearX, m, (7, 4)),
        (7, 4),
        "shear x: the centre row stays"
    );
    assert_eq!(
        lands(Op::ShearY, m, (7, 4)),
        (7, 2),
        "shear y: columns right go up"
    );
    assert_eq!(
        lands(Op::ShearY, m, (1, 4)),
        (1, 6),
        "shear y: columns left go down"
    );
    assert_eq!(
        lands(Op::ShearY, m, above),
        (4, 1),
        "shear y: the centre column stays"
    );
    assert_eq!(
        lands(Op::TranslateY, 2.0 / 9.0, above),
        (4, 3),
        "translate y: down"
    );
}

/// Writes strong views of the first samples (one row per epoch) for eyeballing when
/// DYNLOSS_PREVIEW_VIEWS names an output file.
#[test]
fn preview_strong_views() {
    let Ok(out) = std::env::var("DYNLOSS_PREVIEW_VIEWS") else {
        return;
    };
    let ds = small_set(10);
    let (mean, std) = mean_std(&ds);
    let idx: Vec<usize> = (0..10).collect();
    let z = 4u32;
    let mut img = image::RgbImage::new(10 * (32 * z + 2), 6 * (32 * z + 2));
    for row in 0..6u32 {
        let view = if row == 0 { View::Weak } else { View::Strong };
        let b = make_batch(&ds, &idx, view, &mean, &std, 1, row as u64, 0);
        for (k, s) in b.x.chunks(3072).enumerate() {
            for y in 0..32 * z {
                for x in 0..32 * z {
                    let p = ((y / z) * 32 + x / z) as usize;
                    let px = |c: usize| {
                        ((s[c * 1024 + p] * std[c] + mean[c]) * 255.0).clamp(0.0, 255.0) as u8
                    };
                    img.put_pixel(
                        k as u32 * (32 * z + 2) + x,
                        row * (32 * z + 2) + y,
                        image::Rgb([px(0), px(1), px(2)]),
                    );
                }
            }
        }
    }
    img.save(&out).unwrap();
}
