//! Winograd F(2x2, 3x3) and F(4x4, 3x3) convolutions against the plain CPU convolution (f64)
//! and beside the direct kernels, forward and input gradient (and F(4x4)'s weight gradient),
//! on ResNet-like and awkward shapes (odd planes
//! that leave half tiles, channel counts that are not multiples of 4, every padding 0-2).
//!
//! Tolerance per entry: |got - want| <= 1e-5 * S, where S is the sum of |x| |w| over the
//! entry's window (the size of the terms the sum is made of, so the bound scales with the
//! problem rather than with a cancelling result). F(2x2, 3x3) adds at most 4 input values in
//! its input transform and 9 weights (halved) in its filter transform before the products and
//! 9 products after them, so each term carries about 20 roundings (u = 6e-8): 1.2e-6 of S,
//! with a margin of 8 for the order of the C-long sums. Both kernels' largest error in units
//! of S is printed with `--nocapture` (Winograd's is a few times the direct kernel's).

mod common;

use common::cpu::{self, Conv};
use common::{Rng, Tol, check_output, gpu};
use dynloss_wgpu::Tensor;
use dynloss_wgpu::gpu::ConvAlgo;
use dynloss_wgpu::tensor::conv::{ConvGeom, conv2d, conv2d_input_grad, conv2d_weight_grad};
use dynloss_wgpu::tensor::winograd::{self, Tile};

/// Relative tolerances against the sum of absolute terms (see the module comment).
const TOL_F2: f64 = 1e-5;
const TOL_F4: f64 = 1e-4;
const TILES: [(Tile, f64); 2] = [(Tile::F2, TOL_F2), (Tile::F4, TOL_F4)];

/// (n, ci, h, w, co, pad) that every direction is checked on: half tiles, every padding,
/// channel counts that are not multiples of 4, a single pixel.
const SHAPES: [(usize, usize, usize, usize, usize, usize); 5] = [
    (2, 16, 8, 8, 16, 1),
    (3, 5, 7, 9, 6, 1),
    (1, 3, 5, 5, 7, 0),
    (2, 4, 6, 3, 3, 2),
    (1, 1, 1, 1, 1, 1),
];

#[test]
fn winograd_forward_and_input_grad_match_the_cpu() {
    let g = gpu();
    // The conv entry points as the direct reference beside the explicit Winograd calls.
    g.set_conv_algo(ConvAlgo::Direct);
    let mut rng = Rng::new(31);
    for (n, ci, h, wd, co, pad) in SHAPES.into_iter().chain([(4, 32, 4, 4, 64, 1)]) {
        let what = format!("n{n} {ci}->{co} {h}x{wd} pad {pad}");
        let x = rng.vec(n * ci * h * wd);
        let w = rng.vec(co * ci * 9);
        let xt = Tensor::from_f32(&g, &[n, ci, h, wd], &x).unwrap();
        let wt = Tensor::from_f32(&g, &[co, ci, 3, 3], &w).unwrap();
        let conv = Conv::k3(n, ci, h, wd, co, pad);
        let (oh, ow) = conv.out();
        let (want, scale) = cpu::conv2d(&x, &w, &conv);
        let geom = ConvGeom { stride: 1, pad };
        let direct = conv2d(&xt, &wt, geom).unwrap();
        let e_d = check_output(
            &format!("{what}: direct forward"),
            &direct,
            &want,
            Tol::Terms {
                rel: TOL_F2,
                terms: &scale,
            },
        );
        let mut line = format!("{what}: forward error / S: direct {e_d:.1e}");
        for (tile, tol) in TILES {
            let wino = winograd::conv2d(&xt, &wt, pad, tile).unwrap();
            assert_eq!(wino.shape(), &[n, co, oh, ow], "{what}: shape");
            let e = check_output(
                &format!("{what}: {tile:?} forward"),
                &wino,
                &want,
                Tol::Terms {
                    rel: tol,
                    terms: &scale,
                },
            );
            line += &format!(", {tile:?} {e:.1e}");
        }
        println!("{line}");

        // Input gradient: the convolution of dy with the flipped filter, padded by 2 - pad.
        let dy = rng.vec(n * co * oh * ow);
        let dyt = Tensor::from_f32(&g, &[n, co, oh, ow], &dy).unwrap();
        let wf = cpu::flipped(&w, co, ci);
        let back = Conv::k3(n, co, oh, ow, ci, 2 - pad);
        assert_eq!(back.out(), (h, wd), "{what}: input-gradient plane");
        let (want, scale) = cpu::conv2d(&dy, &wf, &back);
        let direct = conv2d_input_grad(&dyt, &wt, (h, wd), geom).unwrap();
        let e_d = check_output(
            &format!("{what}: direct input grad"),
            &direct,
            &want,
            Tol::Terms {
                rel: TOL_F2,
                terms: &scale,
            },
        );
        let mut line = format!("{what}: input-grad error / S: direct {e_d:.1e}");
        for (tile, tol) in TILES {
            let wino = winograd::conv2d_input_grad(&dyt, &wt, pad, tile).unwrap();
            assert_eq!(
                wino.shape(),
                &[n, ci, h, wd],
                "{what}: input-gradient shape"
            );
            let e = check_output(
                &format!("{what}: {tile:?} input grad"),
                &wino,
                &want,
                Tol::Terms {
                    rel: tol,
                    terms: &scale,
                },
            );
            line += &format!(", {tile:?} {e:.1e}");
        }
        println!("{line}");
    }
}

/// F(4x4)'s weight gradient (the adjoint transforms around products whose 8x8 blocks are
/// summed by up to 64 lanes over interleaved tiles) against the CPU, beside the direct kernel.
#[test]
fn winograd_weight_grad_matches_the_cpu() {
    let g = gpu();
    g.set_conv_algo(ConvAlgo::Direct);
    let mut rng = Rng::new(41);
    // The shared shapes, then blocks cut by the channel counts on both sides with 275 tiles
    // over 16 lanes (not a multiple) and 27 tiles over 8 lanes.
    let more = [(11, 20, 17, 17, 13, 1), (3, 40, 9, 9, 24, 1)];
    for (n, ci, h, wd, co, pad) in SHAPES.into_iter().chain(more) {
        let what = format!("n{n} {ci}->{co} {h}x{wd} pad {pad}");
        let conv = Conv::k3(n, ci, h, wd, co, pad);
        let (oh, ow) = conv.out();
        let x = rng.vec(n * ci * h * wd);
        let dy = rng.vec(n * co * oh * ow);
        let xt = Tensor::from_f32(&g, &[n, ci, h, wd], &x).unwrap();
        let dyt = Tensor::from_f32(&g, &[n, co, oh, ow], &dy).unwrap();
        let (want, scale) = cpu::conv2d_weight_grad(&x, &dy, &conv);
        let geom = ConvGeom { stride: 1, pad };
        let direct = conv2d_weight_grad(&xt, &dyt, (3, 3), geom).unwrap();
        let e_d = check_output(
            &format!("{what}: direct weight grad"),
            &direct,
            &want,
            Tol::Terms {
                rel: TOL_F2,
                terms: &scale,
            },
        );
        let wino = winograd::conv2d_weight_grad(&xt, &dyt, pad).unwrap();
        assert_eq!(wino.shape(), &[co, ci, 3, 3], "{what}: shape");
        let e = check_output(
            &format!("{what}: F4 weight grad"),
            &wino,
            &want,
            Tol::Terms {
                rel: TOL_F4,
                terms: &scale,
            },
        );
        println!("{what}: weight-grad error / S: direct {e_d:.1e}, F4 {e:.1e}");
    }
}

#[test]
fn winograd_refuses_what_it_cannot_compute() {
    let g = gpu();
    let x = Tensor::from_f32(&g, &[1, 2, 4, 4], &[0.5; 32]).unwrap();
    let w5 = Tensor::from_f32(&g, &[2, 2, 5, 5], &[0.5; 100]).unwrap();
    let e = winograd::conv2d(&x, &w5, 1, Tile::F2)
        .unwrap_err()
        .to_string();
    assert!(e.contains("3x3"), "{e}");
    let w3 = Tensor::from_f32(&g, &[2, 3, 3, 3], &[0.5; 54]).unwrap();
    let e = winograd::conv2d(&x, &w3, 1, Tile::F4)
        .unwrap_err()
        .to_string();
    assert!(e.contains("channels"), "{e}");
    let w = Tensor::from_f32(&g, &[2, 2, 3, 3], &[0.5; 36]).unwrap();
    assert!(winograd::conv2d(&x, &w, 3, Tile::F2).is_err(), "padding 3");
    assert!(winograd::applies((3, 3), 1, 1));
    assert!(!winograd::applies((3, 3), 2, 1));
    assert!(!winograd::applies((1, 1), 1, 0));
}

/// The convolution entry points follow the GPU's algorithm: Winograd (four dispatches: input
/// and filter transforms, the batched products, the output transform) where it applies and is
/// asked for, the direct kernel (one dispatch) otherwise, with the same results.
#[test]
fn conv_entry_points_follow_the_chosen_algorithm() {
    let g = gpu();
    let mut rng = Rng::new(5);
    let x = Tensor::from_f32(&g, &[2, 16, 8, 8], &rng.vec(2 * 16 * 64)).unwrap();
    let w = Tensor::from_f32(&g, &[16, 16, 3, 3], &rng.vec(16 * 16 * 9)).unwrap();
    let dy = Tensor::from_f32(&g, &[2, 16, 8, 8], &rng.vec(2 * 16 * 64)).unwrap();
    let s1 = ConvGeom { stride: 1, pad: 1 };
    let s2 = ConvGeom { stride: 2, pad: 1 };
    let dispatches = |f: &dyn Fn() -> Tensor| {
        let before = g.stats().dispatches;
        let out = f().to_f32_vec().unwrap();
        (g.stats().dispatches - before, out)
    };
    let fwd = || conv2d(&x, &w, s1).unwrap();
    let bwd = || conv2d_input_grad(&dy, &w, (8, 8), s1).unwrap();
    let wgrad = || conv2d_weight_grad(&x, &dy, (3, 3), s1).unwrap();
    let strided = || conv2d(&x, &w, s2).unwrap();
    g.set_conv_algo(ConvAlgo::Direct);
    let (n_fd, y_direct) = dispatches(&fwd);
    let (n_bd, dx_direct) = dispatches(&bwd);
    let (n_wd, dw_direct) = dispatches(&wgrad);
    g.set_conv_algo(ConvAlgo::Winograd);
    let (n_fw, y_wino) = dispatches(&fwd);
    let (n_bw, dx_wino) = dispatches(&bwd);
    let (n_ww, dw_wino) = dispatches(&wgrad);
    let (n_s2, _) = dispatches(&strided);
    assert_eq!((n_fd, n_bd, n_wd), (1, 1, 1), "direct");
    // Weight gradient: input and output-gradient transforms, products, their sum over the
    // lanes, filter transform.
    assert_eq!((n_fw, n_bw, n_ww), (4, 4, 5), "winograd");
    assert_eq!(n_s2, 1, "a strided convolution stays direct");
    for (a, b) in y_direct
        .iter()
        .zip(&y_wino)
        .chain(dx_direct.iter().zip(&dx_wino))
        .chain(dw_direct.iter().zip(&dw_wino))
    {
        assert!((a - b).abs() <= 1e-4 * (1.0 + a.abs()), "{a} vs {b}");
    }
    // Auto follows the measured rule.
    g.set_conv_algo(ConvAlgo::Auto);
    let (n_auto, _) = dispatches(&fwd);
    let want = if winograd::pays(2, 16, 16, (8, 8)).is_some() {
        4
    } else {
        1
    };
    assert_eq!(n_auto, want, "auto");
    // The rule: F(4x4) from 16 channels and 512 tiles on.
    assert_eq!(winograd::pays(128, 16, 16, (8, 8)), Some(Tile::F4));
    assert_eq!(winograd::pays(128, 3, 16, (32, 32)), None);
    assert_eq!(winograd::pays(32, 16, 16, (12, 12)), None);
}
