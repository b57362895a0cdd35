//! Accuracy of row-major logits against labels: overall, per class, and where predictions go.

/// Index of the largest value (first on ties).
pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// How many rows of row-major logits have their largest value in each class.
pub fn prediction_counts(logits: &[f32], classes: usize) -> Vec<usize> {
    let mut counts = vec![0usize; classes];
    for row in logits.chunks_exact(classes) {
        counts[argmax(row)] += 1;
    }
    counts
}

/// Overall and per-class accuracy (percent) of row-major logits against labels.
pub fn accuracy(logits: &[f32], labels: &[u32], classes: usize) -> (f64, Vec<f64>) {
    let mut hit = vec![0usize; classes];
    let mut tot = vec![0usize; classes];
    for (i, &l) in labels.iter().enumerate() {
        tot[l as usize] += 1;
        if argmax(&logits[i * classes..(i + 1) * classes]) == l as usize {
            hit[l as usize] += 1;
        }
    }
    let all = 100.0 * hit.iter().sum::<usize>() as f64 / labels.len().max(1) as f64;
    let per = hit
        .iter()
        .zip(&tot)
        .map(|(&h, &t)| {
            if t == 0 {
                0.0
            } else {
                100.0 * h as f64 / t as f64
            }
        })
        .collect();
    (all, per)
}
