//! The built-in generated data set: deterministic, balanced, fast, and not separable by
//! colour.

use std::time::Instant;

use dynloss_wgpu::data::{self, DataConfig, Dataset, DatasetKind, builtin};

/// Nearest-class-mean accuracy on `test` using features `f` of each image.
fn nearest_mean_accuracy(train: &Dataset, test: &Dataset, f: impl Fn(&[u8]) -> Vec<f64>) -> f64 {
    let dim = f(train.image(0)).len();
    let mut means = vec![vec![0.0; dim]; train.classes];
    let counts = train.class_counts();
    for i in 0..train.len() {
        for (m, v) in means[train.labels[i] as usize]
            .iter_mut()
            .zip(f(train.image(i)))
        {
            *m += v;
        }
    }
    for (m, &n) in means.iter_mut().zip(&counts) {
        m.iter_mut().for_each(|v| *v /= n as f64);
    }
    let mut right = 0;
    for i in 0..test.len() {
        let x = f(test.image(i));
        let best = (0..train.classes)
            .min_by(|&a, &b| {
                let da: f64 = means[a].iter().zip(&x).map(|(m, v)| (m - v).powi(2)).sum();
                let db: f64 = means[b].iter().zip(&x).map(|(m, v)| (m - v).powi(2)).sum();
                da.total_cmp(&db)
            })
            .unwrap();
        right += (best as u32 == test.labels[i]) as usize;
    }
    right as f64 / test.len() as f64
}

fn mean_colour(img: &[u8]) -> Vec<f64> {
    let plane = img.len() / 3;
    (0..3)
        .map(|c| {
            img[c * plane..(c + 1) * plane]
                .iter()
                .map(|&v| v as f64)
                .sum::<f64>()
                / plane as f64
        })
        .collect()
}

#[test]
fn full_set_is_balanced_and_deterministic() {
    let t = Instant::now();
    let (train, test) = builtin::generate(7, 32, builtin::TRAIN_PER_CLASS, builtin::TEST_PER_CLASS);
    let secs = t.elapsed().as_secs_f64();
    println!(
        "built-in set: {} train + {} test images of 3x32x32 in {secs:.2} s",
        train.len(),
        test.len()
    );
    assert_eq!(train.len(), 20_000);
    assert_eq!(test.len(), 5_000);
    assert_eq!(train.shape, [3, 32, 32]);
    assert_eq!(train.class_counts(), vec![2000; 10]);
    assert_eq!(test.class_counts(), vec![500; 10]);
    assert_eq!(train.class_names[0], "disk");
    train.validate("builtin".as_ref()).unwrap();

    // Same seed, same bytes (spot-check a prefix by regenerating a smaller split).
    let again = builtin::generate_split(7, 32, 200, 0);
    assert_eq!(&again.images[..], &train.images[..again.images.len()]);
    let other = builtin::generate_split(8, 32, 200, 0);
    assert_ne!(other.images, again.images);
    // Train and test splits are different images.
    assert_ne!(&train.images[..3072], &test.images[..3072]);
}

#[test]
fn colour_does_not_give_the_class() {
    let (train, test) = builtin::generate(1, 32, 300, 100);
    let by_colour = nearest_mean_accuracy(&train, &test, mean_colour);
    let by_pixels =
        nearest_mean_accuracy(&train, &test, |img| img.iter().map(|&v| v as f64).collect());
    println!("nearest class mean: colour {by_colour:.3}, raw pixels {by_pixels:.3} (chance 0.1)");
    assert!(
        by_colour < 0.2,
        "mean colour predicts the class: {by_colour}"
    );
    assert!(
        by_pixels < 0.5,
        "a pixel template predicts the class: {by_pixels}"
    );
}

#[test]
fn renders_at_other_sizes_and_through_load() {
    let cfg = DataConfig {
        dataset: DatasetKind::Builtin,
        image_size: Some(48),
        imbalance: 10.0,
        noise: 0.3,
        seed: 3,
        ..DataConfig::default()
    };
    let (train, test) = data::load(&cfg).unwrap();
    assert_eq!(train.data.shape, [3, 48, 48]);
    assert_eq!(test.shape, [3, 48, 48]);
    // 2000 * 10^(-c/9) per class.
    let expected: usize = data::longtail::long_tail_counts(2000, 10, 10.0)
        .iter()
        .sum();
    assert_eq!(train.data.len(), expected);
    assert_eq!(test.class_counts(), vec![500; 10]);
    assert!(train.noise_rate() > 0.1 && train.noise_rate() < 0.3);
}

/// `data preview`: one row per class, images enlarged to at least 64 pixels, each cell a
/// faithful nearest-neighbour copy of the class's first images.
#[test]
fn preview_grid_copies_each_class_first_images() {
    let ds = builtin::generate_split(5, 32, 40, 0);
    let dir = std::env::temp_dir().join(format!("dynloss-preview-{}", std::process::id()));
    let out = dir.join("grid.png");
    data::report::preview_grid(&out, &ds, 3).unwrap();
    let img = image::open(&out).unwrap().to_rgb8();
    // 2x enlargement (32 -> 64) plus a 1-pixel border per side; 104-pixel label column.
    let (cell, label_w) = (66u32, 104u32);
    assert_eq!((img.width(), img.height()), (label_w + 3 * cell, 10 * cell));
    for class in [0usize, 7, 9] {
        for k in [0usize, 2] {
            // Labels cycle 0..10, so the k-th image of `class` is number k * 10 + class.
            let src = ds.image(k * 10 + class);
            for (y, x) in [(0usize, 0usize), (13, 29), (31, 31)] {
                let want = [
                    src[y * 32 + x],
                    src[1024 + y * 32 + x],
                    src[2048 + y * 32 + x],
                ];
                for (dy, dx) in [(0, 0), (1, 1)] {
                    let px = img.get_pixel(
                        label_w + k as u32 * cell + 1 + 2 * x as u32 + dx,
                        class as u32 * cell + 1 + 2 * y as u32 + dy,
                    );
                    assert_eq!(px.0, want, "class {class} image {k} pixel ({y}, {x})");
                }
            }
        }
    }
    assert!(data::report::preview_grid(&out, &ds, 0).is_err());
    std::fs::remove_dir_all(&dir).ok();
}

/// `data preview --per-class` beyond the data set's classes or a sane width is capped.
#[test]
fn preview_grid_is_capped_to_the_data_and_a_sane_width() {
    let dir = std::env::temp_dir().join(format!("dynloss-preview-cap-{}", std::process::id()));
    let (a, b) = (dir.join("a.png"), dir.join("b.png"));
    // 30 images: three per class.
    let small = builtin::generate_split(2, 16, 30, 0);
    data::report::preview_grid(&a, &small, 100_000).unwrap();
    data::report::preview_grid(&b, &small, 3).unwrap();
    let width = |p: &std::path::Path| image::open(p).unwrap().width();
    assert_eq!(width(&a), width(&b));
    let big = builtin::generate_split(2, 32, 2000, 0);
    data::report::preview_grid(&a, &big, 100_000).unwrap();
    assert!(width(&a) as usize <= data::report::MAX_PREVIEW_WIDTH);
    assert!(width(&a) as usize > data::report::MAX_PREVIEW_WIDTH - 70);
    std::fs::remove_dir_all(&dir).ok();
}
