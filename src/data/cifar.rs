//! CIFAR-10 / CIFAR-100 readers for the official binary version: fixed-size records of label
//! byte(s) followed by 3072 pixel bytes (1024 red, 1024 green, 1024 blue, row-major 32x32).

use std::path::{Path, PathBuf};

use super::{Dataset, format_err, io_err, missing};
use crate::error::Result;

/// Pixel bytes per CIFAR record (3 x 32 x 32, already CHW).
pub const PIXELS: usize = 3 * 32 * 32;

/// CIFAR-10 class names in label order.
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// CIFAR-10 training batch files, in the order they are concatenated.
pub const CIFAR10_TRAIN: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
/// CIFAR-10 test batch file.
pub const CIFAR10_TEST: &str = "test_batch.bin";
/// Folder the official CIFAR-10 archive unpacks to.
pub const CIFAR10_DIR: &str = "cifar-10-batches-bin";
/// Folder the official CIFAR-100 archive unpacks to.
pub const CIFAR100_DIR: &str = "cifar-100-binary";

/// One parsed batch file: CHW pixels and labels.
#[derive(Debug)]
pub struct Records {
    /// N x 3072 pixel bytes.
    pub images: Vec<u8>,
    /// N labels.
    pub labels: Vec<u32>,
}

/// Parses CIFAR records from `bytes`. Each record has `label_bytes` label bytes; the label
/// used is byte `label_index` and must be < `classes`. Other label bytes (CIFAR-100's coarse
/// label) must be < `other_classes`. The record count comes from the file size, which must be
/// a whole number of records.
pub fn parse_records(
    bytes: &[u8],
    label_bytes: usize,
    label_index: usize,
    classes: usize,
    other_classes: usize,
    path: &Path,
) -> Result<Records> {
    let rec = label_bytes + PIXELS;
    if bytes.is_empty() {
        return Err(format_err(
            path,
            "empty file, expected CIFAR binary records",
        ));
    }
    if !bytes.len().is_multiple_of(rec) {
        return Err(format_err(
            path,
            format!(
                "size {} bytes is not a multiple of the {rec}-byte record \
                 ({label_bytes} label byte(s) + {PIXELS} pixels): truncated or not a {} file",
                bytes.len(),
                if label_bytes == 1 {
                    "CIFAR-10 binary batch"
                } else {
                    "CIFAR-100 binary"
                }
            ),
        ));
    }
    let n = bytes.len() / rec;
    let mut images = Vec::with_capacity(n * PIXELS);
    let mut labels = Vec::with_capacity(n);
    for (i, r) in bytes.chunks_exact(rec).enumerate() {
        for (k, &b) in r[..label_bytes].iter().enumerate() {
            let limit = if k == label_index {
                classes
            } else {
                other_classes
            };
            if b as usize >= limit {
                return Err(format_err(
                    path,
                    format!(
                        "record {i} (byte offset {}): label {b} out of range 0..{limit}",
                        i * rec + k
                    ),
                ));
            }
        }
        labels.push(r[label_index] as u32);
        images.extend_from_slice(&r[label_bytes..]);
    }
    Ok(Records { images, labels })
}

/// Reads and parses one batch file.
pub fn read_records(
    path: &Path,
    label_bytes: usize,
    label_index: usize,
    classes: usize,
    other_classes: usize,
) -> Result<Records> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    parse_records(
        &bytes,
        label_bytes,
        label_index,
        classes,
        other_classes,
        path,
    )
}

/// Finds the folder holding `probe`: `dir` itself or `dir/sub`.
fn locate(dir: &Path, sub: &str, probe: &str, fetch_name: &str) -> Result<PathBuf> {
    for cand in [dir.to_path_buf(), dir.join(sub)] {
        if cand.join(probe).is_file() {
            return Ok(cand);
        }
    }
    Err(missing(
        &dir.join(sub).join(probe),
        &format!(
            "not found (looked in {} and {}); download it with \
             `dynloss-wgpu data fetch {fetch_name} --data-dir {}`",
            dir.display(),
            dir.join(sub).display(),
            dir.display()
        ),
    ))
}

/// Class names from a label-names text file (one per line), if present and complete.
fn names_file(path: &Path, classes: usize) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(path).ok()?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    (names.len() == classes).then_some(names)
}

fn dataset(r: Records, classes: usize, class_names: Vec<String>) -> Dataset {
    Dataset {
        images: r.images,
        labels: r.labels,
        shape: [3, 32, 32],
        classes,
        class_names,
    }
}

/// Reads CIFAR-10 (`data_batch_1..5.bin`, `test_batch.bin`) from `dir` or
/// `dir/cifar-10-batches-bin`.
pub fn read_cifar10(dir: &Path) -> Result<(Dataset, Dataset)> {
    let root = locate(dir, CIFAR10_DIR, CIFAR10_TRAIN[0], "cifar10")?;
    let mut train = Records {
        images: Vec::new(),
        labels: Vec::new(),
    };
    for f in CIFAR10_TRAIN {
        let path = root.join(f);
        if !path.is_file() {
            return Err(missing(
                &path,
                "not found: the CIFAR-10 training set needs all five data_batch files",
            ));
        }
        let r = read_records(&path, 1, 0, 10, 0)?;
        train.images.extend_from_slice(&r.images);
        train.labels.extend_from_slice(&r.labels);
    }
    let test = read_records(&root.join(CIFAR10_TEST), 1, 0, 10, 0)?;
    let names = names_file(&root.join("batches.meta.txt"), 10)
        .unwrap_or_else(|| CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect());
    Ok((dataset(train, 10, names.clone()), dataset(test, 10, names)))
}

/// Reads CIFAR-100 (`train.bin`, `test.bin`, fine labels) from `dir` or
/// `dir/cifar-100-binary`.
pub fn read_cifar100(dir: &Path) -> Result<(Dataset, Dataset)> {
    let root = locate(dir, CIFAR100_DIR, "train.bin", "cifar100")?;
    // Byte 0 is the coarse label (20 superclasses), byte 1 the fine label (100 classes).
    let train = read_records(&root.join("train.bin"), 2, 1, 100, 20)?;
    let test = read_records(&root.join("test.bin"), 2, 1, 100, 20)?;
    let names = names_file(&root.join("fine_label_names.txt"), 100)
        .unwrap_or_else(|| (0..100).map(|i| format!("class{i:02}")).collect());
    Ok((
        dataset(train, 100, names.clone()),
        dataset(test, 100, names),
    ))
}
