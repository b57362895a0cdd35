//! MNIST / Fashion-MNIST idx readers (plain or gzipped). An idx file is a 4-byte magic
//! (0, 0, type, ndim), ndim big-endian u32 sizes, then the data; only unsigned bytes
//! (type 0x08) occur in these sets.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{Dataset, format_err, io_err, missing};
use crate::error::Result;

/// Largest decompressed file accepted: guards against a corrupt or hostile .gz expanding
/// without bound (the largest real file, MNIST train images, is 47 MB).
pub const MAX_DECOMPRESSED: u64 = 1 << 30;

/// Debian's `dataset-fashion-mnist` package installs the gzipped files here.
pub const DEBIAN_FASHION_MNIST: &str = "/usr/share/datasets/fashion-mnist";

/// Fashion-MNIST class names in label order.
pub const FASHION_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// The four files of an MNIST-style set, without the optional `.gz`.
pub const MNIST_FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// A parsed idx array of bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxArray {
    /// Sizes of each dimension.
    pub dims: Vec<usize>,
    /// The data, row-major.
    pub data: Vec<u8>,
}

/// Decompresses `bytes` if they start with the gzip magic, else returns them unchanged.
pub fn maybe_gunzip(bytes: Vec<u8>, path: &Path) -> Result<Vec<u8>> {
    if bytes.len() < 2 || bytes[0] != 0x1f || bytes[1] != 0x8b {
        return Ok(bytes);
    }
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(&bytes[..])
        .take(MAX_DECOMPRESSED + 1)
        .read_to_end(&mut out)
        .map_err(|e| format_err(path, format!("corrupt gzip data: {e}")))?;
    if out.len() as u64 > MAX_DECOMPRESSED {
        return Err(format_err(
            path,
            format!("decompresses to more than {MAX_DECOMPRESSED} bytes"),
        ));
    }
    Ok(out)
}

/// Parses an idx file of unsigned bytes; the data must fill the file exactly.
pub fn parse_idx(bytes: &[u8], path: &Path) -> Result<IdxArray> {
    if bytes.len() < 4 {
        return Err(format_err(
            path,
            format!("{} bytes is too short for an idx header", bytes.len()),
        ));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(format_err(
            path,
            format!(
                "wrong magic {:02x} {:02x} {:02x} {:02x}: not an idx file \
                 (expected 00 00 08 <ndim>)",
                bytes[0], bytes[1], bytes[2], bytes[3]
            ),
        ));
    }
    if bytes[2] != 0x08 {
        return Err(format_err(
            path,
            format!(
                "idx element type 0x{:02x} is not supported (expected 0x08, unsigned byte)",
                bytes[2]
            ),
        ));
    }
    let ndim = bytes[3] as usize;
    if ndim == 0 || ndim > 4 {
        return Err(format_err(
            path,
            format!("idx dimension count {ndim} is outside 1..=4"),
        ));
    }
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(format_err(
            path,
            format!("truncated header: {} bytes, need {header}", bytes.len()),
        ));
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|i| {
            let b = &bytes[4 + 4 * i..8 + 4 * i];
            u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
        })
        .collect();
    let want = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format_err(path, format!("idx sizes {dims:?} overflow")))?;
    let have = bytes.len() - header;
    if have < want {
        return Err(format_err(
            path,
            format!(
                "truncated: the header's shape {dims:?} needs {want} data bytes, the file has {have}"
            ),
        ));
    }
    if have > want {
        return Err(format_err(
            path,
            format!(
                "the header's shape {dims:?} ({ndim} dimensions) does not match the file size: it needs {want} data bytes, the file has {have} (a damaged header, or bytes appended)"
            ),
        ));
    }
    Ok(IdxArray {
        dims,
        data: bytes[header..].to_vec(),
    })
}

/// Reads an idx file, gunzipping it if needed.
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let bytes = maybe_gunzip(bytes, path)?;
    parse_idx(&bytes, path)
}

/// `dir/name` or `dir/name.gz`, whichever exists (plain first).
fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    [dir.join(name), dir.join(format!("{name}.gz"))]
        .into_iter()
        .find(|p| p.is_file())
}

/// Reads one split (images + labels) into a data set of 1 x rows x cols images.
pub fn read_split(images: &Path, labels: &Path, class_names: &[&str]) -> Result<Dataset> {
    let img = read_idx(images)?;
    let lab = read_idx(labels)?;
    if img.dims.len() != 3 {
        return Err(format_err(
            images,
            format!(
                "expected 3 dimensions (count, rows, cols) for images, found {:?}",
                img.dims
            ),
        ));
    }
    if lab.dims.len() != 1 {
        return Err(format_err(
            labels,
            format!("expected 1 dimension for labels, found {:?}", lab.dims),
        ));
    }
    if img.dims[0] != lab.dims[0] {
        return Err(format_err(
            labels,
            format!(
                "{} labels for {} images in {}",
                lab.dims[0],
                img.dims[0],
                images.display()
            ),
        ));
    }
    let classes = class_names.len();
    if let Some((i, &l)) = lab
        .data
        .iter()
        .enumerate()
        .find(|&(_, &l)| l as usize >= classes)
    {
        return Err(format_err(
            labels,
            format!("label {i}: value {l} out of range 0..{classes}"),
        ));
    }
    Ok(Dataset {
        images: img.data,
        labels: lab.data.iter().map(|&l| l as u32).collect(),
        shape: [1, img.dims[1], img.dims[2]],
        classes,
        class_names: class_names.iter().map(|s| s.to_string()).collect(),
    })
}

/// Reads MNIST (or Fashion-MNIST when `fashion`) from the first folder that has the files:
/// `dir`, `dir/mnist` or `dir/fashion-mnist`, and for Fashion-MNIST with no explicit
/// directory (`explicit` false) also Debian's system location.
pub fn read_mnist(dir: &Path, explicit: bool, fashion: bool) -> Result<(Dataset, Dataset)> {
    let sub = if fashion { "fashion-mnist" } else { "mnist" };
    let mut cands = vec![dir.to_path_buf(), dir.join(sub)];
    if fashion && !explicit {
        cands.push(PathBuf::from(DEBIAN_FASHION_MNIST));
    }
    let root = cands
        .iter()
        .find(|d| find_file(d, MNIST_FILES[0]).is_some())
        .ok_or_else(|| {
            let looked: Vec<String> = cands.iter().map(|c| c.display().to_string()).collect();
            missing(
                &dir.join(sub).join(format!("{}.gz", MNIST_FILES[0])),
                &format!(
                    "not found (looked in {}); download it with \
                     `dynloss-wgpu data fetch {sub} --data-dir {}`",
                    looked.join(", "),
                    dir.display()
                ),
            )
        })?;
    let file = |name: &str| {
        find_file(root, name).ok_or_else(|| {
            missing(
                &root.join(format!("{name}.gz")),
                "not found (neither plain nor .gz)",
            )
        })
    };
    let digits: Vec<String> = (0..10).map(|d| d.to_string()).collect();
    let names: Vec<&str> = if fashion {
        FASHION_CLASSES.to_vec()
    } else {
        digits.iter().map(String::as_str).collect()
    };
    let train = read_split(&file(MNIST_FILES[0])?, &file(MNIST_FILES[1])?, &names)?;
    let test = read_split(&file(MNIST_FILES[2])?, &file(MNIST_FILES[3])?, &names)?;
    Ok((train, test))
}
