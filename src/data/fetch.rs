//! `data fetch`: downloads a data set from its official address (or a mirror given by the
//! user), checks the published MD5 of every file, and unpacks it where the readers look.
//!
//! Every file is written to a temporary name and renamed into place only when complete and
//! verified, so an interrupted fetch leaves nothing that looks valid.

use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use md5::{Digest, Md5};

use super::{cifar, format_err, idx, io_err};
use crate::choice::Choice;
use crate::error::{Error, Result};
use crate::report::temp_path;

/// Environment variable naming a mirror base (http(s) URL, `file://` URL or folder) used
/// instead of the official addresses; file names are appended to it.
pub const MIRROR_ENV: &str = "DYNLOSS_DATA_MIRROR";

/// A data set that `data fetch` can download.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchName {
    /// CIFAR-10, binary version.
    Cifar10,
    /// CIFAR-100, binary version.
    Cifar100,
    /// MNIST.
    Mnist,
    /// Fashion-MNIST.
    FashionMnist,
}

/// One file to download with its official address and published MD5.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteFile {
    /// File name (appended to a mirror base).
    pub name: &'static str,
    /// Official address.
    pub url: &'static str,
    /// Published MD5, lower-case hex.
    pub md5: &'static str,
}

const CIFAR10_FILES: [RemoteFile; 1] = [RemoteFile {
    name: "cifar-10-binary.tar.gz",
    url: "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
    md5: "c32a1d4ab5d03f1284b67883e8d87530",
}];

const CIFAR100_FILES: [RemoteFile; 1] = [RemoteFile {
    name: "cifar-100-binary.tar.gz",
    url: "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
    md5: "03b5dce01913d631647c71ecec9e9cb8",
}];

const MNIST_REMOTE: [RemoteFile; 4] = [
    RemoteFile {
        name: "train-images-idx3-ubyte.gz",
        url: "http://yann.lecun.com/exdb/mnist/train-images-idx3-ubyte.gz",
        md5: "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    },
    RemoteFile {
        name: "train-labels-idx1-ubyte.gz",
        url: "http://yann.lecun.com/exdb/mnist/train-labels-idx1-ubyte.gz",
        md5: "d53e105ee54ea40749a09fcbcd1e9432",
    },
    RemoteFile {
        name: "t10k-images-idx3-ubyte.gz",
        url: "http://yann.lecun.com/exdb/mnist/t10k-images-idx3-ubyte.gz",
        md5: "9fb629c4189551a2d022fa330f9573f3",
    },
    RemoteFile {
        name: "t10k-labels-idx1-ubyte.gz",
        url: "http://yann.lecun.com/exdb/mnist/t10k-labels-idx1-ubyte.gz",
        md5: "ec29112dd5afa0611ce80d1b7f02629c",
    },
];

const FASHION_REMOTE: [RemoteFile; 4] = [
    RemoteFile {
        name: "train-images-idx3-ubyte.gz",
        url: "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/train-images-idx3-ubyte.gz",
        md5: "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    },
    RemoteFile {
        name: "train-labels-idx1-ubyte.gz",
        url: "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/train-labels-idx1-ubyte.gz",
        md5: "25c81989df183df01b3e8a0aad5dffbe",
    },
    RemoteFile {
        name: "t10k-images-idx3-ubyte.gz",
        url: "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/t10k-images-idx3-ubyte.gz",
        md5: "bef4ecab320f06d8554ea6380940ec79",
    },
    RemoteFile {
        name: "t10k-labels-idx1-ubyte.gz",
        url: "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/t10k-labels-idx1-ubyte.gz",
        md5: "bb300cfdad3c16e7a12a480ee83cd310",
    },
];

impl Choice for FetchName {
    const WHAT: &'static str = "data set to fetch";
    const ALL: &'static [Self] = &[
        FetchName::Cifar10,
        FetchName::Cifar100,
        FetchName::Mnist,
        FetchName::FashionMnist,
    ];

    fn name(self) -> &'static str {
        match self {
            FetchName::Cifar10 => "cifar10",
            FetchName::Cifar100 => "cifar100",
            FetchName::Mnist => "mnist",
            FetchName::FashionMnist => "fashion-mnist",
        }
    }
}
crate::choice_by_name!(FetchName);

impl FetchName {
    /// The files of this data set with their official addresses and checksums.
    pub fn files(self) -> &'static [RemoteFile] {
        match self {
            FetchName::Cifar10 => &CIFAR10_FILES,
            FetchName::Cifar100 => &CIFAR100_FILES,
            FetchName::Mnist => &MNIST_REMOTE,
            FetchName::FashionMnist => &FASHION_REMOTE,
        }
    }

    /// The folder under the data directory the set ends up in (where the readers look).
    pub fn folder(self) -> &'static str {
        match self {
            FetchName::Cifar10 => cifar::CIFAR10_DIR,
            FetchName::Cifar100 => cifar::CIFAR100_DIR,
            FetchName::Mnist => "mnist",
            FetchName::FashionMnist => "fashion-mnist",
        }
    }

    /// The files a complete unpacked copy has, relative to the data directory.
    pub fn unpacked_files(self) -> Vec<PathBuf> {
        let dir = Path::new(self.folder());
        match self {
            FetchName::Cifar10 => cifar::CIFAR10_TRAIN
                .iter()
                .chain(&[cifar::CIFAR10_TEST])
                .map(|f| dir.join(f))
                .collect(),
            FetchName::Cifar100 => vec![dir.join("train.bin"), dir.join("test.bin")],
            FetchName::Mnist | FetchName::FashionMnist => {
                idx::MNIST_FILES.iter().map(|f| dir.join(f)).collect()
            }
        }
    }
}

/// The address of `file`: the official one, or `mirror` + '/' + file name.
pub fn source_for(file: &RemoteFile, mirror: Option<&str>) -> String {
    match mirror {
        Some(m) => format!("{}/{}", m.trim_end_matches('/'), file.name),
        None => file.url.to_string(),
    }
}

/// MD5 of a file as lower-case hex.
pub fn md5_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(io_err(path))?;
    let mut h = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Opens `source` for reading: an http(s) URL, a `file://` URL or a local path.
fn open_source(source: &str, dest: &Path) -> Result<Box<dyn Read>> {
    let fail = |msg: String| Error::Io {
        path: dest.to_path_buf(),
        source: std::io::Error::other(msg),
    };
    if source.starts_with("http://") || source.starts_with("https://") {
        let host = source
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split(['/', ':']).next())
            .unwrap_or("");
        let loopback = host == "localhost" || host.starts_with("127.") || host == "[::1]";
        let mut cfg = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .user_agent(concat!("dynloss-wgpu/", env!("CARGO_PKG_VERSION")));
        if loopback {
            // A local server must not be sent through a proxy from the environment.
            cfg = cfg.proxy(None);
        }
        let agent = ureq::Agent::new_with_config(cfg.build());
        let resp = agent
            .get(source)
            .call()
            .map_err(|e| fail(format!("download of {source} failed: {e}")))?;
        Ok(Box::new(resp.into_body().into_reader()))
    } else {
        let path = PathBuf::from(source.strip_prefix("file://").unwrap_or(source));
        let f = std::fs::File::open(&path).map_err(io_err(&path))?;
        Ok(Box::new(f))
    }
}

/// Downloads `source` to `dest`, verifying its MD5 against `md5`: the bytes go to a temporary
/// file that is renamed to `dest` only when the checksum matches, and removed otherwise.
pub fn download(source: &str, dest: &Path, md5: &str) -> Result<()> {
    if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    let tmp = temp_path(dest);
    let result = (|| {
        let mut input = open_source(source, dest)?;
        let mut out = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
        let mut h = Md5::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = input.read(&mut buf).map_err(|e| Error::Io {
                path: dest.to_path_buf(),
                source: std::io::Error::new(e.kind(), format!("reading {source}: {e}")),
            })?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(io_err(&tmp))?;
        }
        out.sync_all().map_err(io_err(&tmp))?;
        let got = hex(&h.finalize());
        if !got.eq_ignore_ascii_case(md5) {
            return Err(format_err(
                dest,
                format!("checksum mismatch for {source}: MD5 {got}, expected {md5}"),
            ));
        }
        std::fs::rename(&tmp, dest).map_err(io_err(dest))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Copies `reader` to `dest` through a temporary file and a rename.
fn write_stream_atomic(reader: &mut dyn Read, dest: &Path, what: &Path) -> Result<()> {
    if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    let tmp = temp_path(dest);
    let result = (|| {
        let mut out = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
        std::io::copy(reader, &mut out)
            .map_err(|e| format_err(what, format!("cannot unpack {}: {e}", dest.display())))?;
        out.sync_all().map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, dest).map_err(io_err(dest))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Unpacks the regular files of a .tar.gz under `top/` into `dest_dir/top/`. Entries outside
/// `top/`, links, absolute paths and `..` components are skipped, so an archive cannot write
/// outside the data directory. Returns the files written.
pub fn unpack_tar_gz(archive: &Path, dest_dir: &Path, top: &str) -> Result<Vec<PathBuf>> {
    let f = std::fs::File::open(archive).map_err(io_err(archive))?;
    let gz = flate2::read::GzDecoder::new(std::io::BufReader::new(f));
    let mut ar = tar::Archive::new(gz);
    let bad = |e: std::io::Error| format_err(archive, format!("corrupt tar.gz archive: {e}"));
    let mut written = Vec::new();
    for entry in ar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let rel = entry.path().map_err(bad)?.into_owned();
        let safe = rel.components().all(|c| matches!(c, Component::Normal(_)));
        if !safe || rel.components().next() != Some(Component::Normal(top.as_ref())) {
            continue;
        }
        let dest = dest_dir.join(&rel);
        write_stream_atomic(&mut entry, &dest, archive)?;
        written.push(dest);
    }
    if written.is_empty() {
        return Err(format_err(
            archive,
            format!("archive holds no files under {top}/"),
        ));
    }
    Ok(written)
}

/// Decompresses a .gz file to `dest` atomically.
pub fn gunzip_file(src: &Path, dest: &Path) -> Result<()> {
    let f = std::fs::File::open(src).map_err(io_err(src))?;
    let mut gz =
        flate2::read::MultiGzDecoder::new(std::io::BufReader::new(f)).take(idx::MAX_DECOMPRESSED);
    write_stream_atomic(&mut gz, dest, src)
}

/// Fetches data set `name` into `data_dir` (from `mirror` if given, else the official
/// addresses), verifies and unpacks it; returns the folder the readers will use. A complete
/// unpacked copy already present is left alone.
pub fn fetch(name: FetchName, data_dir: &Path, mirror: Option<&str>) -> Result<PathBuf> {
    fetch_files(name, name.files(), data_dir, mirror)
}

/// [`fetch`] with an explicit file list (tests use it with checksums of their own archives).
pub fn fetch_files(
    name: FetchName,
    files: &[RemoteFile],
    data_dir: &Path,
    mirror: Option<&str>,
) -> Result<PathBuf> {
    let folder = data_dir.join(name.folder());
    if name
        .unpacked_files()
        .iter()
        .all(|f| data_dir.join(f).is_file())
    {
        return Ok(folder);
    }
    std::fs::create_dir_all(data_dir).map_err(io_err(data_dir))?;
    match name {
        FetchName::Cifar10 | FetchName::Cifar100 => {
            let file = files
                .first()
                .ok_or_else(|| Error::Config("no archive to fetch".into()))?;
            let archive = data_dir.join(file.name);
            download(&source_for(file, mirror), &archive, file.md5)?;
            unpack_tar_gz(&archive, data_dir, name.folder())?;
            let _ = std::fs::remove_file(&archive);
            if let Some(f) = name
                .unpacked_files()
                .iter()
                .find(|f| !data_dir.join(f).is_file())
            {
                return Err(format_err(
                    &archive,
                    format!("archive did not contain {}", f.display()),
                ));
            }
        }
        FetchName::Mnist | FetchName::FashionMnist => {
            for file in files {
                let gz = folder.join(file.name);
                download(&source_for(file, mirror), &gz, file.md5)?;
                let plain = folder.join(file.name.trim_end_matches(".gz"));
                gunzip_file(&gz, &plain)?;
                let _ = std::fs::remove_file(&gz);
            }
        }
    }
    Ok(folder)
}
