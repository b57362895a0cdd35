//! The optimizers over parameter lists: Adam counts the steps of each parameter on its own,
//! as PyTorch does, so a parameter that got no gradient for a while starts its bias
//! correction afresh.

mod common;

use common::{Rng, assert_close, gpu};
use dynloss_wgpu::Tensor;
use dynloss_wgpu::optim::Adam;

/// PyTorch's Adam on one parameter (no weight decay), in f64: the state and the update.
struct Reference {
    w: Vec<f64>,
    m: Vec<f64>,
    v: Vec<f64>,
    t: i32,
}

impl Reference {
    fn step(&mut self, g: &[f32], lr: f64) {
        self.t += 1;
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
        let (bc1, bc2) = (1.0 - b1.powi(self.t), 1.0 - b2.powi(self.t));
        for (i, &gi) in g.iter().enumerate() {
            let d = gi as f64;
            self.m[i] = b1 * self.m[i] + (1.0 - b1) * d;
            self.v[i] = b2 * self.v[i] + (1.0 - b2) * d * d;
            self.w[i] -= lr * (self.m[i] / bc1) / ((self.v[i] / bc2).sqrt() + eps);
        }
    }
}

#[test]
fn adam_counts_steps_per_parameter() {
    let g = gpu();
    let mut rng = Rng::new(11);
    let lr = 3e-3f32;
    let init: Vec<Vec<f32>> = vec![rng.vec(5), rng.vec(3)];
    let params: Vec<Tensor> = init
        .iter()
        .map(|w| Tensor::from_f32(&g, &[w.len()], w).unwrap())
        .collect();
    let mut adam = Adam::new(&params, lr, 0.0);
    let mut refs: Vec<Reference> = init
        .iter()
        .map(|w| Reference {
            w: w.iter().map(|&x| x as f64).collect(),
            m: vec![0.0; w.len()],
            v: vec![0.0; w.len()],
            t: 0,
        })
        .collect();
    // The second parameter gets no gradient for the first three steps (as the margin
    // generator during the warm-up fit), then both get one.
    for step in 0..5 {
        let grads: Vec<Option<Tensor>> = init
            .iter()
            .enumerate()
            .map(|(i, w)| {
                (i == 0 || step >= 3)
                    .then(|| Tensor::from_f32(&g, &[w.len()], &rng.vec(w.len())).unwrap())
            })
            .collect();
        for (r, gr) in refs.iter_mut().zip(&grads) {
            if let Some(gr) = gr {
                r.step(&gr.to_f32_vec().unwrap(), lr as f64);
            }
        }
        adam.update(&params, &grads).unwrap();
        if step == 3 {
            // Its first step: the bias-corrected moments are g and g^2, so every element
            // moves by lr against the sign of its gradient (with the shared count of 4 the
            // corrections would be 1/0.344 and 1/0.004, and the move about 0.58 lr).
            let moved: Vec<f32> = params[1]
                .to_f32_vec()
                .unwrap()
                .iter()
                .zip(&init[1])
                .map(|(&a, &b)| (a - b).abs())
                .collect();
            assert_close(
                "first step of a late parameter",
                &moved,
                &[lr as f64; 3],
                1e-6,
                1e-3,
            );
        }
    }
    assert_eq!(adam.steps, vec![5, 2]);
    for (i, (p, r)) in params.iter().zip(&refs).enumerate() {
        assert_close(
            &format!("param {i}"),
            &p.to_f32_vec().unwrap(),
            &r.w,
            1e-6,
            1e-5,
        );
    }
}
