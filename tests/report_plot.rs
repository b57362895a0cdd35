//! PNG charts: they decode, have ink where expected, are written atomically, and reject
//! inconsistent input with an error instead of a panic.

mod common;

use common::TempDir;
use std::path::PathBuf;

use dynloss_wgpu::report::plot::{PALETTE, bar_chart, format_tick, line_chart, nice_ticks};
use dynloss_wgpu::report::{font, write_atomic};

/// Where preview charts go: DYNLOSS_PREVIEW_DIR if set (to look at them), else the temp dir.
fn out_dir(tmp: &TempDir) -> PathBuf {
    std::env::var("DYNLOSS_PREVIEW_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| tmp.0.clone())
}

fn count_colour(img: &image::RgbImage, c: [u8; 3]) -> usize {
    img.pixels().filter(|p| p.0 == c).count()
}

#[test]
fn bar_chart_draws_groups_and_legend() {
    let tmp = TempDir::new("bars");
    let path = out_dir(&tmp).join("bars.png");
    let labels: Vec<String> = ["airplane", "automobile", "bird", "cat", "deer"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let a = vec![5000.0, 3871.0, 2997.0, 2320.0, 1796.0];
    let b = vec![4400.0, 3500.0, 2900.0, 2500.0, 2100.0];
    let c = vec![600.0, 371.0, 97.0, 0.0, 10.0];
    bar_chart(
        &path,
        "CIFAR-10 rho=10 (first five classes)",
        &labels,
        &[("true", a), ("noisy", b), ("flipped", c)],
    )
    .unwrap();
    let img = image::open(&path).unwrap().to_rgb8();
    assert!(img.width() >= 600 && img.height() >= 300);
    // Each series colour is present: bars plus the legend swatch.
    for (k, &c) in PALETTE.iter().take(3).enumerate() {
        assert!(count_colour(&img, c) > 500, "series {k}");
    }
    let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn bar_chart_with_many_long_labels() {
    let tmp = TempDir::new("bars100");
    let path = out_dir(&tmp).join("bars100.png");
    let labels: Vec<String> = (0..100)
        .map(|i| format!("class_name_{i:03}_long"))
        .collect();
    let v: Vec<f64> = (0..100)
        .map(|i| 500.0 * 0.01f64.powf(i as f64 / 99.0))
        .collect();
    let w: Vec<f64> = v.iter().map(|x| x * 0.8 + 20.0).collect();
    bar_chart(
        &path,
        "CIFAR-100 rho=100",
        &labels,
        &[("true", v), ("noisy", w)],
    )
    .unwrap();
    let img = image::open(&path).unwrap().to_rgb8();
    assert!(img.height() > 400, "rotated labels need room");
}

#[test]
fn line_chart_draws_series_axes_and_labels() {
    let tmp = TempDir::new("lines");
    let path = out_dir(&tmp).join("lines.png");
    let acc: Vec<(f64, f64)> = (0..30)
        .map(|e| (e as f64, 90.0 - 80.0 * (-(e as f64) / 6.0).exp()))
        .collect();
    let mut loss: Vec<(f64, f64)> = (0..30)
        .map(|e| (e as f64, 60.0 * (-(e as f64) / 8.0).exp()))
        .collect();
    loss[12].1 = f64::NAN; // a gap, not a crash
    line_chart(
        &path,
        "test accuracy and loss",
        "epoch",
        "percent",
        &[("accuracy", acc), ("loss x20", loss)],
    )
    .unwrap();
    let img = image::open(&path).unwrap().to_rgb8();
    assert_eq!(img.width(), 820);
    assert!(count_colour(&img, PALETTE[0]) > 300);
    assert!(count_colour(&img, PALETTE[1]) > 300);
    // Dark text pixels exist on the left (y label and ticks) and at the bottom (x label).
    let dark = |x0: u32, x1: u32, y0: u32, y1: u32| {
        (y0..y1)
            .flat_map(|y| (x0..x1).map(move |x| (x, y)))
            .filter(|&(x, y)| img.get_pixel(x, y).0 == [30, 30, 30])
            .count()
    };
    assert!(dark(0, 30, 100, img.height() - 60) > 20, "rotated y label");
    assert!(
        dark(300, 520, img.height() - 30, img.height()) > 20,
        "x label"
    );
}

#[test]
fn degenerate_input_is_handled() {
    let tmp = TempDir::new("degenerate");
    let p = tmp.0.join("x.png");
    // Flat, empty and non-finite series still draw.
    line_chart(&p, "flat", "x", "y", &[("c", vec![(1.0, 5.0), (2.0, 5.0)])]).unwrap();
    line_chart(&p, "empty", "", "", &[]).unwrap();
    line_chart(
        &p,
        "nan",
        "x",
        "y",
        &[("n", vec![(f64::NAN, 1.0), (0.0, f64::INFINITY)])],
    )
    .unwrap();
    bar_chart(&p, "zeros", &["a".into()], &[("z", vec![0.0])]).unwrap();
    bar_chart(
        &p,
        "negative",
        &["a".into(), "b".into()],
        &[("z", vec![-3.0, 2.0])],
    )
    .unwrap();
    // Inconsistent input is an error.
    let e = bar_chart(&p, "bad", &["a".into(), "b".into()], &[("z", vec![1.0])]).unwrap_err();
    assert!(
        e.to_string()
            .contains("series 'z' has 1 values for 2 labels"),
        "{e}"
    );
    assert!(bar_chart(&p, "none", &[], &[]).is_err());
    // An unwritable destination names the file.
    let blocked = tmp.0.join("file-not-dir");
    std::fs::write(&blocked, b"x").unwrap();
    let e = bar_chart(
        &blocked.join("chart.png"),
        "t",
        &["a".into()],
        &[("s", vec![1.0])],
    )
    .unwrap_err();
    assert!(e.to_string().contains("file-not-dir"), "{e}");
}

#[test]
fn ticks_and_labels() {
    assert_eq!(
        nice_ticks(0.0, 5000.0, 6),
        vec![0.0, 1000.0, 2000.0, 3000.0, 4000.0, 5000.0]
    );
    let t = nice_ticks(0.13, 0.87, 5);
    assert!(
        t[0] <= 0.13 && *t.last().unwrap() >= 0.87 && t.len() <= 7,
        "{t:?}"
    );
    let t = nice_ticks(3.0, 3.0, 5);
    assert!(
        t.len() >= 2 && t[0] < 3.0 && *t.last().unwrap() > 3.0,
        "{t:?}"
    );
    assert_eq!(format_tick(2000.0, 1000.0), "2000");
    assert_eq!(format_tick(0.25, 0.05), "0.25");
    assert_eq!(format_tick(-1e-17, 0.1), "0.0");
    assert_eq!(font::text_width("ab", 2), 22);
    assert!(font::ink('A', 0, 1) && !font::ink('A', 0, 0));
    assert_eq!(font::glyph('\u{e9}'), font::glyph('?'));
}

#[test]
fn atomic_write_replaces_whole_files() {
    let tmp = TempDir::new("atomic");
    let p = tmp.0.join("sub/dir/file.json");
    write_atomic(&p, b"first").unwrap();
    write_atomic(&p, b"second").unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"second");
    let names: Vec<_> = std::fs::read_dir(p.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "no temporary file left: {names:?}");
}
