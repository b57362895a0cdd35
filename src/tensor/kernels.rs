//! The registry of every pipeline the launchers can create: (shader family, entry point,
//! override constants). Each launcher file lists its own kernels next to their definitions,
//! deriving specialisation constants with the same functions its launches use, and every
//! launch is checked against this list, so a kernel cannot run unless the shader-translation
//! and limits tests (which iterate the list) have seen it.

use std::collections::HashSet;
use std::sync::OnceLock;

use crate::error::{Error, Result};
pub use crate::gpu::shaders::KernelVariant;
use crate::gpu::shaders::{self, KernelNeeds, key_of};
use crate::gpu::{Kernel, KernelParams};

/// Every pipeline the launchers can create, each once, in launcher order.
pub fn all() -> Vec<KernelVariant> {
    let lists = [
        super::matmul::kernels(),
        super::conv::kernels(),
        super::batchnorm::kernels(),
        super::elementwise::kernels(),
        super::reduce::kernels(),
        super::pool::kernels(),
        super::softmax::kernels(),
        super::sort::kernels(),
        super::index::kernels(),
        super::optim::kernels(),
        super::winograd::kernels(),
        super::finite::kernels(),
    ];
    let mut seen = HashSet::new();
    lists
        .into_iter()
        .flatten()
        .filter(|v| seen.insert(v.key()))
        .collect()
}

/// Each variant of `variants` with what it asks of the device, read from naga's reflection of
/// its specialised module (each shader family parsed once).
pub fn needs_of(variants: &[KernelVariant]) -> std::result::Result<Vec<KernelNeeds>, String> {
    let mut parsed = std::collections::HashMap::new();
    let mut out = Vec::with_capacity(variants.len());
    for v in variants {
        if !parsed.contains_key(v.shader) {
            let src = shaders::source(v.shader)
                .ok_or_else(|| format!("no shader family '{}'", v.shader))?;
            parsed.insert(v.shader, shaders::validate(v.shader, src)?);
        }
        let (module, info) = &parsed[v.shader];
        let (m, i) = shaders::specialise_parsed(v.shader, module, info, v.entry, &v.constants)?;
        out.push(shaders::needs(&m, &i, v.entry).ok_or_else(|| format!("{v}: no reflection"))?);
    }
    Ok(out)
}

/// The largest need of each kind over every kernel in [`all`].
pub fn max_needs() -> std::result::Result<KernelNeeds, String> {
    Ok(needs_of(&all())?
        .into_iter()
        .fold(KernelNeeds::default(), KernelNeeds::max))
}

fn registered() -> &'static HashSet<String> {
    static KEYS: OnceLock<HashSet<String>> = OnceLock::new();
    KEYS.get_or_init(|| all().iter().map(KernelVariant::key).collect())
}

/// Fails unless `k` is in [`all`]: a launcher that creates an unlisted pipeline fails on its
/// first launch (in its own kernel tests) instead of skipping the translation tests.
pub(crate) fn check<P: KernelParams>(k: &Kernel<P>) -> Result<()> {
    let key = key_of(k.shader, k.entry, k.constants);
    if registered().contains(&key) {
        Ok(())
    } else {
        Err(Error::Device(format!(
            "kernel {key} is not in the kernel registry (src/tensor/kernels.rs): list it in its \
             launcher's kernels() so the shader-translation and limits tests cover it"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::matmul::MatmulParams;

    #[test]
    fn registered_kernels_pass_and_others_fail() {
        let all = all();
        let m = all
            .iter()
            .find(|v| v.shader == "matmul" && v.constants.len() == 3)
            .expect("matmul is registered");
        assert!(
            check(&Kernel::<MatmulParams>::with_constants(
                m.entry,
                &m.constants
            ))
            .is_ok()
        );
        // A constant value no launcher passes, a missing constant, an unknown entry.
        let mut odd = m.constants.clone();
        odd[0].1 = 2.0;
        let err = check(&Kernel::<MatmulParams>::with_constants(m.entry, &odd))
            .expect_err("unregistered value");
        assert!(err.to_string().contains("matmul:main:TRANS_A=2"), "{err}");
        assert!(
            check(&Kernel::<MatmulParams>::with_constants(
                m.entry,
                &m.constants[..2]
            ))
            .is_err()
        );
        assert!(check(&Kernel::<MatmulParams>::new("transpose")).is_err());
    }

    #[test]
    fn every_variant_is_listed_once() {
        let all = all();
        let keys: HashSet<String> = all.iter().map(KernelVariant::key).collect();
        assert_eq!(keys.len(), all.len());
        // Launcher-derived domains: 8 matmul transposition/accumulation variants for each
        // kernel shape (lanes, workgroup tiles) and both fused-ReLU choices of the batch-norm
        // apply.
        assert_eq!(all.iter().filter(|v| v.shader == "matmul").count(), 16);
        assert_eq!(
            all.iter()
                .filter(|v| v.shader == "batchnorm" && v.entry == "apply")
                .count(),
            2
        );
    }
}
