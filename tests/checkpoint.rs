//! Checked checkpoints: a damaged file (truncated, a flipped bit anywhere, an edited
//! metadata field) is refused with the file and what changed, never accepted, never a panic.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::{Rng, TempDir};
use dynloss_wgpu::train::Checkpoint;

fn sample() -> Checkpoint {
    let mut rng = Rng::new(7);
    let mut meta = HashMap::new();
    meta.insert("epoch".to_string(), "3".to_string());
    meta.insert("step".to_string(), "120".to_string());
    meta.insert("seconds".to_string(), "12.5".to_string());
    meta.insert("config".to_string(), "{\"epochs\":4}".to_string());
    Checkpoint {
        tensors: vec![
            ("param.conv.weight".into(), vec![4, 3], rng.vec(12)),
            ("param.fc.bias".into(), vec![5], rng.vec(5)),
            ("bn.0.running_var".into(), vec![2, 2], rng.vec(4)),
        ],
        meta,
    }
}

fn refused(path: &Path) -> String {
    match std::panic::catch_unwind(|| Checkpoint::load(path)) {
        Ok(Ok(_)) => panic!("a damaged checkpoint was accepted"),
        Ok(Err(e)) => e.to_string(),
        Err(_) => panic!("loading a damaged checkpoint panicked"),
    }
}

#[test]
fn a_checkpoint_reads_back_exactly() {
    let tmp = TempDir::new("ck-roundtrip");
    let path = tmp.0.join("ck.safetensors");
    let ck = sample();
    ck.save(&path).unwrap();
    let back = Checkpoint::load(&path).unwrap();
    for (name, shape, data) in &ck.tensors {
        let t = back.tensors.iter().find(|t| &t.0 == name).unwrap();
        assert_eq!((&t.1, &t.2), (shape, data));
    }
    assert_eq!(back.parse::<usize>(&path, "epoch").unwrap(), 3);
    assert_eq!(back.parse::<f64>(&path, "seconds").unwrap(), 12.5);
    let e = back
        .parse::<usize>(&path, "seconds")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("'seconds' is '12.5'") && e.contains("ck.safetensors"),
        "{e}"
    );
}

#[test]
fn every_truncation_and_every_flipped_bit_is_refused() {
    let tmp = TempDir::new("ck-damage");
    let path = tmp.0.join("ck.safetensors");
    sample().save(&path).unwrap();
    let good = std::fs::read(&path).unwrap();
    let bad = tmp.0.join("bad.safetensors");
    for len in 0..good.len() {
        std::fs::write(&bad, &good[..len]).unwrap();
        let e = refused(&bad);
        assert!(
            e.contains("bad.safetensors") && e.contains("truncated"),
            "truncated to {len}: {e}"
        );
    }
    // One flipped bit in every byte (a random bit of each), header and data alike.
    let mut rng = Rng::new(11);
    let mut named_tensor = false;
    for i in 0..good.len() {
        let mut b = good.clone();
        b[i] ^= 1 << rng.below(8);
        std::fs::write(&bad, &b).unwrap();
        let e = refused(&bad);
        named_tensor |= e.contains("tensor 'param.fc.bias' does not match its checksum");
    }
    assert!(named_tensor, "a flip in the data names its tensor");
}

#[test]
fn an_edited_metadata_field_is_refused_by_name() {
    let tmp = TempDir::new("ck-edit");
    let path = tmp.0.join("ck.safetensors");
    sample().save(&path).unwrap();
    let ck = Checkpoint::load(&path).unwrap();
    for key in ["epoch", "step", "seconds", "config"] {
        // Rewrite the file with one value changed but the stored checksums kept, as an edit
        // by hand or a corrupted byte that still parses would.
        let mut meta = ck.meta.clone();
        meta.insert(key.to_string(), "x".to_string());
        let views: Vec<(String, safetensors::tensor::TensorView)> = ck
            .tensors
            .iter()
            .map(|(n, s, d)| {
                let v = safetensors::tensor::TensorView::new(
                    safetensors::tensor::Dtype::F32,
                    s.clone(),
                    bytemuck::cast_slice(d),
                )
                .unwrap();
                (n.clone(), v)
            })
            .collect();
        let bytes = safetensors::serialize(views, Some(meta)).unwrap();
        let bad = tmp.0.join(format!("{key}.safetensors"));
        std::fs::write(&bad, bytes).unwrap();
        let e = refused(&bad);
        assert!(
            e.contains(&format!(
                "metadata field '{key}' does not match its checksum"
            )),
            "{e}"
        );
    }
}
