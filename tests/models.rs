//! The model zoo builds every architecture for CIFAR and Fashion-MNIST shapes, with the
//! parameter counts of the reference implementations, and runs forward + backward.

mod common;

use dynloss_wgpu::random::seeded;

use common::{Rng, gpu};
use dynloss_wgpu::Tensor;
use dynloss_wgpu::autograd::{self as ag, Var};
use dynloss_wgpu::nn::zoo::{BUILTIN, build_named};
use dynloss_wgpu::nn::{Mode, init::init_params};

#[test]
fn parameter_counts_match_the_reference_architectures() {
    // Counts of the PyTorch reference models (weights, biases, BN affine parameters).
    let want = [
        ("resnet32", [3, 32, 32], 10, 464_154),
        ("resnet20", [3, 32, 32], 10, 269_722),
        ("preact_resnet18", [3, 32, 32], 10, 11_171_146),
        // The reference VGG also gives each conv a bias, which the BN after it cancels; ours
        // leaves those 5,504 redundant values out (20,040,522 - 5,504).
        ("vgg19_bn", [3, 32, 32], 10, 20_035_018),
        ("resnet10", [3, 224, 224], 1000, 5_418_792),
    ];
    for (name, input, classes, count) in want {
        let m = build_named(name, input, classes).unwrap();
        assert_eq!(m.num_params(), count, "{name}");
    }
}

#[test]
fn every_builtin_model_runs_forward_and_backward_on_small_inputs() {
    let g = gpu();
    let mut rng = Rng::new(3);
    for (name, _) in BUILTIN {
        if *name == "preact_resnet18" || *name == "vgg19_bn" {
            continue; // large: covered by the parameter count; keep CI fast
        }
        for input in [[3, 32, 32], [1, 28, 28]] {
            let m = build_named(name, input, 10).unwrap();
            let w = init_params(&g, &m, &mut seeded(0)).unwrap();
            let running = m.new_running_stats(&g);
            let p: Vec<Var> = w.iter().map(|t| Var::leaf(t.clone(), true)).collect();
            let x = Tensor::from_f32(
                &g,
                &[2, input[0], input[1], input[2]],
                &rng.vec(2 * input.iter().product::<usize>()),
            )
            .unwrap();
            let (y, stats) = m
                .forward(&p, &Var::constant(x.clone()), Mode::Train, &running)
                .unwrap();
            assert_eq!(y.shape(), [2, 10], "{name} {input:?}");
            assert_eq!(stats.len(), m.bn_channels.len());
            let loss = ag::sum_all(&ag::square(&y).unwrap()).unwrap();
            let refs: Vec<&Var> = p.iter().collect();
            let grads = ag::backward(&loss, &refs).unwrap();
            assert!(
                grads.iter().all(|g| g.is_some()),
                "{name}: every parameter gets a gradient"
            );
            let (ye, _) = m
                .forward(&p, &Var::constant(x), Mode::Eval, &running)
                .unwrap();
            assert!(
                ye.value()
                    .to_f32_vec()
                    .unwrap()
                    .iter()
                    .all(|v| v.is_finite())
            );
        }
    }
}

#[test]
fn unknown_models_and_bad_files_are_rejected() {
    assert!(build_named("resnet33", [3, 32, 32], 10).is_err());
    let dir = std::env::temp_dir().join(format!("dynloss-models-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "family = \"resnet_cifar\"\ndepth = 9\n").unwrap();
    let e = build_named(bad.to_str().unwrap(), [3, 32, 32], 10)
        .unwrap_err()
        .to_string();
    // A semantic error names the file it is in.
    assert!(e.contains("6n+2") && e.contains("bad.toml"), "{e}");
    // A type error names the file, the line and (through the line) the key.
    std::fs::write(&bad, "family = \"vgg\"\nlayers = \"two\"\n").unwrap();
    let e = build_named(bad.to_str().unwrap(), [3, 32, 32], 10)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("bad.toml") && e.contains("line 2") && e.contains("layers"),
        "{e}"
    );
    std::fs::write(&bad, "famly = 3").unwrap();
    let e = build_named(bad.to_str().unwrap(), [3, 32, 32], 10)
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad.toml"), "{e}");
    let ok = dir.join("mine.toml");
    std::fs::write(&ok, "family = \"vgg\"\nlayers = [8, \"M\", 16]\n").unwrap();
    let m = build_named(ok.to_str().unwrap(), [1, 28, 28], 10).unwrap();
    assert_eq!(m.name, "mine");
    std::fs::remove_dir_all(&dir).ok();
}
