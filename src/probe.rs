//! What `info` measures on one adapter: whether every kernel's needs are met by the limits the
//! device is requested with, and what compiling the kernels costs on first use.

use std::time::Instant;

use crate::autograd::{self as ag, Var};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::gpu::adapter::device_limits;
use crate::gpu::shaders::KernelNeeds;
use crate::nn::{Mode, init::init_params, resnet::resnet_cifar, update_running_stats};
use crate::optim::Sgd;
use crate::tensor::Tensor;
use crate::tensor::kernels::{self, KernelVariant};

/// Every kernel with what it asks of the device, read from naga's reflection.
#[derive(Debug, Clone)]
pub struct KernelTable {
    kernels: Vec<(KernelVariant, KernelNeeds)>,
}

impl KernelTable {
    /// Reflects every pipeline in the kernel registry.
    pub fn new() -> Result<KernelTable> {
        let all = kernels::all();
        let needs = kernels::needs_of(&all).map_err(Error::Device)?;
        Ok(KernelTable {
            kernels: all.into_iter().zip(needs).collect(),
        })
    }

    /// Pipelines the launchers can create.
    pub fn len(&self) -> usize {
        self.kernels.len()
    }

    /// Whether the registry is empty (never, but clippy asks).
    pub fn is_empty(&self) -> bool {
        self.kernels.is_empty()
    }

    /// The largest need of each kind over all kernels.
    pub fn max(&self) -> KernelNeeds {
        self.kernels
            .iter()
            .fold(KernelNeeds::default(), |a, (_, n)| a.max(*n))
    }

    /// Needs a device with `limits` does not meet, one line per kernel and limit; empty when
    /// every kernel can run.
    pub fn unmet(&self, limits: &wgpu::Limits) -> Vec<String> {
        self.kernels
            .iter()
            .flat_map(|(v, n)| {
                n.unmet(limits)
                    .into_iter()
                    .map(move |u| format!("{v}: {u}"))
            })
            .collect()
    }

    /// [`KernelTable::unmet`] for the limits a device on `adapter` is requested with.
    pub fn unmet_on(&self, adapter: &wgpu::Adapter) -> Vec<String> {
        self.unmet(&device_limits(adapter))
    }
}

/// First-use costs on one device, in seconds.
#[derive(Debug, Clone, Copy)]
pub struct CompileTimes {
    /// Creating every pipeline in the kernel registry (wgpu's translation and the driver's
    /// pipeline creation; some drivers compile further on first dispatch).
    pub create_all: f64,
    /// Pipelines created.
    pub pipelines: usize,
    /// The first training step of the quick run's model (ResNet-8, 12x12 RGB, batch 32), all
    /// its pipelines already created: what remains is first-dispatch compilation.
    pub first_step: f64,
    /// The same step once warm (the median of three).
    pub warm_step: f64,
}

/// Measures [`CompileTimes`] on `gpu` (a few seconds on a CPU driver).
pub fn compile_times(gpu: &Gpu) -> Result<CompileTimes> {
    let all = kernels::all();
    let t = Instant::now();
    for v in &all {
        v.prepare(gpu)?;
    }
    gpu.sync()?;
    let create_all = t.elapsed().as_secs_f64();

    let (batch, classes, input) = (32, 10, [3, 12, 12]);
    let model = resnet_cifar(8, input, classes).expect("8 is a CIFAR ResNet depth");
    let w = init_params(gpu, &model, &mut crate::random::seeded(0))?;
    let running = model.new_running_stats(gpu);
    let mut sgd = Sgd::new(&w, 0.9, 5e-4);
    let n = batch * input.iter().product::<usize>();
    let x: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 255) as f32 / 255.0 - 0.5)
        .collect();
    let x = Tensor::from_f32(gpu, &[batch, input[0], input[1], input[2]], &x)?;
    let labels: Vec<u32> = (0..batch as u32).map(|i| i % classes as u32).collect();
    let labels = Tensor::from_u32(gpu, &[batch], &labels)?;
    let mut step = || -> Result<f64> {
        let t = Instant::now();
        let p: Vec<Var> = w.iter().map(|t| Var::leaf(t.clone(), true)).collect();
        let (logits, stats) =
            model.forward(&p, &Var::constant(x.clone()), Mode::Train, &running)?;
        let loss = ag::mean_all(&ag::cross_entropy(&logits, &labels, None)?)?;
        let refs: Vec<&Var> = p.iter().collect();
        let g = ag::backward(&loss, &refs)?;
        update_running_stats(&running, &stats)?;
        sgd.step(&w, &g, 0.01)?;
        loss.value().to_f32_vec()?;
        Ok(t.elapsed().as_secs_f64())
    };
    let first_step = step()?;
    let mut warm = [step()?, step()?, step()?];
    warm.sort_by(f64::total_cmp);
    Ok(CompileTimes {
        create_all,
        pipelines: all.len(),
        first_step,
        warm_step: warm[1],
    })
}
