//! Weak and strong views, the AutoAugment ops, and the background loader (order, drop_last,
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
    // Cutout leaves a zero square of at least 8x8 (a 16x16 square clipped by the border).
    for s in a.x.chunks(3072) {
        let zeros = s[..1024].iter().filter(|&&v| v == 0.0).count();
        assert!(zeros >= 64, "cutout hole too small: {zeros}");
    }
    // The position in the order, not the batch split, keys the augmentation.
    let mut one = vec![0f32; 3072];
    prepare_sample(&ds, 9, View::Strong, &mean, &std, 5, 3, 9, &mut one);
    assert_eq!(&one[..], &a.x[9 * 3072..10 * 3072]);
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
