//! Image-folder and list-file readers. Images are decoded with the `image` crate, converted
//! to RGB and resized (squashed) to a fixed side, decoding on all cores.
//!
//! Layouts:
//! - folder: `root/{train,training}/` and `root/{test,testing,val,validation}/`, each holding
//!   one sub-folder per class (class index = position of the name in sorted order of the
//!   training folders), or Animal-10N style flat files `<label>_<id>.jpg`;
//! - list: `root/train.txt` (or `*_train.txt`) and `root/test.txt` / `val.txt` (or
//!   `*_test.txt` / `*_val.txt`) with `relative/path.jpg label` lines (ImageNet-LT,
//!   WebVision), paths relative to `root`.

use std::path::{Path, PathBuf};

use super::{Dataset, format_err, io_err, missing};
use crate::error::{Error, Result};

/// File extensions decoded as images (the `image` features this crate enables).
pub const IMAGE_EXTS: [&str; 3] = ["jpg", "jpeg", "png"];

/// Largest image file accepted, so a stray huge file cannot exhaust memory.
pub const MAX_IMAGE_BYTES: u64 = 64 << 20;

/// Decodes an image file's bytes to RGB, resizes it to `side` x `side` and returns CHW bytes.
pub fn decode_image(bytes: &[u8], path: &Path, side: usize) -> Result<Vec<u8>> {
    decode_image_as(bytes, path, [3, side, side])
}

/// Decodes an image file's bytes into `shape` [C, H, W] bytes: 3 channels RGB, 1 channel
/// luma, resized (bilinear) when its size differs.
pub fn decode_image_as(bytes: &[u8], path: &Path, shape: [usize; 3]) -> Result<Vec<u8>> {
    let [c, h, w] = shape;
    if c != 1 && c != 3 {
        return Err(format_err(
            path,
            format!("cannot make an image of {c} channels (1 or 3)"),
        ));
    }
    let img = image::load_from_memory(bytes)
        .map_err(|e| format_err(path, format!("cannot decode image: {e}")))?;
    if c == 1 {
        return Ok(fit(img.to_luma8(), w, h).into_raw());
    }
    let rgb = fit(img.to_rgb8(), w, h);
    let plane = h * w;
    let mut out = vec![0u8; 3 * plane];
    for (i, px) in rgb.pixels().enumerate() {
        out[i] = px[0];
        out[plane + i] = px[1];
        out[2 * plane + i] = px[2];
    }
    Ok(out)
}

/// `img` resized (bilinear) to `w` x `h`, or as it is when it already has that size.
fn fit<P: image::Pixel<Subpixel = u8> + 'static>(
    img: image::ImageBuffer<P, Vec<u8>>,
    w: usize,
    h: usize,
) -> image::ImageBuffer<P, Vec<u8>> {
    if img.width() as usize == w && img.height() as usize == h {
        img
    } else {
        image::imageops::resize(
            &img,
            w as u32,
            h as u32,
            image::imageops::FilterType::Triangle,
        )
    }
}

/// Reads and decodes one image file.
pub fn read_image(path: &Path, side: usize) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path).map_err(io_err(path))?;
    if meta.len() > MAX_IMAGE_BYTES {
        return Err(format_err(
            path,
            format!(
                "{} bytes is larger than the {MAX_IMAGE_BYTES}-byte image limit",
                meta.len()
            ),
        ));
    }
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    decode_image(&bytes, path, side)
}

/// Decodes `files` in parallel (one chunk per core) into one CHW byte buffer, in order; the
/// first failing file (in list order) is the error reported.
pub fn decode_all(files: &[PathBuf], side: usize) -> Result<Vec<u8>> {
    let per = 3 * side * side;
    let mut out = vec![0u8; files.len() * per];
    if files.is_empty() {
        return Ok(out);
    }
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(files.len());
    let chunk = files.len().div_ceil(threads);
    let results: Vec<Result<()>> = std::thread::scope(|s| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .zip(out.chunks_mut(chunk * per))
            .map(|(fs, dst)| {
                s.spawn(move || -> Result<()> {
                    for (f, d) in fs.iter().zip(dst.chunks_exact_mut(per)) {
                        d.copy_from_slice(&read_image(f, side)?);
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Config("image decoder thread panicked".into())))
            })
            .collect()
    });
    results.into_iter().collect::<Result<Vec<()>>>()?;
    Ok(out)
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Sorted entries of `dir`.
fn list_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(io_err(dir))?;
    let mut v = Vec::new();
    for e in rd {
        v.push(e.map_err(io_err(dir))?.path());
    }
    v.sort();
    Ok(v)
}

/// The first of `names` that exists under `root` as a folder (or file when `file`).
fn first_existing(root: &Path, names: &[&str], file: bool) -> Option<PathBuf> {
    names
        .iter()
        .map(|n| root.join(n))
        .find(|p| if file { p.is_file() } else { p.is_dir() })
}

/// One split as (files, labels) from a folder: class sub-folders (mapped through
/// `class_index`) or Animal-10N flat `<label>_<id>` files.
fn scan_split(dir: &Path, class_names: &[String]) -> Result<(Vec<PathBuf>, Vec<u32>)> {
    let entries = list_dir(dir)?;
    let subdirs: Vec<&PathBuf> = entries.iter().filter(|p| p.is_dir()).collect();
    let mut files = Vec::new();
    let mut labels = Vec::new();
    if !subdirs.is_empty() {
        for sd in subdirs {
            let name = sd.file_name().unwrap_or_default().to_string_lossy();
            let Some(k) = class_names.iter().position(|c| *c == name) else {
                return Err(format_err(
                    sd,
                    format!("class folder '{name}' does not exist in the training split"),
                ));
            };
            for f in list_dir(sd)? {
                if f.is_file() && is_image(&f) {
                    files.push(f);
                    labels.push(k as u32);
                }
            }
        }
    } else {
        for f in entries.iter().filter(|p| p.is_file() && is_image(p)) {
            labels.push(animal10n_label(f)?);
            files.push(f.clone());
        }
    }
    if files.is_empty() {
        return Err(format_err(
            dir,
            "no images found (expected class sub-folders or <label>_<id>.jpg files)",
        ));
    }
    Ok((files, labels))
}

/// The label of an Animal-10N file name `<label>_<id>.jpg`.
pub fn animal10n_label(path: &Path) -> Result<u32> {
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    stem.split('_')
        .next()
        .and_then(|s| s.parse::<u32>().ok())
        .filter(|&l| l < 100_000)
        .ok_or_else(|| {
            format_err(
                path,
                "file name is not <label>_<id> with a numeric label (Animal-10N layout)",
            )
        })
}

/// Class names of a training split: sorted sub-folder names, or for flat Animal-10N files
/// the numbers 0..=max label.
fn split_classes(dir: &Path) -> Result<Vec<String>> {
    let entries = list_dir(dir)?;
    let subdirs: Vec<String> = entries
        .iter()
        .filter(|p| p.is_dir())
        .map(|p| {
            p.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    if !subdirs.is_empty() {
        return Ok(subdirs);
    }
    let mut max = None;
    for f in entries.iter().filter(|p| p.is_file() && is_image(p)) {
        let l = animal10n_label(f)?;
        max = Some(max.map_or(l, |m: u32| m.max(l)));
    }
    match max {
        Some(m) => Ok((0..=m).map(|i| i.to_string()).collect()),
        None => Err(format_err(
            dir,
            "no images found (expected class sub-folders or <label>_<id>.jpg files)",
        )),
    }
}

/// Reads an image-folder data set rooted at `root` (see the module docs for the layout).
pub fn read_folder_root(root: &Path, side: usize) -> Result<(Dataset, Dataset)> {
    let train_dir = first_existing(root, &["train", "training"], false).ok_or_else(|| {
        missing(
            &root.join("train"),
            "no train/ or training/ folder (expected root/train/<class>/*.jpg \
             or root/training/<label>_<id>.jpg)",
        )
    })?;
    let test_dir = first_existing(root, &["test", "testing", "val", "validation"], false)
        .ok_or_else(|| {
            missing(
                &root.join("test"),
                "no test/, testing/, val/ or validation/ folder",
            )
        })?;
    let names = split_classes(&train_dir)?;
    let (train_files, train_labels) = scan_split(&train_dir, &names)?;
    let (test_files, test_labels) = scan_split(&test_dir, &names)?;
    if let Some(i) = test_labels.iter().position(|&l| l as usize >= names.len()) {
        return Err(format_err(
            &test_files[i],
            format!(
                "label {} is not a training class (0..{})",
                test_labels[i],
                names.len()
            ),
        ));
    }
    let make = |files: &[PathBuf], labels: Vec<u32>| -> Result<Dataset> {
        Ok(Dataset {
            images: decode_all(files, side)?,
            labels,
            shape: [3, side, side],
            classes: names.len(),
            class_names: names.clone(),
        })
    };
    Ok((
        make(&train_files, train_labels)?,
        make(&test_files, test_labels)?,
    ))
}

/// Parses `path label` lines (blank lines and `#` comments skipped). The label is the last
/// whitespace-separated field, so paths may contain spaces.
pub fn parse_list(text: &str, path: &Path) -> Result<Vec<(String, u32)>> {
    let mut out = Vec::new();
    for (no, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((file, label)) = line.rsplit_once(char::is_whitespace) else {
            return Err(format_err(
                path,
                format!("line {}: expected '<path> <label>', got '{line}'", no + 1),
            ));
        };
        // `a.jpg 0 7` is far more likely an extra column than a file named `a.jpg 0`.
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() > 2 && fields[fields.len() - 2].parse::<u32>().is_ok() {
            return Err(format_err(
                path,
                format!(
                    "line {}: {} fields in '{line}', expected '<path> <label>' (a path may hold spaces, but not end in ' <number>')",
                    no + 1,
                    fields.len()
                ),
            ));
        }
        let label: u32 = label
            .parse()
            .ok()
            .filter(|&l: &u32| l < 1_000_000)
            .ok_or_else(|| {
                format_err(
                    path,
                    format!("line {}: label '{label}' is not a class number", no + 1),
                )
            })?;
        out.push((file.trim().to_string(), label));
    }
    if out.is_empty() {
        return Err(format_err(path, "list file has no '<path> <label>' lines"));
    }
    Ok(out)
}

/// Finds a list file: `names` first, then any `*<suffix>` file in `root` (sorted, first).
fn find_list(root: &Path, names: &[&str], suffixes: &[&str]) -> Option<PathBuf> {
    if let Some(p) = first_existing(root, names, true) {
        return Some(p);
    }
    let mut entries = list_dir(root).ok()?;
    entries.retain(|p| {
        p.is_file()
            && p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| suffixes.iter().any(|s| n.ends_with(s)))
    });
    entries.into_iter().next()
}

/// Reads a list-file data set rooted at `root` (see the module docs).
pub fn read_list_root(root: &Path, side: usize) -> Result<(Dataset, Dataset)> {
    if !root.is_dir() {
        return Err(missing(root, "data directory not found"));
    }
    let train_list = find_list(root, &["train.txt"], &["_train.txt"]).ok_or_else(|| {
        missing(
            &root.join("train.txt"),
            "no train.txt or *_train.txt list file",
        )
    })?;
    let test_list = find_list(
        root,
        &["test.txt", "val.txt"],
        &["_test.txt", "_val.txt", "_val_filelist.txt"],
    )
    .ok_or_else(|| {
        missing(
            &root.join("test.txt"),
            "no test.txt, val.txt, *_test.txt or *_val.txt list file",
        )
    })?;
    let read = |p: &Path| -> Result<Vec<(String, u32)>> {
        let text = std::fs::read_to_string(p).map_err(io_err(p))?;
        parse_list(&text, p)
    };
    let train = read(&train_list)?;
    let test = read(&test_list)?;
    let classes = train
        .iter()
        .chain(&test)
        .map(|&(_, l)| l)
        .max()
        .unwrap_or(0) as usize
        + 1;
    let names: Vec<String> = (0..classes).map(|i| i.to_string()).collect();
    let make = |items: Vec<(String, u32)>| -> Result<Dataset> {
        let files: Vec<PathBuf> = items.iter().map(|(f, _)| root.join(f)).collect();
        Ok(Dataset {
            images: decode_all(&files, side)?,
            labels: items.iter().map(|&(_, l)| l).collect(),
            shape: [3, side, side],
            classes,
            class_names: names.clone(),
        })
    };
    Ok((make(train)?, make(test)?))
}
