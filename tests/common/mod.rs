//! Shared test helpers: the GPU under test, seeded random data, tolerant comparisons, and
//! [`check_kernel`], which compares a kernel's output with its CPU reference (in [`cpu`]).
#![allow(dead_code)]

pub mod cpu;
pub mod reference;

use dynloss_wgpu::{Gpu, Result, Tensor};

/// The GPU the tests run on (honours WGPU_BACKEND / WGPU_ADAPTER_NAME).
pub fn gpu() -> Gpu {
    Gpu::default_device().unwrap_or_else(|e| panic!("tests need a GPU adapter: {e}"))
}

/// A tiny deterministic generator (SplitMix64) so test data never depends on a crate's stream.
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.uniform()
    }
    /// Uniform integer in [0, n).
    pub fn below(&mut self, n: u32) -> u32 {
        (self.next_u64() % n as u64) as u32
    }
    /// `n` values uniform in [-1, 1).
    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.range(-1.0, 1.0)).collect()
    }
    /// `n` labels in [0, classes).
    pub fn labels(&mut self, n: usize, classes: u32) -> Vec<u32> {
        (0..n).map(|_| self.below(classes)).collect()
    }
}

/// How far a kernel's output may be from its CPU reference, entry by entry.
#[derive(Debug, Clone, Copy)]
pub enum Tol<'a> {
    /// |got - want| <= atol + rtol |want|.
    AbsRel { atol: f64, rtol: f64 },
    /// |got - want| <= rel S, where S (one per entry) is the sum of the absolute terms the
    /// entry is a sum of: the bound scales with the problem, not with a cancelling result.
    Terms { rel: f64, terms: &'a [f64] },
}

impl Tol<'static> {
    /// Bit-for-bit equal values (a copy, a selection, a maximum).
    pub const EXACT: Tol<'static> = Tol::AbsRel {
        atol: 0.0,
        rtol: 0.0,
    };

    /// |got - want| <= atol + rtol |want|.
    pub const fn abs_rel(atol: f64, rtol: f64) -> Tol<'static> {
        Tol::AbsRel { atol, rtol }
    }
}

/// Asserts `got` within `tol` of `want` entry by entry (same length; a finite value never
/// stands for a non-finite one), naming the first entry outside; prints the largest error
/// (shown with `--nocapture`) and returns it, in `tol`'s units: absolute for `AbsRel`,
/// relative to S for `Terms`.
pub fn assert_within(what: &str, got: &[f32], want: &[f64], tol: Tol) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = (0.0f64, 0usize);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let g = g as f64;
        let err = (g - w).abs();
        let (ok, size) = match tol {
            Tol::AbsRel { atol, rtol } => (
                err <= atol + rtol * w.abs() && g.is_finite() == w.is_finite(),
                err,
            ),
            Tol::Terms { rel, terms } => {
                let s = terms[i];
                (err <= rel * s + 1e-30, if s > 0.0 { err / s } else { 0.0 })
            }
        };
        match tol {
            Tol::AbsRel { .. } => assert!(ok, "{what}: index {i}: got {g}, want {w}"),
            Tol::Terms { terms, .. } => assert!(
                ok,
                "{what}: entry {i}: {g} vs {w} (terms of size {})",
                terms[i]
            ),
        }
        if size > worst.0 {
            worst = (size, i);
        }
    }
    let unit = match tol {
        Tol::AbsRel { .. } => "|got - want|",
        Tol::Terms { .. } => "|got - want| / S",
    };
    println!("{what}: largest {unit} {:.2e} (entry {})", worst.0, worst.1);
    worst.0
}

/// Runs a kernel on GPU inputs (`run`), reads its output back and compares it with the CPU
/// reference `want` under `tol` (see [`assert_within`]); returns the output for shape checks.
pub fn check_kernel(
    what: &str,
    run: impl FnOnce() -> Result<Tensor>,
    want: &[f64],
    tol: Tol,
) -> Tensor {
    let out = run().unwrap_or_else(|e| panic!("{what}: {e}"));
    check_output(what, &out, want, tol);
    out
}

/// [`check_kernel`] for an output already computed (kernels with several outputs, or that
/// update a tensor in place); returns the largest error.
pub fn check_output(what: &str, out: &Tensor, want: &[f64], tol: Tol) -> f64 {
    let got = out
        .to_f32_vec()
        .unwrap_or_else(|e| panic!("{what}: reading back: {e}"));
    assert_within(what, &got, want, tol)
}

/// Asserts |got - want| <= atol + rtol * |want| elementwise, naming the first bad index.
pub fn assert_close(what: &str, got: &[f32], want: &[f64], atol: f64, rtol: f64) {
    assert_within(what, got, want, Tol::abs_rel(atol, rtol));
}

/// f32 slice to f64 vector.
pub fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// A temporary folder, unique per process and call, removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    /// Creates `dynloss-<tag>-<pid>-<n>` in the system temp folder.
    pub fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "dynloss-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
