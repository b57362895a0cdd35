//! Segmented bitonic sort and rank bins against CPU references.

mod common;

use common::{Rng, cpu};
use dynloss_wgpu::tensor::sort::{rank_bins, segmented_sort};
use dynloss_wgpu::{DType, Error, Gpu, Tensor};

/// Runs the GPU sort and checks every column exactly against the CPU reference.
fn check(gpu: &Gpu, what: &str, seg: &[u32], key: &[f32], val: &[u32]) {
    let n = seg.len();
    let r = segmented_sort(
        &Tensor::from_u32(gpu, &[n], seg).unwrap(),
        &Tensor::from_f32(gpu, &[n], key).unwrap(),
        &Tensor::from_u32(gpu, &[n], val).unwrap(),
    )
    .unwrap();
    assert_eq!(r.segment.shape(), [n]);
    assert_eq!(r.key.shape(), [n]);
    assert_eq!(r.value.shape(), [n]);
    let (gs, gk, gv) = (
        r.segment.to_u32_vec().unwrap(),
        r.key.to_f32_vec().unwrap(),
        r.value.to_u32_vec().unwrap(),
    );
    let want = cpu::segmented_sort(seg, key, val);
    for (i, &(s, k, v)) in want.iter().enumerate() {
        let canon = |x: f32| {
            if x.is_nan() {
                f32::NAN.to_bits()
            } else {
                x.to_bits()
            }
        };
        assert!(
            gs[i] == s && canon(gk[i]) == canon(k) && gv[i] == v,
            "{what}: position {i} of {n}: got ({}, {}, {}), want ({s}, {k}, {v})",
            gs[i],
            gk[i],
            gv[i]
        );
    }
}

/// Segment ids laid out by `sizes`, then shuffled, with keys from a few tied values.
fn segmented_data(rng: &mut Rng, sizes: &[usize]) -> (Vec<u32>, Vec<f32>, Vec<u32>) {
    let mut seg: Vec<u32> = sizes
        .iter()
        .enumerate()
        .flat_map(|(s, &len)| std::iter::repeat_n(s as u32, len))
        .collect();
    for i in (1..seg.len()).rev() {
        seg.swap(i, rng.below(i as u32 + 1) as usize);
    }
    let levels = [-3.5f32, -1.0, -0.25, 0.0, 0.5, 2.0, 1e6];
    let key = (0..seg.len())
        .map(|_| {
            if rng.below(3) == 0 {
                rng.range(-10.0, 10.0)
            } else {
                levels[rng.below(levels.len() as u32) as usize]
            }
        })
        .collect();
    // Mostly distinct values (sample indices), with some duplicates.
    let val = (0..seg.len() as u32)
        .map(|i| if i % 7 == 0 { rng.below(16) } else { i })
        .collect();
    (seg, key, val)
}

#[test]
fn sorts_many_segments_of_awkward_sizes() {
    let gpu = common::gpu();
    let mut rng = Rng::new(1);
    let mut sizes = vec![1, 2, 3, 511, 512, 513, 1000, 5000];
    sizes.extend((0..40).map(|_| 1 + rng.below(300) as usize));
    sizes.extend([1, 1, 2]);
    let (seg, key, val) = segmented_data(&mut rng, &sizes);
    assert!(!seg.len().is_power_of_two());
    check(&gpu, "many segments", &seg, &key, &val);
}

#[test]
fn sorts_one_big_segment_and_small_inputs() {
    let gpu = common::gpu();
    let mut rng = Rng::new(2);
    let (seg, key, val) = segmented_data(&mut rng, &[5000]);
    check(&gpu, "one segment of 5000", &seg, &key, &val);
    for n in [1usize, 2, 3, 100, 511, 512, 513, 1023, 1024, 1025, 2049] {
        let (seg, key, val) = segmented_data(&mut rng, &[n / 2, n - n / 2]);
        check(&gpu, &format!("n = {n}"), &seg, &key, &val);
    }
    // CIFAR-10 sized: 50000 samples in 10 classes (many global bitonic steps).
    let (seg, key, val) = segmented_data(&mut rng, &[5000; 10]);
    check(&gpu, "50000 in 10 classes", &seg, &key, &val);
    // Keys entirely tied: the order comes from segment and value alone.
    let n = 3000;
    let seg: Vec<u32> = (0..n).map(|_| rng.below(5)).collect();
    let val: Vec<u32> = (0..n).map(|_| rng.below(1000)).collect();
    check(&gpu, "all keys tied", &seg, &vec![0.25; n], &val);
}

#[test]
fn sorts_special_floats() {
    let gpu = common::gpu();
    let key = [
        f32::NAN,
        1.0,
        -0.0,
        0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        -f32::NAN,
        f32::MIN_POSITIVE,
        -f32::MIN_POSITIVE,
        f32::MAX,
        f32::MIN,
        -1.0,
    ];
    let n = key.len();
    let seg = vec![0; n];
    let val: Vec<u32> = (0..n as u32).collect();
    check(&gpu, "special floats", &seg, &key, &val);
    let r = segmented_sort(
        &Tensor::from_u32(&gpu, &[n], &seg).unwrap(),
        &Tensor::from_f32(&gpu, &[n], &key).unwrap(),
        &Tensor::from_u32(&gpu, &[n], &val).unwrap(),
    )
    .unwrap();
    let k = r.key.to_f32_vec().unwrap();
    assert_eq!(k[0], f32::NEG_INFINITY);
    assert!(k[n - 3] == f32::INFINITY && k[n - 2].is_nan() && k[n - 1].is_nan());
    assert!(k[4].is_sign_negative() && k[4] == 0.0 && k[5].is_sign_positive());
}

#[test]
fn empty_input_and_shape_errors() {
    let gpu = common::gpu();
    let r = segmented_sort(
        &Tensor::from_u32(&gpu, &[0], &[]).unwrap(),
        &Tensor::from_f32(&gpu, &[0], &[]).unwrap(),
        &Tensor::from_u32(&gpu, &[0], &[]).unwrap(),
    )
    .unwrap();
    assert_eq!(r.key.shape(), [0]);
    assert!(r.key.to_f32_vec().unwrap().is_empty());

    let s3 = Tensor::from_u32(&gpu, &[3], &[0, 1, 2]).unwrap();
    let k2 = Tensor::from_f32(&gpu, &[2], &[0.0, 1.0]).unwrap();
    let k3 = Tensor::from_f32(&gpu, &[3], &[0.0, 1.0, 2.0]).unwrap();
    assert!(matches!(
        segmented_sort(&s3, &k2, &s3),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        segmented_sort(&s3, &k3, &k3),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        rank_bins(&s3, &s3, &Tensor::zeros(&gpu, &[2], DType::U32), 10),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        rank_bins(&s3, &s3, &s3, 0),
        Err(Error::Shape { .. })
    ));
}

#[test]
fn rank_bins_match_cpu() {
    let gpu = common::gpu();
    let mut rng = Rng::new(3);
    // Segment 3 is empty; sizes include 1 and sizes below and above the bin count.
    let sizes = [1usize, 7, 100, 0, 999, 5000, 2, 101];
    let (seg, key, val) = segmented_data(&mut rng, &sizes);
    let n = seg.len();
    let sorted = segmented_sort(
        &Tensor::from_u32(&gpu, &[n], &seg).unwrap(),
        &Tensor::from_f32(&gpu, &[n], &key).unwrap(),
        &Tensor::from_u32(&gpu, &[n], &val).unwrap(),
    )
    .unwrap();
    let len: Vec<u32> = sizes.iter().map(|&s| s as u32).collect();
    let start: Vec<u32> = len
        .iter()
        .scan(0u32, |acc, &l| {
            let s = *acc;
            *acc += l;
            Some(s)
        })
        .collect();
    let st = Tensor::from_u32(&gpu, &[sizes.len()], &start).unwrap();
    let ln = Tensor::from_u32(&gpu, &[sizes.len()], &len).unwrap();
    for bins in [1u32, 50, 100] {
        let got = rank_bins(&sorted.segment, &st, &ln, bins)
            .unwrap()
            .to_u32_vec()
            .unwrap();
        let mut want = Vec::with_capacity(n);
        for (s, &l) in sizes.iter().enumerate() {
            assert_eq!(seg.iter().filter(|&&x| x == s as u32).count(), l);
            for k in 0..l {
                // floor(k / (n_s + 1) * R), exactly.
                let b = (k as u64 * bins as u64) / (l as u64 + 1);
                assert!(b < bins as u64);
                want.push(b as u32);
            }
        }
        assert_eq!(got, want, "bins = {bins}");
    }
    // Segment ids outside the table get u32::MAX.
    let odd = Tensor::from_u32(&gpu, &[3], &[0, 0, 9]).unwrap();
    let st = Tensor::from_u32(&gpu, &[1], &[0]).unwrap();
    let ln = Tensor::from_u32(&gpu, &[1], &[2]).unwrap();
    let got = rank_bins(&odd, &st, &ln, 3).unwrap().to_u32_vec().unwrap();
    assert_eq!(got, [0, 1, u32::MAX]);
}
