//! Every random stream of a run, in one place: one named purpose per stream, each derived from
//! the run's seed (plus the epoch, position or index where it varies), so a run repeats bit for
//! bit, resume included, and no two purposes share random numbers by accident (a test lists
//! them all and checks).
//!
//! The derivations are those the recorded runs were made with (docs/results.md); changing one
//! changes the numbers of every run that draws from it.

use rand::{RngExt, SeedableRng};

/// The generator of every stream: xoshiro256++, a stable, documented algorithm.
pub type Rng = rand::rngs::Xoshiro256PlusPlus;

/// The golden-ratio increment, which spreads consecutive integers over the whole u64 range.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// A generator seeded with `seed` as is (for seeds already derived per purpose).
pub fn seeded(seed: u64) -> Rng {
    Rng::seed_from_u64(seed)
}

/// SplitMix64 finaliser: spreads nearby seeds (0, 1, 2, ...) over the whole state space.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(GOLDEN);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `seed` mixed with each key in turn: streams keyed differently are independent.
fn keyed(seed: u64, keys: &[u64]) -> Rng {
    let mut s = mix64(seed);
    for &k in keys {
        s = mix64(s ^ k);
    }
    seeded(s)
}

/// A permutation of 0..n drawn from (`key`, `round`) by a Fisher-Yates shuffle.
fn permutation(n: usize, key: u64, round: usize) -> Vec<usize> {
    let mut rng = seeded(
        key.wrapping_mul(0x2545_F491_4F6C_DD1D)
            ^ (round as u64).wrapping_add(1).wrapping_mul(GOLDEN),
    );
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.random_range(0..=i);
        v.swap(i, j);
    }
    v
}

/// Keys of the streams drawn through [`keyed`], one constant per purpose.
mod key {
    pub const LONG_TAIL: u64 = 0x4c4f_4e47_5441_494c;
    pub const NOISE: u64 = 0x4e4f_4953_4520_2020;
    pub const BUILTIN: u64 = 0x4255_494c_5449_4e20;
    pub const AUGMENT: u64 = 0x4155_474d_454e_5420;
    pub const META_SPLIT: u64 = 0xD1CE;
}

/// Which batches a loader's augmentations are drawn for: each role its own stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViewRole {
    /// The training view of the classifier's steps (warm-up, real step, baselines).
    Train,
    /// The weak view of the same batches (no randomness is drawn from it today).
    Weak,
    /// The Dynamic Loss's pass over the meta set after each epoch.
    MetaSetPass,
    /// The Dynamic Loss's meta batches.
    Meta,
}

/// The random streams of a run with this seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Streams(pub u64);

impl Streams {
    /// Which samples the long tail keeps.
    pub fn long_tail(self) -> Rng {
        keyed(self.0, &[key::LONG_TAIL])
    }

    /// Label-noise draws of noise model `model` (0 LT, 1 symmetric, 2 asymmetric).
    pub fn noise(self, model: u64) -> Rng {
        keyed(self.0, &[key::NOISE, model])
    }

    /// The generated image `index` of split `split` (0 train, 1 test) of the built-in set.
    pub fn builtin_image(self, split: u64, index: u64) -> Rng {
        keyed(self.0, &[key::BUILTIN, split, index])
    }

    /// The seed a loader of `role` passes to [`augmentation`].
    pub fn loader(self, role: ViewRole) -> u64 {
        match role {
            ViewRole::Train => self.0 ^ GOLDEN,
            ViewRole::Weak => self.0 ^ 2u64.wrapping_mul(GOLDEN),
            ViewRole::MetaSetPass => self.0 ^ 3u64.wrapping_mul(GOLDEN),
            ViewRole::Meta => self.0 ^ 0x3E7A,
        }
    }

    /// The classifier's initial weights.
    pub fn classifier_init(self) -> Rng {
        seeded(self.0)
    }

    /// The meta net's initial weights.
    pub fn meta_init(self) -> Rng {
        seeded(self.0 ^ 0x5EED)
    }

    /// The order of the training samples in epoch `epoch`.
    pub fn shuffle(self, n: usize, epoch: usize) -> Vec<usize> {
        permutation(n, self.0, epoch)
    }

    /// Which `k` of `n` training samples `--train-limit` keeps, in increasing order.
    pub fn train_subset(self, n: usize, k: usize) -> Vec<usize> {
        subset(n, k, self.0)
    }

    /// Which `k` of `n` test samples `--test-limit` keeps, in increasing order.
    pub fn test_subset(self, n: usize, k: usize) -> Vec<usize> {
        subset(n, k, self.0 ^ 1)
    }

    /// The Dynamic Loss's primary sets (hierarchical sampling) of epoch `epoch`.
    pub fn meta_split(self, epoch: usize) -> Rng {
        keyed(self.0, &[key::META_SPLIT, epoch as u64])
    }

    /// Round `round` of the meta batches' order in epoch `epoch` (the meta set repeats,
    /// reshuffled, as often as the epoch needs).
    pub fn meta_order(self, n: usize, epoch: usize, round: usize) -> Vec<usize> {
        permutation(n, self.0 ^ 0xA11CE, epoch * 1000 + round)
    }

    /// The order of the meta-set pass after epoch `epoch`.
    pub fn meta_set_order(self, n: usize, epoch: usize) -> Vec<usize> {
        permutation(n, self.0 ^ 0xFACE, epoch)
    }

    /// Seeds of iteration `it`'s two hard Gumbel samples in epoch `epoch`: the virtual
    /// step's, and a fresh one for the real step.
    pub fn gumbel(self, epoch: usize, it: usize) -> [u64; 2] {
        let virtual_seed = mix64(self.0 ^ ((epoch as u64) << 32) ^ it as u64);
        [virtual_seed, mix64(virtual_seed ^ 0x6E41_1A5E_ED5E_A1ED)]
    }
}

/// The augmentation draws of the sample at position `pos` of epoch `epoch`'s order, for a
/// loader seeded with `loader_seed` ([`Streams::loader`]).
pub fn augmentation(loader_seed: u64, epoch: u64, pos: u64) -> Rng {
    keyed(loader_seed, &[key::AUGMENT, epoch, pos])
}

/// A seeded random subset of k of n indices, in increasing order.
fn subset(n: usize, k: usize, key: u64) -> Vec<usize> {
    let mut idx = permutation(n, key ^ 0x5B5E7, usize::MAX);
    idx.truncate(k);
    idx.sort_unstable();
    idx
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng as _;

    /// The first draws of every stream of a run with `seed` at epoch `epoch`, by purpose.
    fn fingerprints(seed: u64, epoch: usize) -> Vec<(&'static str, Vec<u64>)> {
        let s = Streams(seed);
        let draws = |mut r: Rng| (0..4).map(|_| r.next_u64()).collect::<Vec<u64>>();
        let order = |v: Vec<usize>| v.into_iter().take(12).map(|i| i as u64).collect();
        let e = epoch as u64;
        let mut out = vec![
            ("long tail", draws(s.long_tail())),
            ("noise lt", draws(s.noise(0))),
            ("noise sym", draws(s.noise(1))),
            ("noise asym", draws(s.noise(2))),
            ("builtin image", draws(s.builtin_image(0, e))),
            ("classifier init", draws(s.classifier_init())),
            ("meta init", draws(s.meta_init())),
            ("meta split", draws(s.meta_split(epoch))),
            ("shuffle", order(s.shuffle(1000, epoch))),
            ("train subset", order(s.train_subset(1000, 12))),
            ("test subset", order(s.test_subset(1000, 12))),
            ("meta order", order(s.meta_order(1000, epoch, 0))),
            ("meta order round 1", order(s.meta_order(1000, epoch, 1))),
            ("meta-set order", order(s.meta_set_order(1000, epoch))),
            ("gumbel", s.gumbel(epoch, 0).to_vec()),
            ("gumbel next step", s.gumbel(epoch, 1).to_vec()),
        ];
        for role in [
            ViewRole::Train,
            ViewRole::Weak,
            ViewRole::MetaSetPass,
            ViewRole::Meta,
        ] {
            let name = match role {
                ViewRole::Train => "augment train",
                ViewRole::Weak => "augment weak",
                ViewRole::MetaSetPass => "augment meta-set pass",
                ViewRole::Meta => "augment meta",
            };
            out.push((name, draws(augmentation(s.loader(role), e, 0))));
        }
        out
    }

    #[test]
    fn no_two_purposes_share_a_stream() {
        for seed in [0u64, 1, 2, 0x5EED, 0xA11CE] {
            for epoch in [0usize, 1, 7] {
                let f = fingerprints(seed, epoch);
                for (i, (a, x)) in f.iter().enumerate() {
                    for (b, y) in &f[i + 1..] {
                        assert_ne!(
                            x, y,
                            "{a} and {b} share a stream (seed {seed}, epoch {epoch})"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn streams_repeat_and_depend_on_seed_and_epoch() {
        assert_eq!(fingerprints(3, 2), fingerprints(3, 2));
        let (a, b, c) = (fingerprints(3, 2), fingerprints(4, 2), fingerprints(3, 5));
        for ((name, x), ((_, y), (_, z))) in a.iter().zip(b.iter().zip(&c)) {
            assert_ne!(x, y, "{name} ignores the seed");
            let per_epoch = !matches!(
                *name,
                "long tail"
                    | "noise lt"
                    | "noise sym"
                    | "noise asym"
                    | "classifier init"
                    | "meta init"
                    | "train subset"
                    | "test subset"
            );
            assert_eq!(x != z, per_epoch, "{name}: epoch dependence");
        }
        let s = Streams(9).train_subset(50, 10);
        assert!(s.windows(2).all(|w| w[0] < w[1]) && s.len() == 10);
    }

    #[test]
    fn derivations_are_those_of_the_recorded_runs() {
        // Pinned values: a change here changes every recorded run's numbers.
        assert_eq!(mix64(0), 0xE220_A839_7B1D_CDAF);
        assert_eq!(Streams(0).shuffle(8, 0), permutation(8, 0, 0));
        assert_eq!(Streams(5).loader(ViewRole::Meta), 5 ^ 0x3E7A);
    }
}
