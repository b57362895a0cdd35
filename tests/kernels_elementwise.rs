//! Elementwise maps, broadcasting, reductions, finiteness counts and pooling against CPU
//! references.

mod common;

use common::{Rng, assert_close, f64s, gpu};
use dynloss_wgpu::Tensor;
use dynloss_wgpu::tensor::elementwise::{
    Binary, Unary, binary, broadcast_shape, broadcast_to, fill, unary,
};
use dynloss_wgpu::tensor::finite::count_nonfinite;
use dynloss_wgpu::tensor::pool::{
    global_avg_pool, global_avg_pool_backward, shortcut_a, shortcut_a_backward,
};
use dynloss_wgpu::tensor::reduce::{mean_axes, sum_all, sum_axes};

fn cpu_unary(op: Unary, x: f64) -> f64 {
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    match op {
        Unary::Identity => x,
        Unary::Neg => -x,
        Unary::Relu => x.max(0.0),
        Unary::ReluMask => (x > 0.0) as u8 as f64,
        Unary::Sigmoid => sig(x),
        Unary::Exp => x.exp(),
        Unary::Log => x.ln(),
        Unary::Sqrt => x.sqrt(),
        Unary::Square => x * x,
        Unary::Recip => 1.0 / x,
        Unary::Abs => x.abs(),
        Unary::SigmoidGrad => sig(x) * (1.0 - sig(x)),
    }
}

fn cpu_binary(op: Binary, a: f64, b: f64) -> f64 {
    match op {
        Binary::Add => a + b,
        Binary::Sub => a - b,
        Binary::Mul => a * b,
        Binary::Div => a / b,
        Binary::Max => a.max(b),
        Binary::AddRelu => (a + b).max(0.0),
        Binary::ReluGrad => {
            if b > 0.0 {
                a
            } else {
                0.0
            }
        }
        Binary::Gt => (a > b) as u8 as f64,
        Binary::First => a,
    }
}

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
            let y = unary(&t, op, 2.0, 0.5).unwrap().to_f32_vec().unwrap();
            let want: Vec<f64> = x
                .iter()
                .map(|&v| 2.0 * cpu_unary(op, v as f64) + 0.5)
                .collect();
            assert_close(&format!("{op:?} n={n}"), &y, &want, 1e-5, 1e-5);
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

fn cpu_broadcast(
    a: &[f32],
    sa: &[usize],
    b: &[f32],
    sb: &[usize],
    op: Binary,
) -> (Vec<usize>, Vec<f64>) {
    let out = broadcast_shape(sa, sb).unwrap();
    let r = out.len();
    let pad = |s: &[usize]| {
        let mut v = vec![1; r - s.len()];
        v.extend_from_slice(s);
        v
    };
    let (pa, pb) = (pad(sa), pad(sb));
    let n: usize = out.iter().product();
    let mut res = Vec::with_capacity(n);
    for i in 0..n {
        let mut rem = i;
        let mut idx = vec![0; r];
        for d in (0..r).rev() {
            idx[d] = rem % out[d];
            rem /= out[d];
        }
        let lin = |p: &[usize]| {
            let mut o = 0;
            for d in 0..r {
                o = o * p[d] + if p[d] == 1 { 0 } else { idx[d] };
            }
            o
        };
        res.push(cpu_binary(op, a[lin(&pa)] as f64, b[lin(&pb)] as f64));
    }
    (out, res)
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
            let y = binary(&ta, &tb, op).unwrap();
            let (shape, want) = cpu_broadcast(&a, sa, &b, sb, op);
            assert_eq!(y.shape(), shape.as_slice());
            assert_close(
                &format!("{op:?} {sa:?} {sb:?}"),
                &y.to_f32_vec().unwrap(),
                &want,
                1e-6,
                1e-5,
            );
        }
    }
    let a = Tensor::zeros(&g, &[2, 3], dynloss_wgpu::DType::F32);
    let b = Tensor::zeros(&g, &[4], dynloss_wgpu::DType::F32);
    assert!(
        binary(&a, &b, Binary::Add).is_err(),
        "[2,3] and [4] do not broadcast"
    );
}

fn cpu_sum(x: &[f32], shape: &[usize], axes: &[usize]) -> Vec<f64> {
    let kept: Vec<usize> = (0..shape.len()).filter(|i| !axes.contains(i)).collect();
    let out_n: usize = kept.iter().map(|&i| shape[i]).product();
    let mut out = vec![0.0; out_n];
    for (i, &v) in x.iter().enumerate() {
        let mut rem = i;
        let mut idx = vec![0; shape.len()];
        for d in (0..shape.len()).rev() {
            idx[d] = rem % shape[d];
            rem /= shape[d];
        }
        let mut o = 0;
        for &d in &kept {
            o = o * shape[d] + idx[d];
        }
        out[o] += v as f64;
    }
    out
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
        let s = sum_axes(&t, axes).unwrap();
        let got = s.to_f32_vec().unwrap();
        let tol = 1e-5 * (x.len() as f64).sqrt();
        assert_close(
            &format!("sum {shape:?} over {axes:?}"),
            &got,
            &cpu_sum(&x, shape, axes),
            tol,
            1e-5,
        );
        let again = sum_axes(&t, axes).unwrap().to_f32_vec().unwrap();
        assert_eq!(got, again, "reductions are deterministic");
    }
    let x = rng.vec(24);
    let t = Tensor::from_f32(&g, &[2, 3, 4], &x).unwrap();
    let m = mean_axes(&t, &[0, 2]).unwrap().to_f32_vec().unwrap();
    let want: Vec<f64> = cpu_sum(&x, &[2, 3, 4], &[0, 2])
        .iter()
        .map(|v| v / 8.0)
        .collect();
    assert_close("mean", &m, &want, 1e-6, 1e-5);
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
        let y = global_avg_pool(&t).unwrap();
        let want: Vec<f64> = cpu_sum(&x, &[n, c, h * w], &[2])
            .iter()
            .map(|v| v / (h * w) as f64)
            .collect();
        assert_close("gap", &y.to_f32_vec().unwrap(), &want, 1e-6, 1e-5);
        let dy = rng.vec(n * c);
        let dyt = Tensor::from_f32(&g, &[n, c], &dy).unwrap();
        let dx = global_avg_pool_backward(&dyt, (h, w)).unwrap();
        let want: Vec<f64> = (0..n * c * h * w)
            .map(|i| dy[i / (h * w)] as f64 / (h * w) as f64)
            .collect();
        assert_close("gap backward", &dx.to_f32_vec().unwrap(), &want, 1e-7, 1e-6);
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
        let pad = (cout - c) / 2;
        let mut want = vec![0.0f64; n * cout * oh * ow];
        for b in 0..n {
            for ch in 0..c {
                for i in 0..oh {
                    for j in 0..ow {
                        want[((b * cout + ch + pad) * oh + i) * ow + j] =
                            x[((b * c + ch) * h + 2 * i) * w + 2 * j] as f64;
                    }
                }
            }
        }
        assert_close("shortcut", &y.to_f32_vec().unwrap(), &want, 0.0, 0.0);
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
        let y = broadcast_to(&t, &to).unwrap();
        assert_eq!(y.shape(), to.as_slice());
        let zeros = vec![0.0f32; to.iter().product()];
        let (_, want) = cpu_broadcast(&x, &from, &zeros, &to, Binary::Add);
        assert_close("broadcast_to", &y.to_f32_vec().unwrap(), &want, 0.0, 0.0);
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
        let mut want = vec![0.0f64; n * c * oh * ow];
        let mut want_arg = vec![0u32; want.len()];
        for pl in 0..n * c {
            for i in 0..oh {
                for j in 0..ow {
                    let mut best = f64::NEG_INFINITY;
                    let mut at = 0;
                    for a in 0..geom.k {
                        for b in 0..geom.k {
                            let (yy, xx) = (
                                (i * geom.stride + a) as isize - geom.pad as isize,
                                (j * geom.stride + b) as isize - geom.pad as isize,
                            );
                            if yy < 0 || xx < 0 || yy >= h as isize || xx >= w as isize {
                                continue;
                            }
                            let v = x[pl * h * w + yy as usize * w + xx as usize] as f64;
                            if v > best {
                                best = v;
                                at = yy as usize * w + xx as usize;
                            }
                        }
                    }
                    want[(pl * oh + i) * ow + j] = best;
                    want_arg[(pl * oh + i) * ow + j] = at as u32;
                }
            }
        }
        assert_close("max_pool", &y.to_f32_vec().unwrap(), &want, 0.0, 0.0);
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
        assert_close("max_pool_backward", &dx, &want_dx, 1e-6, 1e-6);
        let sel = max_pool_select(&t, &arg).unwrap().to_f32_vec().unwrap();
        assert_close("max_pool_select", &sel, &want, 0.0, 0.0);
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
        assert_close(
            "max_pool_select of another tensor",
            &sel,
            &want_sel,
            0.0,
            0.0,
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
