//! Long-tail counts and the three noise models, checked statistically.

use dynloss_wgpu::Error;
use dynloss_wgpu::data::longtail::{long_tail_counts, long_tail_indices};
use dynloss_wgpu::data::noise::{CIFAR10_ASYM, apply_noise, lt_transition, transition_matrix};
use dynloss_wgpu::data::{self, Dataset, NoiseType, count_labels};

/// Balanced labels: `per` of each class, interleaved like the real files.
fn balanced(classes: usize, per: usize) -> Vec<u32> {
    (0..classes * per).map(|i| (i % classes) as u32).collect()
}

#[test]
fn spec_totals_for_cifar() {
    let c10_10 = long_tail_counts(5000, 10, 10.0);
    let c10_100 = long_tail_counts(5000, 10, 100.0);
    let c100_10 = long_tail_counts(500, 100, 10.0);
    let c100_100 = long_tail_counts(500, 100, 100.0);
    assert_eq!(c10_10.iter().sum::<usize>(), 20_431);
    assert_eq!(c10_100.iter().sum::<usize>(), 12_406);
    assert_eq!(c100_10.iter().sum::<usize>(), 19_573);
    assert_eq!(c100_100.iter().sum::<usize>(), 10_847);
    assert_eq!(
        c10_10,
        vec![5000, 3871, 2997, 2320, 1796, 1391, 1077, 834, 645, 500]
    );
    assert_eq!(
        c10_100,
        vec![5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    );
    assert_eq!((c100_100[0], c100_100[99]), (500, 5));
    assert_eq!(long_tail_counts(5000, 10, 1.0), vec![5000; 10]);
}

#[test]
fn long_tail_keeps_the_counts_by_seeded_shuffle() {
    let labels = balanced(10, 5000);
    let a = long_tail_indices(&labels, 10, 100.0, 1).unwrap();
    let b = long_tail_indices(&labels, 10, 100.0, 1).unwrap();
    let c = long_tail_indices(&labels, 10, 100.0, 2).unwrap();
    assert_eq!(a, b, "same seed, same subset");
    assert_ne!(a, c, "another seed picks other samples");
    assert!(a.windows(2).all(|w| w[0] < w[1]), "sorted, no repeats");
    let kept: Vec<u32> = a.iter().map(|&i| labels[i]).collect();
    assert_eq!(count_labels(&kept, 10), long_tail_counts(5000, 10, 100.0));
    // Not simply the first samples of each class.
    assert!(a.iter().any(|&i| i > 40_000));
}

#[test]
fn empty_classes_are_clear_errors() {
    let labels = balanced(10, 20);
    let err = long_tail_indices(&labels, 10, 100.0, 0).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Config(_)), "{msg}");
    assert!(msg.contains("class 6 keeps no samples"), "{msg}");
    assert!(msg.contains("and 3 later classes"), "{msg}");

    let mut missing = balanced(10, 20);
    missing.retain(|&l| l != 3);
    let msg = long_tail_indices(&missing, 10, 1.0, 0)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("class 3 has no training samples"), "{msg}");

    // Through build_train_set the class is named.
    let ds = Dataset {
        images: vec![0; 200],
        labels: balanced(10, 20),
        shape: [1, 1, 1],
        classes: 10,
        class_names: (0..10).map(|i| format!("c{i}")).collect(),
    };
    let msg = data::build_train_set(&ds, 1000.0, 0.0, NoiseType::Lt, 0)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("class 4 ('c4') keeps no samples"), "{msg}");
    assert!(long_tail_indices(&labels, 10, 0.5, 0).is_err());
    assert!(long_tail_indices(&labels, 10, f64::NAN, 0).is_err());
}

/// Five standard errors of a proportion p from n draws (plus a floor for p near 0 or 1).
fn tolerance(p: f64, n: usize) -> f64 {
    5.0 * (p * (1.0 - p) / n as f64).sqrt() + 1e-3
}

#[test]
fn lt_noise_matches_the_transition_matrix() {
    // Long-tailed CIFAR-10 counts at rho=10, replicated 10x for a large sample.
    let counts = long_tail_counts(50_000, 10, 10.0);
    let truth: Vec<u32> = counts
        .iter()
        .enumerate()
        .flat_map(|(c, &n)| std::iter::repeat_n(c as u32, n))
        .collect();
    let lambda = 0.4;
    let noisy = apply_noise(&truth, 10, lambda, NoiseType::Lt, 11).unwrap();
    let got = transition_matrix(&truth, &noisy, 10);
    // The spec's T = (1 - lambda) I + lambda 1 p^T with p_j = n_j / N, built here.
    let total: usize = counts.iter().sum();
    let want: Vec<Vec<f64>> = (0..10)
        .map(|i| {
            (0..10)
                .map(|j| {
                    let p = counts[j] as f64 / total as f64;
                    let diagonal = if i == j { 1.0 - lambda } else { 0.0 };
                    diagonal + lambda * p
                })
                .collect()
        })
        .collect();
    // The library's own matrix is the same.
    for (a, b) in lt_transition(&counts, lambda).iter().zip(&want) {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-12, "lt_transition: {x} vs {y}");
        }
    }
    // Rows of the observed matrix: counted here from the pairs, not by the library.
    let mut counted = vec![vec![0usize; 10]; 10];
    for (&t, &y) in truth.iter().zip(&noisy) {
        counted[t as usize][y as usize] += 1;
    }
    for i in 0..10 {
        for j in 0..10 {
            let share = counted[i][j] as f64 / counts[i] as f64;
            assert!(
                (share - got[i][j]).abs() < 1e-12,
                "transition_matrix [{i}][{j}]"
            );
        }
    }
    for i in 0..10 {
        for j in 0..10 {
            let tol = tolerance(want[i][j], counts[i]);
            assert!(
                (got[i][j] - want[i][j]).abs() < tol,
                "T[{i}][{j}] = {:.4}, expected {:.4} +- {tol:.4}",
                got[i][j],
                want[i][j]
            );
        }
    }
    // Expected class counts are unchanged by LT noise.
    let given = count_labels(&noisy, 10);
    for c in 0..10 {
        let tol = 5.0 * (counts[c] as f64).sqrt() + 10.0;
        assert!((given[c] as f64 - counts[c] as f64).abs() < tol * 2.0);
    }
    // Realised flip rate is lambda * (1 - sum p_y^2 weighted) < lambda.
    let rate = noisy.iter().zip(&truth).filter(|(a, b)| a != b).count() as f64 / truth.len() as f64;
    let n: f64 = counts.iter().sum::<usize>() as f64;
    let expected: f64 = counts
        .iter()
        .map(|&k| (k as f64 / n) * lambda * (1.0 - k as f64 / n))
        .sum();
    assert!((rate - expected).abs() < 0.005, "rate {rate} vs {expected}");
    assert!(rate < lambda);
}

#[test]
fn symmetric_noise_is_uniform() {
    let truth = balanced(10, 20_000);
    let noisy = apply_noise(&truth, 10, 0.5, NoiseType::Sym, 5).unwrap();
    let m = transition_matrix(&truth, &noisy, 10);
    for (i, row) in m.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            let want = if i == j { 0.5 + 0.05 } else { 0.05 };
            assert!((v - want).abs() < tolerance(want, 20_000), "[{i}][{j}] {v}");
        }
    }
}

#[test]
fn asymmetric_noise_touches_only_the_five_mapped_classes() {
    let truth = balanced(10, 20_000);
    let lambda = 0.3;
    let noisy = apply_noise(&truth, 10, lambda, NoiseType::Asym, 9).unwrap();
    let m = transition_matrix(&truth, &noisy, 10);
    let mapped: Vec<u32> = CIFAR10_ASYM.iter().map(|&(f, _)| f).collect();
    for i in 0..10u32 {
        if let Some(&(_, to)) = CIFAR10_ASYM.iter().find(|&&(f, _)| f == i) {
            let flip = m[i as usize][to as usize];
            assert!(
                (flip - lambda).abs() < tolerance(lambda, 20_000),
                "{i}->{to}: {flip}"
            );
            let rest: f64 = (0..10)
                .filter(|&j| j != i as usize && j != to as usize)
                .map(|j| m[i as usize][j])
                .sum();
            assert_eq!(rest, 0.0, "class {i} flipped elsewhere");
        } else {
            assert!(!mapped.contains(&i));
            assert_eq!(
                m[i as usize][i as usize], 1.0,
                "class {i} must be untouched"
            );
        }
    }
    assert!(apply_noise(&balanced(100, 2), 100, 0.2, NoiseType::Asym, 0).is_err());
}

#[test]
fn noise_is_deterministic_and_validated() {
    let truth = balanced(10, 100);
    for kind in [NoiseType::Lt, NoiseType::Sym, NoiseType::Asym] {
        let a = apply_noise(&truth, 10, 0.3, kind, 1).unwrap();
        assert_eq!(a, apply_noise(&truth, 10, 0.3, kind, 1).unwrap());
        assert_ne!(a, apply_noise(&truth, 10, 0.3, kind, 2).unwrap());
        assert_eq!(apply_noise(&truth, 10, 0.0, kind, 1).unwrap(), truth);
    }
    assert!(apply_noise(&truth, 10, 1.5, NoiseType::Lt, 0).is_err());
    assert!(apply_noise(&truth, 10, -0.1, NoiseType::Sym, 0).is_err());
    assert!(apply_noise(&[10], 10, 0.1, NoiseType::Sym, 0).is_err());
}

#[test]
fn train_set_keeps_true_labels_beside_noisy_ones() {
    let ds = Dataset {
        images: (0..5000u32).map(|i| (i % 251) as u8).collect(),
        labels: balanced(10, 500),
        shape: [1, 1, 1],
        classes: 10,
        class_names: (0..10).map(|i| i.to_string()).collect(),
    };
    let ts = data::build_train_set(&ds, 10.0, 0.2, NoiseType::Lt, 4).unwrap();
    assert_eq!(
        ts.data.len(),
        long_tail_counts(500, 10, 10.0).iter().sum::<usize>()
    );
    for (k, &src) in ts.source_index.iter().enumerate() {
        assert_eq!(ts.true_labels[k], ds.labels[src]);
        assert_eq!(ts.data.image(k), ds.image(src));
    }
    let stats = ts.class_stats();
    assert_eq!(
        stats.iter().map(|s| s.0).collect::<Vec<_>>(),
        long_tail_counts(500, 10, 10.0)
    );
    assert!(ts.noise_rate() > 0.05 && ts.noise_rate() < 0.2);
}
