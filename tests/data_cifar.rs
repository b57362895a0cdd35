//! CIFAR readers on generated files in the official binary layout (full size), the spec's
//! long-tail totals through `data::load`, and clear errors on bad files.

mod common;

use common::TempDir;
use std::path::Path;

use dynloss_wgpu::Error;
use dynloss_wgpu::data::cifar::{PIXELS, parse_records, read_cifar10};
use dynloss_wgpu::data::longtail::long_tail_counts;
use dynloss_wgpu::data::{self, DataConfig, DatasetKind, NoiseType};
use rand::{RngExt, SeedableRng};

/// Fake pixels that identify the record: byte j of record `id` is (id * 31 + j) mod 256.
fn pixels(id: usize) -> impl Iterator<Item = u8> {
    (0..PIXELS).map(move |j| ((id * 31 + j) % 256) as u8)
}

/// Labels of `n` records with `classes` balanced classes in a scrambled order (the real files
/// are not sorted by class).
fn scrambled_labels(n: usize, classes: usize, seed: u64) -> Vec<u8> {
    let mut l: Vec<u8> = (0..n).map(|i| (i % classes) as u8).collect();
    let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(seed);
    for i in (1..n).rev() {
        l.swap(i, rng.random_range(0..=i));
    }
    l
}

/// Writes records `first..first+labels.len()` with one label byte (CIFAR-10) or a coarse and a
/// fine byte (CIFAR-100).
fn write_records(path: &Path, labels: &[u8], first: usize, cifar100: bool) {
    let rec = PIXELS + if cifar100 { 2 } else { 1 };
    let mut buf = Vec::with_capacity(labels.len() * rec);
    for (k, &l) in labels.iter().enumerate() {
        if cifar100 {
            buf.push(l / 5); // coarse
        }
        buf.push(l);
        buf.extend(pixels(first + k));
    }
    std::fs::write(path, buf).unwrap();
}

/// The official CIFAR-10 layout: 5 x 10,000 training records and 10,000 test records.
fn write_cifar10(root: &Path, per_file: usize) -> Vec<u8> {
    let dir = root.join("cifar-10-batches-bin");
    std::fs::create_dir_all(&dir).unwrap();
    let labels = scrambled_labels(5 * per_file, 10, 1);
    for b in 0..5 {
        let part = &labels[b * per_file..(b + 1) * per_file];
        write_records(
            &dir.join(format!("data_batch_{}.bin", b + 1)),
            part,
            b * per_file,
            false,
        );
    }
    write_records(
        &dir.join("test_batch.bin"),
        &scrambled_labels(per_file, 10, 2),
        1_000_000,
        false,
    );
    std::fs::write(
        dir.join("batches.meta.txt"),
        "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n",
    )
    .unwrap();
    labels
}

fn cfg(kind: DatasetKind, dir: &Path, rho: f64) -> DataConfig {
    DataConfig {
        dataset: kind,
        data_dir: Some(dir.to_path_buf()),
        imbalance: rho,
        noise: 0.2,
        noise_type: NoiseType::Lt,
        seed: 0,
        image_size: None,
    }
}

#[test]
fn cifar10_official_layout_gives_the_spec_counts() {
    let tmp = TempDir::new("cifar10");
    let labels = write_cifar10(&tmp.0, 10_000);
    let (full, test) = read_cifar10(&tmp.0).unwrap();
    assert_eq!((full.len(), test.len()), (50_000, 10_000));
    assert_eq!(full.class_counts(), vec![5000; 10]);
    assert_eq!(test.class_counts(), vec![1000; 10]);
    assert_eq!(full.class_names[9], "truck");
    assert_eq!(full.shape, [3, 32, 32]);
    assert!(full.image(12_345).iter().copied().eq(pixels(12_345)));
    assert_eq!(full.labels[49_999], labels[49_999] as u32);

    for (rho, total) in [(10.0, 20_431), (100.0, 12_406)] {
        let (train, test) = data::load(&cfg(DatasetKind::Cifar10, &tmp.0, rho)).unwrap();
        assert_eq!(train.data.len(), total, "rho {rho}");
        let truth: Vec<usize> = train.class_stats().iter().map(|s| s.0).collect();
        assert_eq!(truth, long_tail_counts(5000, 10, rho));
        // The kept samples are the source records, with their true labels.
        for k in (0..train.data.len()).step_by(997) {
            let src = train.source_index[k];
            assert!(train.data.image(k).iter().copied().eq(pixels(src)));
            assert_eq!(train.true_labels[k], labels[src] as u32);
        }
        assert!(train.noise_rate() > 0.05 && train.noise_rate() < 0.2);
        assert_eq!(test.class_counts(), vec![1000; 10], "test stays balanced");
        assert!(
            test.labels
                .iter()
                .zip(&read_cifar10(&tmp.0).unwrap().1.labels)
                .all(|(a, b)| a == b)
        );
    }
}

#[test]
fn cifar100_official_layout_gives_the_spec_counts() {
    let tmp = TempDir::new("cifar100");
    let dir = tmp.0.join("cifar-100-binary");
    std::fs::create_dir_all(&dir).unwrap();
    write_records(
        &dir.join("train.bin"),
        &scrambled_labels(50_000, 100, 3),
        0,
        true,
    );
    write_records(
        &dir.join("test.bin"),
        &scrambled_labels(10_000, 100, 4),
        0,
        true,
    );
    for (rho, total) in [(10.0, 19_573), (100.0, 10_847)] {
        let (train, test) = data::load(&cfg(DatasetKind::Cifar100, &tmp.0, rho)).unwrap();
        assert_eq!(train.data.len(), total, "rho {rho}");
        let truth: Vec<usize> = train.class_stats().iter().map(|s| s.0).collect();
        assert_eq!(truth, long_tail_counts(500, 100, rho));
        assert_eq!(test.class_counts(), vec![100; 100]);
        assert_eq!(train.data.classes, 100);
    }
}

/// The error text of `r`, which must be an error of the file `path`.
fn err_of<T: std::fmt::Debug>(r: Result<T, Error>, path: &Path) -> String {
    let e = r.unwrap_err();
    let msg = e.to_string();
    match &e {
        Error::Io { path: p, .. } | Error::Format { path: p, .. } => {
            assert_eq!(p, path, "error names the wrong file: {msg}")
        }
        other => panic!("expected a file error, got {other:?}"),
    }
    msg
}

#[test]
fn bad_files_give_one_clear_error() {
    let tmp = TempDir::new("cifar-bad");
    // Missing folder: says where it looked and how to fetch.
    let msg = read_cifar10(&tmp.0).unwrap_err().to_string();
    assert!(
        msg.contains("data_batch_1.bin") && msg.contains("data fetch cifar10"),
        "{msg}"
    );

    write_cifar10(&tmp.0, 20);
    let dir = tmp.0.join("cifar-10-batches-bin");
    let batch3 = dir.join("data_batch_3.bin");

    // Truncated: not a whole number of records.
    let mut bytes = std::fs::read(&batch3).unwrap();
    bytes.truncate(bytes.len() - 100);
    std::fs::write(&batch3, &bytes).unwrap();
    let msg = err_of(read_cifar10(&tmp.0), &batch3);
    assert!(
        msg.contains("not a multiple of the 3073-byte record"),
        "{msg}"
    );

    // Label out of range, with the record and offset.
    let mut bytes = vec![0u8; 3 * 3073];
    bytes[2 * 3073] = 10;
    std::fs::write(&batch3, &bytes).unwrap();
    let msg = err_of(read_cifar10(&tmp.0), &batch3);
    assert!(
        msg.contains("record 2") && msg.contains("label 10 out of range 0..10"),
        "{msg}"
    );

    // Empty file.
    std::fs::write(&batch3, b"").unwrap();
    assert!(err_of(read_cifar10(&tmp.0), &batch3).contains("empty file"));

    // One batch missing.
    std::fs::remove_file(&batch3).unwrap();
    let msg = err_of(read_cifar10(&tmp.0), &batch3);
    assert!(msg.contains("all five data_batch files"), "{msg}");

    // A CIFAR-100 file read as CIFAR-10 (record size 3074): wrong record size.
    let c100 = tmp.0.join("c100.bin");
    std::fs::write(&c100, vec![0u8; 3 * 3074]).unwrap();
    let bytes = std::fs::read(&c100).unwrap();
    let msg = parse_records(&bytes, 1, 0, 10, 0, &c100)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("c100.bin") && msg.contains("record"), "{msg}");

    // CIFAR-100 coarse label out of range.
    let mut bytes = vec![0u8; 2 * 3074];
    bytes[3074] = 20;
    let msg = parse_records(&bytes, 2, 1, 100, 20, &c100)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("label 20 out of range 0..20"), "{msg}");
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(99);
    let path = Path::new("fuzz.bin");
    for i in 0..400 {
        // Half the inputs have a valid record-multiple length so the label checks run.
        let len = if i % 2 == 0 {
            rng.random_range(0..4) * 3073
        } else {
            rng.random_range(0..10_000)
        };
        let bytes: Vec<u8> = (0..len)
            .map(|_| rng.random::<u8>() % if i % 4 == 0 { 11 } else { 255 })
            .collect();
        for (lb, li, c, o) in [(1, 0, 10, 0), (2, 1, 100, 20)] {
            match parse_records(&bytes, lb, li, c, o, path) {
                Ok(r) => {
                    assert_eq!(r.images.len(), r.labels.len() * PIXELS);
                    assert!(r.labels.iter().all(|&l| (l as usize) < c));
                }
                Err(e) => assert!(e.to_string().starts_with("fuzz.bin: ")),
            }
        }
    }
}
