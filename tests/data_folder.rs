//! Image-folder, Animal-10N and list-file readers on generated PNG/JPEG files.

mod common;

use common::TempDir;
use std::path::Path;

use dynloss_wgpu::Error;
use dynloss_wgpu::data::folder::{decode_image, parse_list, read_folder_root, read_list_root};
use dynloss_wgpu::data::{self, DataConfig, DatasetKind};
use rand::{RngExt, SeedableRng};

/// Saves a `w` x `h` image filled with `rgb` (format from the extension).
fn save(path: &Path, w: u32, h: u32, rgb: [u8; 3]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_pixel(w, h, image::Rgb(rgb))
        .save(path)
        .unwrap();
}

#[test]
fn class_folders_are_read_and_resized() {
    let tmp = TempDir::new("folder");
    let root = &tmp.0;
    // Classes in sorted order: bird=0, cat=1, dog=2. Mixed sizes and formats.
    let colours = [
        ("bird", [200, 10, 10]),
        ("cat", [10, 200, 10]),
        ("dog", [10, 10, 200]),
    ];
    for (k, (name, c)) in colours.iter().enumerate() {
        for i in 0..(3 + k) {
            save(
                &root.join("train").join(name).join(format!("{i}.png")),
                40 + i as u32,
                24,
                *c,
            );
        }
        save(&root.join("test").join(name).join("a.jpg"), 64, 64, *c);
    }
    std::fs::write(root.join("train/cat/notes.txt"), "not an image").unwrap();
    let (train, test) = read_folder_root(root, 16).unwrap();
    assert_eq!(train.class_names, ["bird", "cat", "dog"]);
    assert_eq!(train.class_counts(), vec![3, 4, 5]);
    assert_eq!(test.class_counts(), vec![1, 1, 1]);
    assert_eq!(train.shape, [3, 16, 16]);
    // Sample 3 is the first cat: green plane full, red plane empty.
    let img = train.image(3);
    assert_eq!(train.labels[3], 1);
    assert!(img[..256].iter().all(|&v| v == 10) && img[256..512].iter().all(|&v| v == 200));
    // JPEG decodes close to the colour.
    let t = test.image(2);
    assert!(
        t[512..].iter().all(|&v| v > 180),
        "blue plane of the dog test image"
    );

    // Through load(): default side 32, long tail on the given counts.
    let cfg = DataConfig {
        dataset: DatasetKind::Folder,
        data_dir: Some(root.clone()),
        imbalance: 2.0,
        ..DataConfig::default()
    };
    let (lt, test) = data::load(&cfg).unwrap();
    assert_eq!(test.shape, [3, 32, 32]);
    // n_max = smallest class (3): 3, floor(3 * 2^-0.5) = 2, floor(3 / 2) = 1.
    assert_eq!(lt.data.class_counts(), vec![3, 2, 1]);
}

#[test]
fn animal10n_flat_names() {
    let tmp = TempDir::new("animal10n");
    for (split, n) in [("training", 20), ("testing", 10)] {
        for i in 0..n {
            let label = i % 10;
            save(
                &tmp.0.join(split).join(format!("{label}_{:05}.jpg", i * 7)),
                64,
                64,
                [label as u8 * 20, 0, 0],
            );
        }
    }
    let (train, test) = read_folder_root(&tmp.0, 32).unwrap();
    assert_eq!(train.classes, 10);
    assert_eq!(train.class_counts(), vec![2; 10]);
    assert_eq!(test.class_counts(), vec![1; 10]);

    save(&tmp.0.join("training/cat_1.jpg"), 8, 8, [0, 0, 0]);
    let msg = read_folder_root(&tmp.0, 32).unwrap_err().to_string();
    assert!(
        msg.contains("cat_1.jpg") && msg.contains("<label>_<id>"),
        "{msg}"
    );
}

#[test]
fn list_files_are_read() {
    let tmp = TempDir::new("list");
    let root = &tmp.0;
    for i in 0..6 {
        save(
            &root.join(format!("imgs/train/{i}.png")),
            10,
            10,
            [i * 40, 0, 0],
        );
    }
    save(&root.join("imgs/val/x y.png"), 10, 10, [0, 0, 0]);
    std::fs::write(
        root.join("ImageNet_LT_train.txt"),
        "# comment\nimgs/train/0.png 0\nimgs/train/1.png 0\nimgs/train/2.png 1\n\n\
         imgs/train/3.png 1\nimgs/train/4.png 2\nimgs/train/5.png 2\n",
    )
    .unwrap();
    std::fs::write(root.join("ImageNet_LT_val.txt"), "imgs/val/x y.png 2\n").unwrap();
    let (train, test) = read_list_root(root, 8).unwrap();
    assert_eq!(train.classes, 3);
    assert_eq!(train.labels, vec![0, 0, 1, 1, 2, 2]);
    assert_eq!(test.labels, vec![2]);
    assert_eq!(train.image(5)[0], 200);

    // A listed file that does not exist is named.
    std::fs::write(root.join("ImageNet_LT_val.txt"), "imgs/val/missing.png 2\n").unwrap();
    let e = read_list_root(root, 8).unwrap_err();
    assert!(
        matches!(&e, Error::Io { path, .. } if path.ends_with("imgs/val/missing.png")),
        "{e}"
    );
}

#[test]
fn bad_input_gives_one_clear_error() {
    let tmp = TempDir::new("folder-bad");
    let root = &tmp.0;
    let msg = read_folder_root(root, 32).unwrap_err().to_string();
    assert!(msg.contains("train") && msg.contains("folder"), "{msg}");

    save(&root.join("train/a/1.png"), 4, 4, [1, 2, 3]);
    save(&root.join("test/a/1.png"), 4, 4, [1, 2, 3]);
    // An unreadable image: named, with the decoder's reason.
    let bad = root.join("train/a/2.jpg");
    std::fs::write(&bad, b"\xff\xd8\xff\xe0 this is not really a jpeg").unwrap();
    let e = read_folder_root(root, 32).unwrap_err();
    assert!(
        matches!(&e, Error::Format { path, .. } if *path == bad),
        "{e}"
    );
    assert!(e.to_string().contains("cannot decode image"), "{e}");
    std::fs::remove_file(&bad).unwrap();

    // A test class that the training split lacks.
    save(&root.join("test/zebra/1.png"), 4, 4, [1, 2, 3]);
    let msg = read_folder_root(root, 32).unwrap_err().to_string();
    assert!(
        msg.contains("zebra") && msg.contains("training split"),
        "{msg}"
    );

    // List-file syntax errors name the line.
    let p = Path::new("list.txt");
    let msg = parse_list("a.jpg 1\nb.jpg\n", p).unwrap_err().to_string();
    assert!(msg.contains("list.txt") && msg.contains("line 2"), "{msg}");
    let msg = parse_list("a.jpg x\n", p).unwrap_err().to_string();
    assert!(msg.contains("line 1") && msg.contains("'x'"), "{msg}");
    assert!(parse_list("\n# only comments\n", p).is_err());
    // An extra column is named as such, not read as a path `a.jpg 0` (issue: it failed later
    // as a missing file).
    let msg = parse_list("a.jpg 1\nimg/a.jpg 0 7\n", p)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("line 2") && msg.contains("3 fields") && msg.contains("'img/a.jpg 0 7'"),
        "{msg}"
    );
    assert_eq!(
        parse_list("dir/a b.jpg 3", p).unwrap(),
        vec![("dir/a b.jpg".to_string(), 3)]
    );
    let msg = read_list_root(root, 32).unwrap_err().to_string();
    assert!(msg.contains("train.txt"), "{msg}");
}

#[test]
fn random_bytes_never_panic_the_decoder() {
    let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(3);
    let mut png = Vec::new();
    image::RgbImage::from_pixel(5, 5, image::Rgb([9, 9, 9]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    for i in 0..300 {
        let bytes: Vec<u8> = if i % 2 == 0 {
            // A valid PNG with a few random byte flips.
            let mut b = png.clone();
            for _ in 0..rng.random_range(1..6) {
                let k = rng.random_range(0..b.len());
                b[k] = rng.random();
            }
            b
        } else {
            (0..rng.random_range(0..200))
                .map(|_| rng.random())
                .collect()
        };
        if let Ok(px) = decode_image(&bytes, Path::new("fuzz.png"), 4) {
            assert_eq!(px.len(), 48);
        }
    }
}
