//! Matmul and the convolution family against f64 CPU references, on awkward sizes.

mod common;

use common::cpu::{self, Conv};
use common::{Rng, Tol, check_output, gpu};
use dynloss_wgpu::Tensor;
use dynloss_wgpu::gpu::Tiling;
use dynloss_wgpu::tensor::conv::{ConvGeom, conv2d, conv2d_input_grad, conv2d_weight_grad};
use dynloss_wgpu::tensor::matmul::{matmul, matmul_acc};

/// Both kernel shapes, whatever the adapter's own: each test runs its cases under each.
const TILINGS: [Tiling; 2] = [Tiling::Lanes, Tiling::Workgroup];

#[test]
fn matmul_matches_cpu_on_awkward_shapes_and_transposes() {
    let g = gpu();
    let mut rng = Rng::new(1);
    let shapes = [
        (1, 1, 1),
        (1, 7, 1),
        (3, 5, 2),
        (65, 33, 67),
        (64, 64, 64),
        (130, 9, 5),
        (2, 300, 3),
        (131, 17, 140),
    ];
    for (tiling, &(m, k, n)) in TILINGS
        .iter()
        .flat_map(|t| shapes.iter().map(move |s| (t, s)))
    {
        g.set_tiling(*tiling);
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let a = rng.vec(m * k);
            let b = rng.vec(k * n);
            let sa = if ta { [k, m] } else { [m, k] };
            let sb = if tb { [n, k] } else { [k, n] };
            let at = Tensor::from_f32(&g, &sa, &a).unwrap();
            let bt = Tensor::from_f32(&g, &sb, &b).unwrap();
            let c = matmul(&at, &bt, ta, tb).unwrap();
            assert_eq!(c.shape(), [m, n]);
            let want = cpu::matmul(&a, &b, m, k, n, ta, tb);
            let what = format!("matmul {m}x{k}x{n} ta={ta} tb={tb} {tiling:?}");
            check_output(&what, &c, &want, Tol::abs_rel(1e-5, 1e-4));
        }
    }
}

#[test]
fn matmul_accumulates_and_rejects_bad_shapes() {
    let g = gpu();
    let mut rng = Rng::new(2);
    let (m, k, n) = (5, 6, 7);
    let a = rng.vec(m * k);
    let b = rng.vec(k * n);
    let c0 = rng.vec(m * n);
    let at = Tensor::from_f32(&g, &[m, k], &a).unwrap();
    let bt = Tensor::from_f32(&g, &[k, n], &b).unwrap();
    let want: Vec<f64> = cpu::matmul(&a, &b, m, k, n, false, false)
        .iter()
        .zip(&c0)
        .map(|(x, y)| x + *y as f64)
        .collect();
    for tiling in TILINGS {
        g.set_tiling(tiling);
        let ct = Tensor::from_f32(&g, &[m, n], &c0).unwrap();
        matmul_acc(&ct, &at, &bt, false, false).unwrap();
        let what = format!("matmul_acc {tiling:?}");
        check_output(&what, &ct, &want, Tol::abs_rel(1e-5, 1e-4));
    }
    assert!(
        matmul(&at, &at, false, false).is_err(),
        "5x6 @ 5x6 must be rejected"
    );
}

#[test]
fn conv_family_matches_cpu_on_resnet_like_and_awkward_shapes() {
    let g = gpu();
    let mut rng = Rng::new(3);
    let cases = [
        // ResNet-32 stem and stage shapes (tiny batch), 1x1 kernels, stride 2, odd sizes.
        Conv {
            n: 2,
            ci: 3,
            h: 8,
            w: 8,
            co: 16,
            k: 3,
            stride: 1,
            pad: 1,
        },
        Conv {
            n: 2,
            ci: 16,
            h: 8,
            w: 8,
            co: 32,
            k: 3,
            stride: 2,
            pad: 1,
        },
        Conv {
            n: 1,
            ci: 5,
            h: 7,
            w: 5,
            co: 6,
            k: 3,
            stride: 2,
            pad: 1,
        },
        Conv {
            n: 3,
            ci: 4,
            h: 5,
            w: 6,
            co: 7,
            k: 1,
            stride: 1,
            pad: 0,
        },
        Conv {
            n: 1,
            ci: 1,
            h: 1,
            w: 1,
            co: 1,
            k: 1,
            stride: 1,
            pad: 0,
        },
        Conv {
            n: 2,
            ci: 3,
            h: 9,
            w: 9,
            co: 5,
            k: 7,
            stride: 2,
            pad: 3,
        },
        Conv {
            n: 1,
            ci: 2,
            h: 6,
            w: 6,
            co: 3,
            k: 3,
            stride: 3,
            pad: 0,
        },
        // Channels >= 8 but not a multiple of the 8-channel register block (the second
        // block half full), more output channels than one weight-gradient block of 16.
        Conv {
            n: 3,
            ci: 12,
            h: 7,
            w: 9,
            co: 20,
            k: 3,
            stride: 2,
            pad: 1,
        },
        // More output pixels than one workgroup of the forward / input-gradient kernels
        // covers (256 invocations x 8 pixels).
        Conv {
            n: 5,
            ci: 9,
            h: 24,
            w: 24,
            co: 10,
            k: 3,
            stride: 1,
            pad: 1,
        },
        Conv {
            n: 40,
            ci: 2,
            h: 6,
            w: 6,
            co: 3,
            k: 3,
            stride: 1,
            pad: 1,
        },
        // More than one 64-row tile of the tiled kernels' GEMM in every direction (70 output
        // and 66 input channels; weight gradient 594 columns) and many steps along K.
        Conv {
            n: 2,
            ci: 66,
            h: 5,
            w: 4,
            co: 70,
            k: 3,
            stride: 2,
            pad: 1,
        },
    ];
    for (tiling, c) in TILINGS
        .iter()
        .flat_map(|t| cases.iter().map(move |c| (t, c)))
    {
        g.set_tiling(*tiling);
        let geom = ConvGeom {
            stride: c.stride,
            pad: c.pad,
        };
        let oh = geom.out_size(c.h, c.k).unwrap();
        let ow = geom.out_size(c.w, c.k).unwrap();
        let x = rng.vec(c.n * c.ci * c.h * c.w);
        let wt = rng.vec(c.co * c.ci * c.k * c.k);
        let dy = rng.vec(c.n * c.co * oh * ow);
        let xt = Tensor::from_f32(&g, &[c.n, c.ci, c.h, c.w], &x).unwrap();
        let wtt = Tensor::from_f32(&g, &[c.co, c.ci, c.k, c.k], &wt).unwrap();
        let dyt = Tensor::from_f32(&g, &[c.n, c.co, oh, ow], &dy).unwrap();
        let what = format!(
            "n{} ci{} {}x{} co{} k{} s{} p{} {tiling:?}",
            c.n, c.ci, c.h, c.w, c.co, c.k, c.stride, c.pad
        );

        let y = conv2d(&xt, &wtt, geom).unwrap();
        assert_eq!(y.shape(), [c.n, c.co, oh, ow]);
        check_output(
            &format!("forward {what}"),
            &y,
            &cpu::conv2d(&x, &wt, c).0,
            Tol::abs_rel(1e-5, 1e-4),
        );

        assert_eq!(c.out(), (oh, ow), "{what}: reference output size");
        let dx_want = cpu::conv2d_input_grad(&wt, &dy, c);
        let (dw_want, _) = cpu::conv2d_weight_grad(&x, &dy, c);
        let dx = conv2d_input_grad(&dyt, &wtt, (c.h, c.w), geom).unwrap();
        assert_eq!(dx.shape(), [c.n, c.ci, c.h, c.w]);
        check_output(
            &format!("input_grad {what}"),
            &dx,
            &dx_want,
            Tol::abs_rel(1e-5, 1e-4),
        );
        let dw = conv2d_weight_grad(&xt, &dyt, (c.k, c.k), geom).unwrap();
        assert_eq!(dw.shape(), [c.co, c.ci, c.k, c.k]);
        check_output(
            &format!("weight_grad {what}"),
            &dw,
            &dw_want,
            Tol::abs_rel(1e-4, 1e-4),
        );
    }
}

#[test]
fn conv_rejects_mismatched_shapes() {
    let g = gpu();
    let x = Tensor::zeros(&g, &[1, 3, 4, 4], dynloss_wgpu::DType::F32);
    let w = Tensor::zeros(&g, &[8, 2, 3, 3], dynloss_wgpu::DType::F32);
    let geom = ConvGeom { stride: 1, pad: 1 };
    assert!(conv2d(&x, &w, geom).is_err());
    let w5 = Tensor::zeros(&g, &[8, 3, 7, 7], dynloss_wgpu::DType::F32);
    assert!(conv2d(&x, &w5, ConvGeom { stride: 1, pad: 0 }).is_err());
}
