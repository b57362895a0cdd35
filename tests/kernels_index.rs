//! One-hot, row gather/scatter, pick and unpick against CPU references.

mod common;

use common::{Rng, Tol, check_kernel, cpu};
use dynloss_wgpu::tensor::index::{gather_rows, one_hot, pick, scatter_rows, unpick};
use dynloss_wgpu::{DType, Error, Tensor};

/// Awkward (rows, cols) pairs: ones, primes, and sizes straddling a workgroup.
const SIZES: [(usize, usize); 6] = [(1, 1), (1, 7), (5, 1), (257, 3), (13, 100), (3, 1000)];

#[test]
fn one_hot_matches_cpu() {
    let gpu = common::gpu();
    let mut rng = Rng::new(20);
    for (b, c) in SIZES {
        let mut labels = rng.labels(b, c as u32);
        labels[0] = c as u32 + 5; // out of range: a zero row
        let lt = Tensor::from_u32(&gpu, &[b], &labels).unwrap();
        let want = cpu::one_hot(&labels, c);
        let got = check_kernel(
            &format!("one_hot [{b}, {c}]"),
            || one_hot(&lt, c),
            &want,
            Tol::EXACT,
        );
        assert_eq!(got.shape(), [b, c]);
    }
}

#[test]
fn gather_rows_matches_cpu() {
    let gpu = common::gpu();
    let mut rng = Rng::new(21);
    for (n, d) in SIZES {
        let src = rng.vec(n * d);
        let srct = Tensor::from_f32(&gpu, &[n, d], &src).unwrap();
        for b in [1usize, 3, 300] {
            let mut idx = rng.labels(b, n as u32);
            if b > 1 {
                idx[1] = n as u32; // out of range: a zero row
            }
            let it = Tensor::from_u32(&gpu, &[b], &idx).unwrap();
            let got = check_kernel(
                &format!("gather [{n}, {d}] by {b}"),
                || gather_rows(&srct, &it),
                &cpu::gather_rows(&src, d, &idx),
                Tol::EXACT,
            );
            assert_eq!(got.shape(), [b, d]);
        }
    }
}

#[test]
fn pick_and_unpick_match_cpu() {
    let gpu = common::gpu();
    let mut rng = Rng::new(22);
    for (b, c) in SIZES {
        let src = rng.vec(b * c);
        let mut labels = rng.labels(b, c as u32);
        if b > 1 {
            labels[b - 1] = u32::MAX;
        }
        let lt = Tensor::from_u32(&gpu, &[b], &labels).unwrap();
        let st = Tensor::from_f32(&gpu, &[b, c], &src).unwrap();
        let got = check_kernel(
            &format!("pick [{b}, {c}]"),
            || pick(&st, &lt),
            &cpu::pick(&src, c, &labels),
            Tol::EXACT,
        );
        assert_eq!(got.shape(), [b]);

        let grad = rng.vec(b);
        let gt = Tensor::from_f32(&gpu, &[b], &grad).unwrap();
        let got = check_kernel(
            &format!("unpick [{b}, {c}]"),
            || unpick(&gt, &lt, c),
            &cpu::unpick(&grad, &labels, c),
            Tol::EXACT,
        );
        assert_eq!(got.shape(), [b, c]);
    }
}

#[test]
fn scatter_rows_matches_cpu() {
    let gpu = common::gpu();
    let mut rng = Rng::new(23);
    for (b, d) in SIZES {
        for dst_rows in [b, b + 1, 3 * b + 2] {
            // Unique destination rows: a shuffled prefix of 0..dst_rows, the last one out of range.
            let mut perm: Vec<u32> = (0..dst_rows as u32).collect();
            for i in (1..perm.len()).rev() {
                perm.swap(i, rng.below(i as u32 + 1) as usize);
            }
            let mut idx = perm[..b].to_vec();
            if b > 1 {
                idx[b - 1] = dst_rows as u32 + 7;
            }
            let src = rng.vec(b * d);
            let (st, it) = (
                Tensor::from_f32(&gpu, &[b, d], &src).unwrap(),
                Tensor::from_u32(&gpu, &[b], &idx).unwrap(),
            );
            let got = check_kernel(
                &format!("scatter [{b}, {d}] into {dst_rows}"),
                || scatter_rows(dst_rows, &st, &it),
                &cpu::scatter_rows(&src, d, &idx, dst_rows),
                Tol::EXACT,
            );
            assert_eq!(got.shape(), [dst_rows, d]);
        }
    }
}

#[test]
fn empty_inputs_and_shape_errors() {
    let gpu = common::gpu();
    let none = Tensor::from_u32(&gpu, &[0], &[]).unwrap();
    assert_eq!(one_hot(&none, 10).unwrap().shape(), [0, 10]);
    let src = Tensor::zeros(&gpu, &[4, 3], DType::F32);
    assert_eq!(gather_rows(&src, &none).unwrap().shape(), [0, 3]);
    let z = scatter_rows(2, &Tensor::zeros(&gpu, &[0, 3], DType::F32), &none).unwrap();
    assert_eq!(z.to_f32_vec().unwrap(), vec![0.0; 6]);

    let idx3 = Tensor::zeros(&gpu, &[3], DType::U32);
    let f3 = Tensor::zeros(&gpu, &[3], DType::F32);
    let shape_err = |r: Result<Tensor, Error>| matches!(r, Err(Error::Shape { .. }));
    assert!(shape_err(one_hot(&f3, 4)));
    assert!(shape_err(gather_rows(&f3, &idx3)));
    assert!(shape_err(gather_rows(&src, &f3)));
    assert!(shape_err(pick(&src, &idx3)));
    assert!(shape_err(unpick(
        &Tensor::zeros(&gpu, &[4], DType::F32),
        &idx3,
        5
    )));
    assert!(shape_err(scatter_rows(5, &src, &idx3)));
}
