//! Elementwise maps, broadcasting, reductions, finiteness counts and pooling against CPU
//! references.

mod common;

use common::{Rng, Tol, assert_within, check_kernel, check_output, cpu, f64s, gpu};
use dynloss_wgpu::Tensor;
use dynloss_wgpu::tensor::elementwise::{Binary, Unary, binary, broadcast_to, fill, unary};
use dynloss_wgpu::tensor::finite::count_nonfinite;
use dynloss_wgpu::tensor::pool::{
    global_avg_pool, global_avg_pool_backward, shortcut_a, shortcut_a_backward,
};
use dynloss_wgpu::tensor::reduce::{mean_axes, sum_all, sum_axes};

#[test]
fn unary_ops_match_cpu() {
    let g = gpu();
    let mut rng = Rng::new(10);
    let ops = [
        Unary::Identity,
        Unary::Neg,
        Unary::Relu,
        Unary::ReluMask,
        Unary::Sigmoid,
        Unary::Exp,
        Unary::Log,
        Unary::Sqrt,
        Unary::Square,
        Unary::Recip,
        Unary::Abs,
        Unary::SigmoidGrad,
    ];
    for n in [1usize, 255, 257, 1000] {
        let mut x = rng.vec(n);
        for op in ops {
            if matches!(op, Unary::Log | Unary::Sqrt | Unary::Recip) {
                x.iter_mut().for_each(|v| *v = v.abs() + 0.1);
            }
            if op == Unary::Sigmoid {
                x[0] = -100.0; // must not overflow to NaN
            }
            let t = Tensor::from_f32(&g, &[n], &x).unwrap();
            let want: Vec<f64> = x
                .iter()
                .map(|&v| 2.0 * cpu::unary(op, v as f64) + 0.5)
                .collect();
            check_kernel(
                &format!("{op:?} n={n}"),
                || unary(&t, op, 2.0, 0.5),
                &want,
                Tol::abs_rel(1e-5, 1e-5),
            );
        }
    }
}

#[test]
fn large_elementwise_uses_a_folded_grid() {
    // 70,000 workgroups of 256 exceed the 65,535 per-dimension limit.
    let g = gpu();
    let n = 65_536 * 256 + 1000;
    let t = Tensor::full(&g, &[n], 1.5);
    let y = unary(&t, Unary::Square, 1.0, 0.0)
        .unwrap()
        .to_f32_vec()
        .unwrap();
    assert_eq!(y.len(), n);
    assert!(y.iter().all(|&v| v == 2.25), "every element written once");
}

#[test]
fn binary_ops_broadcast_like_numpy() {
    let g = gpu();
    let mut rng = Rng::new(11);
    let pairs: [(&[usize], &[usize]); 7] = [
        (&[5, 7], &[5, 7]),
        (&[2, 3, 4, 5], &[3, 1, 1]),
        (&[2, 3, 4, 5], &[1, 3, 1, 1]),
        (&[4, 1], &[1, 6]),
        (&[6], &[3, 6]),
        (&[1], &[9]),
        (&[3, 1, 5], &[2, 1]),
    ];
    let ops = [
        Binary::Add,
        Binary::Sub,
        Binary::Mul,
        Binary::Div,
        Binary::Max,
        Binary::AddRelu,
        Binary::ReluGrad,
        Binary::Gt,
        Binary::First,
    ];
    for (sa, sb) in pairs {
        let a = rng.vec(sa.iter().product());
        let b: Vec<f32> = rng
            .vec(sb.iter().product())
            .iter()
            .map(|v| v + 2.5 * v.signum())
            .collect();
        let ta = Tensor::from_f32(&g, sa, &a).unwrap();
        let tb = Tensor::from_f32(&g, sb, &b).unwrap();
        for op in ops {
            let (shape, want) = cpu::broadcast(&a, sa, &b, sb, op);
            let y = check_kernel(
                &format!("{op:?} {sa:?} {sb:?}"),
                || binary(&ta, &tb, op),
                &want,
                Tol::abs_rel(1e-6, 1e-5),
            );
            assert_eq!(y.shape(), shape.as_slice());
        }
    }
    let a = Tensor::zeros(&g, &[2, 3], dynloss_wgpu::DType::F32);
    let b = Tensor::zeros(&g, &[4], dynloss_wgpu::DType::F32);
    assert!(
        binary(&a, &b, Binary::Add).is_err(),
        "[2,3] and [4] do not broadcast"
    );
}

#[test]
fn reductions_over_any_axes_match_cpu_and_repeat_exactly() {
    let g = gpu();
    let mut rng = Rng::new(12);
    let cases: [(&[usize], &[usize]); 9] = [
        (&[4, 3, 5, 6], &[0, 2, 3]),
        (&[7, 10], &[1]),
        (&[7, 10], &[0]),
        (&[300, 500], &[1]),
        (&[5000, 3], &[0]),
        (&[1], &[0]),
        (&[2, 1, 3], &[0, 2]),
        (&[3, 4, 5], &[1]),
        (&[100000], &[0]),
    ];
    for (shape, axes) in cases {
        let x = rng.vec(shape.iter().product());
        let t = Tensor::from_f32(&g, shape, &x).unwrap();
        let got = sum_axes(&t, axes).unwrap().to_f32_vec().unwrap();
        let tol = 1e-5 * (x.len() as f64).sqrt();
        assert_within(
            &format!("sum {shape:?} over {axes:?}"),
            &got,
            &cpu::sum_axes(&x, shape, axes),
            Tol::abs_rel(tol, 1e-5),
        );
        let again = sum_axes(&t, axes).unwrap().to_f32_vec().unwrap();
        assert_eq!(got, again, "reductions are deterministic");
    }
    let x = rng.vec(24);
    let t = Tensor::from_f32(&g, &[2, 3, 4], &x).unwrap();
    let want: Vec<f64> = cpu::sum_axes(&x, &[2, 3, 4], &[0, 2])
        .iter()
        .map(|v| v / 8.0)
        .collect();
    check_kernel(
        "mean",
        || mean_axes(&t, &[0, 2]),
        &want,
        Tol::abs_rel(1e-6, 1e-5),
    );
    let total = sum_all(&t).unwrap().item().unwrap() as f64;
    assert!((total - x.iter().map(|&v| v as f64).sum::<f64>()).abs() < 1e-5);
    assert!(sum_axes(&t, &[3]).is_err(), "axis out of range");
    assert!(
        sum_axes(
            &Tensor::zeros(&g, &[2, 2, 2, 2, 2], dynloss_wgpu::DType::F32),
            &[0, 2, 4]
        )
        .is_err()
    );
}

#[test]
fn fill_and_full() {
    let g = gpu();
    let t = Tensor::zeros(&g, &[3, 5], dynloss_wgpu::DType::F32);
    assert!(t.to_f32_vec().unwrap().iter().all(|&v| v == 0.0));
    fill(&t, -2.0).unwrap();
    assert!(t.to_f32_vec().unwrap().iter().all(|&v| v == -2.0));
}

#[test]
fn global_average_pool_and_its_gradient() {
    let g = gpu();
    let mut rng = Rng::new(13);
    for (n, c, h, w) in [(2, 3, 4, 5), (1, 1, 1, 1), (3, 64, 8, 8)] {
        let x = rng.vec(n * c * h * w);
        let t = Tensor::from_f32(&g, &[n, c, h, w], &x).unwrap();
        let want: Vec<f64> = cpu::sum_axes(&x, &[n, c, h * w], &[2])
            .iter()
            .map(|v| v / (h * w) as f64)
            .collect();
        check_kernel(
            "gap",
            || global_avg_pool(&t),
            &want,
            Tol::abs_rel(1e-6, 1e-5),
        );
        let dy = rng.vec(n * c);
        let dyt = Tensor::from_f32(&g, &[n, c], &dy).unwrap();
        let want: Vec<f64> = (0..n * c * h * w)
            .map(|i| dy[i / (h * w)] as f64 / (h * w) as f64)
            .collect();
        check_kernel(
            "gap backward",
            || global_avg_pool_backward(&dyt, (h, w)),
            &want,
            Tol::abs_rel(1e-7, 1e-6),
        );
    }
}

#[test]
fn option_a_shortcut_and_its_gradient() {
    let g = gpu();
    let mut rng = Rng::new(14);
    for (n, c, h, w, cout) in [(2, 16, 8, 8, 32), (1, 3, 5, 7, 7), (1, 1, 1, 1, 2)] {
        let x = rng.vec(n * c * h * w);
        let t = Tensor::from_f32(&g, &[n, c, h, w], &x).unwrap();
        let y = shortcut_a(&t, cout).unwrap();
        let (oh, ow) = (h.div_ceil(2), w.div_ceil(2));
        assert_eq!(y.shape(), [n, cout, oh, ow]);
        let want = cpu::shortcut_a(&x, (n, c, h, w), cout);
        check_output("shortcut", &y, &want, Tol::EXACT);
        // The backward is the adjoint: <shortcut(x), dy> == <x, shortcut_backward(dy)>.
        let dy = rng.vec(want.len());
        let dyt = Tensor::from_f32(&g, &[n, cout, oh, ow], &dy).unwrap();
        let dx = shortcut_a_backward(&dyt, c, (h, w))
            .unwrap()
            .to_f32_vec()
            .unwrap();
        let lhs: f64 = want.iter().zip(&dy).map(|(a, b)| a * *b as f64).sum();
        let rhs: f64 = f64s(&x).iter().zip(&dx).map(|(a, b)| a * *b as f64).sum();
        assert!((lhs - rhs).abs() < 1e-4, "adjoint: {lhs} vs {rhs}");
    }
}

#[test]
fn broadcast_to_expands_like_numpy() {
    let g = gpu();
    let mut rng = Rng::new(15);
    for (from, to) in [
        (vec![3usize, 1], vec![2usize, 3, 4]),
        (vec![1], vec![5]),
        (vec![4], vec![3, 4]),
        (vec![2, 1, 3], vec![2, 5, 3]),
    ] {
        let x = rng.vec(from.iter().product());
        let t = Tensor::from_f32(&g, &from, &x).unwrap();
        let zeros = vec![0.0f32; to.iter().product()];
        let (_, want) = cpu::broadcast(&x, &from, &zeros, &to, Binary::Add);
        let y = check_kernel("broadcast_to", || broadcast_to(&t, &to), &want, Tol::EXACT);
        assert_eq!(y.shape(), to.as_slice());
    }
    let t = Tensor::zeros(&g, &[3], dynloss_wgpu::DType::F32);
    assert!(broadcast_to(&t, &[4]).is_err());
}

#[test]
fn max_pool_forward_backward_and_select() {
    use dynloss_wgpu::tensor::pool::{PoolGeom, max_pool, max_pool_backward, max_pool_select};
    let g = gpu();
    let mut rng = Rng::new(16);
    for (n, c, h, w, geom) in [
        (
            2,
            3,
            6,
            6,
            PoolGeom {
                k: 2,
                stride: 2,
                pad: 0,
            },
        ),
        (
            1,
            2,
            7,
            5,
            PoolGeom {
                k: 3,
                stride: 2,
                pad: 1,
            },
        ),
        (
            1,
            1,
            1,
            1,
            PoolGeom {
                k: 1,
                stride: 1,
                pad: 0,
            },
        ),
    ] {
        let x = rng.vec(n * c * h * w);
        let t = Tensor::from_f32(&g, &[n, c, h, w], &x).unwrap();
        let (y, arg) = max_pool(&t, geom).unwrap();
        let (oh, ow) = (geom.out_size(h).unwrap(), geom.out_size(w).unwrap());
        assert_eq!(y.shape(), [n, c, oh, ow]);
        let (want, want_arg) = cpu::max_pool(&x, n * c, (h, w), (oh, ow), geom);
        check_output("max_pool", &y, &want, Tol::EXACT);
        assert_eq!(arg.to_u32_vec().unwrap(), want_arg);
        // Backward routes dy to the winners (summing where windows overlap).
        let dy = rng.vec(want.len());
        let dyt = Tensor::from_f32(&g, &[n, c, oh, ow], &dy).unwrap();
        let dx = max_pool_backward(&dyt, &arg, (h, w), geom)
            .unwrap()
            .to_f32_vec()
            .unwrap();
        let mut want_dx = vec![0.0f64; x.len()];
        for (o, &a) in want_arg.iter().enumerate() {
            let pl = o / (oh * ow);
            want_dx[pl * h * w + a as usize] += dy[o] as f64;
        }
        assert_within("max_pool_backward", &dx, &want_dx, Tol::abs_rel(1e-6, 1e-6));
        check_kernel(
            "max_pool_select",
            || max_pool_select(&t, &arg),
            &want,
            Tol::EXACT,
        );
        // On another tensor (as the double backward uses it, on a gradient), select reads
        // that tensor at the winners of x, and it is the adjoint of the backward:
        // <max_pool_backward(dy), u> == <dy, max_pool_select(u)>.
        let u = rng.vec(x.len());
        let ut = Tensor::from_f32(&g, &[n, c, h, w], &u).unwrap();
        let sel = max_pool_select(&ut, &arg).unwrap().to_f32_vec().unwrap();
        let want_sel: Vec<f64> = want_arg
            .iter()
            .enumerate()
            .map(|(o, &a)| u[(o / (oh * ow)) * h * w + a as usize] as f64)
            .collect();
        assert_within(
            "max_pool_select of another tensor",
            &sel,
            &want_sel,
            Tol::EXACT,
        );
        let lhs: f64 = dx.iter().zip(&u).map(|(a, b)| *a as f64 * *b as f64).sum();
        let rhs: f64 = dy
            .iter()
            .zip(&sel)
            .map(|(a, b)| *a as f64 * *b as f64)
            .sum();
        assert!((lhs - rhs).abs() < 1e-4, "adjoint: {lhs} vs {rhs}");
    }
}

#[test]
fn nonfinite_counts_match_the_cpu() {
    let g = gpu();
    let mut rng = Rng::new(31);
    // Every kind of special value, including the largest finite, subnormals, negative zero
    // and a NaN with a payload, which a `x != x` test compiled with fast math could miss.
    let special = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::from_bits(0x7fc0_1234),
        f32::from_bits(0xffc0_0001),
        f32::MAX,
        f32::MIN,
        f32::MIN_POSITIVE / 4.0,
        -0.0,
        0.0,
    ];
    let mut tensors = Vec::new();
    let mut want = Vec::new();
    for (k, &n) in [1usize, 7, 255, 256, 257, 1000, 70_000].iter().enumerate() {
        let mut v = rng.vec(n);
        // Sprinkle specials at random positions; tensor 1 stays all finite.
        if k != 1 {
            for j in 0..(n / 50).max(1) {
                let at = rng.below(n as u32) as usize;
                v[at] = special[(j + k) % special.len()];
            }
        }
        want.push(v.iter().filter(|x| !x.is_finite()).count() as u32);
        tensors.push(Tensor::from_f32(&g, &[n], &v).unwrap());
    }
    let refs: Vec<&Tensor> = tensors.iter().collect();
    assert_eq!(count_nonfinite(&refs).unwrap(), want);
    assert!(want.iter().any(|&c| c > 1) && want[1] == 0);
    assert!(count_nonfinite(&[]).unwrap().is_empty());
}
