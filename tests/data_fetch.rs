//! `data fetch` offline: a small HTTP server on 127.0.0.1 started by the test serves generated
//! archives in the official formats; checksums, atomic writes and unpacking are checked.

mod common;

use common::TempDir;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dynloss_wgpu::Error;
use dynloss_wgpu::data::cifar::read_cifar10;
use dynloss_wgpu::data::fetch::{FetchName, RemoteFile, fetch, fetch_files, hex, md5_file};
use dynloss_wgpu::data::{self, DataConfig, DatasetKind};
use md5::{Digest, Md5};

/// A tiny HTTP/1.1 file server on 127.0.0.1 for one test: serves `files` by name, 404s the
/// rest, counts requests, and stops when dropped (or after 60 s at the latest).
struct Server {
    base: String,
    stop: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<String>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(files: HashMap<String, Vec<u8>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (stop2, req2) = (stop.clone(), requests.clone());
        let handle = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop2.load(Ordering::Relaxed) && Instant::now() < deadline {
                let Ok((mut sock, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                sock.set_nonblocking(false).unwrap();
                sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&head);
                let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
                req2.lock().unwrap().push(path.clone());
                let name = path.trim_start_matches('/');
                let (status, body) = match files.get(name) {
                    Some(b) => ("200 OK", b.clone()),
                    None => ("404 Not Found", b"not here".to_vec()),
                };
                let _ = write!(
                    sock,
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: \
                     application/octet-stream\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(&body);
            }
        });
        Server {
            base,
            stop,
            requests,
            handle: Some(handle),
        }
    }

    fn request_count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn md5_hex(bytes: &[u8]) -> &'static str {
    Box::leak(hex(&Md5::digest(bytes)).into_boxed_str())
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// A CIFAR-10-binary-style .tar.gz with `per` records per batch, plus an entry outside the
/// data folder and one trying to escape with `..`.
fn cifar10_archive(per: usize) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        // Write the name bytes directly so even an unsafe name can be put in the archive.
        let name = &mut h.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        tar.append(&h, data).unwrap();
    };
    let batch = |seed: usize| -> Vec<u8> {
        (0..per)
            .flat_map(|i| {
                std::iter::once((i % 10) as u8)
                    .chain((0..3072).map(move |j| ((i + j + seed) % 256) as u8))
            })
            .collect()
    };
    for b in 1..=5 {
        add(
            &format!("cifar-10-batches-bin/data_batch_{b}.bin"),
            &batch(b),
        );
    }
    add("cifar-10-batches-bin/test_batch.bin", &batch(0));
    add(
        "cifar-10-batches-bin/batches.meta.txt",
        b"airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n",
    );
    add("elsewhere/readme.txt", b"skip me");
    add("../escaped.txt", b"must not be written");
    gzip(&tar.into_inner().unwrap())
}

/// Files in `dir`, recursively, relative names.
fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn cifar10_from_a_local_server() {
    let archive = cifar10_archive(20);
    let server = Server::start(HashMap::from([(
        "cifar-10-binary.tar.gz".to_string(),
        archive.clone(),
    )]));
    let tmp = TempDir::new("fetch-cifar");
    let data_dir = tmp.0.join("data");
    let files = [RemoteFile {
        name: "cifar-10-binary.tar.gz",
        url: "unused",
        md5: md5_hex(&archive),
    }];
    let dir = fetch_files(FetchName::Cifar10, &files, &data_dir, Some(&server.base)).unwrap();
    assert_eq!(dir, data_dir.join("cifar-10-batches-bin"));
    assert_eq!(
        listing(&data_dir),
        [
            "cifar-10-batches-bin/batches.meta.txt",
            "cifar-10-batches-bin/data_batch_1.bin",
            "cifar-10-batches-bin/data_batch_2.bin",
            "cifar-10-batches-bin/data_batch_3.bin",
            "cifar-10-batches-bin/data_batch_4.bin",
            "cifar-10-batches-bin/data_batch_5.bin",
            "cifar-10-batches-bin/test_batch.bin",
        ],
        "only the data folder is unpacked, the archive is removed, no temp files"
    );
    assert!(!tmp.0.join("escaped.txt").exists());
    let (train, test) = read_cifar10(&data_dir).unwrap();
    assert_eq!((train.len(), test.len()), (100, 20));

    // Already present: no second download.
    let before = server.request_count();
    fetch_files(FetchName::Cifar10, &files, &data_dir, Some(&server.base)).unwrap();
    assert_eq!(server.request_count(), before);

    // The official checksum rejects this fake archive, naming the file, and leaves nothing.
    let other = tmp.0.join("other");
    let e = fetch(
        FetchName::Cifar10,
        &other,
        Some(&format!("{}/", server.base)),
    )
    .unwrap_err();
    assert!(
        matches!(&e, Error::Format { path, .. } if path.ends_with("cifar-10-binary.tar.gz")),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("checksum mismatch") && msg.contains("c32a1d4ab5d03f1284b67883e8d87530"),
        "{msg}"
    );
    assert!(listing(&other).is_empty(), "{:?}", listing(&other));
}

fn mnist_files() -> Vec<(String, Vec<u8>)> {
    let idx = |dims: &[u32], data: Vec<u8>| {
        let mut v = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v.extend(data);
        gzip(&v)
    };
    let mut out = Vec::new();
    for (prefix, n) in [("train", 30u32), ("t10k", 10)] {
        out.push((
            format!("{prefix}-images-idx3-ubyte.gz"),
            idx(&[n, 28, 28], vec![7; n as usize * 784]),
        ));
        out.push((
            format!("{prefix}-labels-idx1-ubyte.gz"),
            idx(&[n], (0..n).map(|i| (i % 10) as u8).collect()),
        ));
    }
    out
}

fn remote(files: &[(String, Vec<u8>)]) -> Vec<RemoteFile> {
    files
        .iter()
        .map(|(name, bytes)| RemoteFile {
            name: Box::leak(name.clone().into_boxed_str()),
            url: "unused",
            md5: md5_hex(bytes),
        })
        .collect()
}

#[test]
fn mnist_from_a_local_server_and_a_local_folder() {
    let files = mnist_files();
    let server = Server::start(files.iter().cloned().collect());
    let tmp = TempDir::new("fetch-mnist");
    let data_dir = tmp.0.join("data");
    fetch_files(
        FetchName::Mnist,
        &remote(&files),
        &data_dir,
        Some(&server.base),
    )
    .unwrap();
    assert_eq!(
        listing(&data_dir),
        [
            "mnist/t10k-images-idx3-ubyte",
            "mnist/t10k-labels-idx1-ubyte",
            "mnist/train-images-idx3-ubyte",
            "mnist/train-labels-idx1-ubyte",
        ]
    );
    let cfg = DataConfig {
        dataset: DatasetKind::Mnist,
        data_dir: Some(data_dir.clone()),
        ..DataConfig::default()
    };
    let (train, test) = data::load(&cfg).unwrap();
    assert_eq!((train.data.len(), test.len()), (30, 10));

    // A mirror that is a folder, given as a path and as a file:// URL.
    let mirror = tmp.0.join("mirror");
    std::fs::create_dir_all(&mirror).unwrap();
    for (name, bytes) in &files {
        std::fs::write(mirror.join(name), bytes).unwrap();
    }
    for (k, m) in [
        mirror.display().to_string(),
        format!("file://{}", mirror.display()),
    ]
    .iter()
    .enumerate()
    {
        let dest = tmp.0.join(format!("local{k}"));
        fetch_files(FetchName::FashionMnist, &remote(&files), &dest, Some(m)).unwrap();
        assert!(dest.join("fashion-mnist/train-images-idx3-ubyte").is_file());
        // Unpacked to exactly the served file's contents, and md5_file hashes those bytes.
        let unpacked = std::fs::read(dest.join("fashion-mnist/t10k-labels-idx1-ubyte")).unwrap();
        let served = &files
            .iter()
            .find(|(n, _)| n == "t10k-labels-idx1-ubyte.gz")
            .unwrap()
            .1;
        let mut expected = Vec::new();
        flate2::read::GzDecoder::new(&served[..])
            .read_to_end(&mut expected)
            .unwrap();
        assert_eq!(unpacked, expected);
        let md5 = md5_file(&dest.join("fashion-mnist/t10k-labels-idx1-ubyte")).unwrap();
        assert_eq!(md5, hex(&Md5::digest(&expected)));
    }

    // A file missing on the server: the error names the file and the HTTP status.
    let server = Server::start(HashMap::new());
    let dest = tmp.0.join("missing");
    let e = fetch_files(FetchName::Mnist, &remote(&files), &dest, Some(&server.base)).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("train-images-idx3-ubyte.gz") && msg.contains("404"),
        "{msg}"
    );
    assert!(listing(&dest).is_empty(), "{:?}", listing(&dest));
}
