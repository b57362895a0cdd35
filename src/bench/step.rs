//! Training-step benchmarks: median time and peak GPU memory of a plain cross-entropy step,
//! its forward and backward, the second-order meta gradient and a whole Dynamic Loss
//! iteration on random data; and the per-kernel profile of one step.

use std::time::Instant;

use super::random;
use crate::autograd::{self as ag, Var};
use crate::dynloss::meta_net::MetaNet;
use crate::dynloss::meta_step::{
    MetaBatch, MetaParts, Pseudo, VirtualSgd, classifier_loss, meta_gradient,
};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Profile};
use crate::nn::update_running_stats;
use crate::nn::{Mode, Model, RunningStats, init::init_params, resnet::resnet_cifar};
use crate::optim::{Adam, Sgd};
use crate::tensor::Tensor;

/// What the training-step benchmarks measure.
#[derive(Debug, Clone)]
pub struct StepBench {
    /// Model: a CIFAR ResNet depth (6n+2).
    pub depth: usize,
    /// Input [C, H, W].
    pub input: [usize; 3],
    /// Classes.
    pub classes: usize,
    /// Training batch.
    pub batch: usize,
    /// Meta batch of the Dynamic Loss steps.
    pub meta_batch: usize,
    /// Timed repetitions (median reported) after one warm-up.
    pub reps: usize,
    /// Also time the meta gradient and the whole Dynamic Loss iteration (and profile the
    /// iteration rather than the plain step).
    pub dynamic_loss: bool,
}

/// One line of the step table: median time and peak pool memory.
#[derive(Debug, Clone)]
pub struct StepRow {
    /// What was run.
    pub name: String,
    /// Median wall time in ms.
    pub median_ms: f64,
    /// Peak bytes held by tensors during one run.
    pub peak_bytes: u64,
}

/// A model, its optimizers and one random batch: what every benchmarked step runs on.
struct StepRig {
    model: Model,
    w: Vec<Tensor>,
    running: RunningStats,
    sgd: Sgd,
    x: Tensor,
    labels: Tensor,
    bins: Tensor,
    meta_x: Tensor,
    meta_labels: Tensor,
    meta: MetaNet,
    theta: Vec<Tensor>,
    adam: Adam,
}

/// The classifier learning rate of the benchmarked steps.
const LR: f32 = 0.1;

/// The Dynamic Loss parts a default run trains: corrector and margin generator.
const PARTS: MetaParts = MetaParts {
    corrector: true,
    generator: true,
    fixed_margins: None,
    margin_bound: None,
    anchor: None,
};

impl StepRig {
    fn new(gpu: &Gpu, cfg: &StepBench) -> Result<StepRig> {
        let model = resnet_cifar(cfg.depth, cfg.input, cfg.classes)
            .ok_or_else(|| Error::Config(format!("no ResNet of depth {}", cfg.depth)))?;
        let w = init_params(gpu, &model, &mut crate::random::seeded(0))?;
        let running = model.new_running_stats(gpu);
        let sgd = Sgd::new(&w, 0.9, 5e-4);
        let [c, h, wd] = cfg.input;
        let b = cfg.batch;
        let x = random(gpu, &[b, c, h, wd], 11)?;
        let labels: Vec<u32> = (0..b as u32).map(|i| i % cfg.classes as u32).collect();
        let labels = Tensor::from_u32(gpu, &[b], &labels)?;
        let bins: Vec<u32> = (0..b as u32).map(|i| i % 100).collect();
        let bins = Tensor::from_u32(gpu, &[b], &bins)?;
        // The meta batch is the training batch itself unless a different size is asked for.
        let m = cfg.meta_batch;
        let (meta_x, meta_labels) = if m == b {
            (x.clone(), labels.clone())
        } else {
            let ml: Vec<u32> = (0..m as u32).map(|i| i % cfg.classes as u32).collect();
            (
                random(gpu, &[m, c, h, wd], 12)?,
                Tensor::from_u32(gpu, &[m], &ml)?,
            )
        };
        let meta = MetaNet::new(100, cfg.classes, false);
        let theta = meta.init(gpu, &mut crate::random::seeded(1))?;
        let adam = Adam::new(&theta, 3e-3, 0.0);
        Ok(StepRig {
            model,
            w,
            running,
            sgd,
            x,
            labels,
            bins,
            meta_x,
            meta_labels,
            meta,
            theta,
            adam,
        })
    }

    /// Forward in training mode, `loss_of`, backward, running statistics; the gradients.
    fn forward_backward(
        &self,
        loss_of: &dyn Fn(&Var) -> Result<Var>,
    ) -> Result<Vec<Option<Tensor>>> {
        let p: Vec<Var> = self.w.iter().map(|t| Var::leaf(t.clone(), true)).collect();
        let (logits, stats) = self.model.forward(
            &p,
            &Var::constant(self.x.clone()),
            Mode::Train,
            &self.running,
        )?;
        let loss = loss_of(&logits)?;
        let refs: Vec<&Var> = p.iter().collect();
        let g = ag::backward(&loss, &refs)?;
        update_running_stats(&self.running, &stats)?;
        Ok(g)
    }

    fn cross_entropy(&self, logits: &Var) -> Result<Var> {
        ag::mean_all(&ag::cross_entropy(logits, &self.labels, None)?)
    }

    /// A plain cross-entropy training step with SGD.
    fn plain_step(&mut self) -> Result<()> {
        let g = self.forward_backward(&|l| self.cross_entropy(l))?;
        self.sgd.step(&self.w, &g, LR)
    }

    fn batch(&self) -> MetaBatch<'_> {
        MetaBatch {
            x: &self.x,
            labels: &self.labels,
            bins: &self.bins,
            meta_x: &self.meta_x,
            meta_labels: &self.meta_labels,
        }
    }

    /// The second-order meta gradient through all layers; returns it with the pseudo-labels.
    fn meta_gradient(&self) -> Result<(Vec<Option<Tensor>>, Tensor)> {
        let opt = VirtualSgd {
            lr: LR,
            momentum: 0.9,
            weight_decay: 5e-4,
            buffers: Some(&self.sgd.buffers),
        };
        let all: Vec<usize> = (0..self.w.len()).collect();
        let mg = meta_gradient(
            &self.model,
            &self.w,
            &self.running,
            &self.meta,
            &self.theta,
            &self.batch(),
            Pseudo::HardGumbel(0),
            &opt,
            &all,
            PARTS,
        )?;
        Ok((mg.grads, mg.yhat))
    }

    /// A whole Dynamic Loss iteration: meta gradient, Adam on the meta net, then the real
    /// step on the corrected loss.
    fn dynamic_loss_iteration(&mut self) -> Result<()> {
        let (grads, yhat) = self.meta_gradient()?;
        self.adam.update(&self.theta, &grads)?;
        drop(grads);
        let tv: Vec<Var> = self
            .theta
            .iter()
            .map(|t| Var::constant(t.clone()))
            .collect();
        let batch = self.batch();
        let dl = |logits: &Var| classifier_loss(&self.meta, &tv, logits, &batch, &yhat, PARTS);
        let g = self.forward_backward(&dl)?;
        self.sgd.step(&self.w, &g, LR)
    }
}

/// Times a plain cross-entropy step, its forward+backward, and with `dynamic_loss` the full
/// second-order meta gradient and a whole Dynamic Loss iteration, on random data. Each is run
/// once to warm up, then the repetitions take them in turn, so that a drift in the machine's
/// speed (common on shared CPUs) moves all of them alike and their ratios stay comparable.
pub fn run_steps(gpu: &Gpu, cfg: &StepBench) -> Result<Vec<StepRow>> {
    let mut rig = StepRig::new(gpu, cfg)?;
    let mut names = vec![
        "forward + backward (cross-entropy)",
        "plain training step (+ SGD)",
    ];
    if cfg.dynamic_loss {
        names.extend(["meta gradient (2nd order)", "Dynamic Loss iteration"]);
    }
    let run = |rig: &mut StepRig, i: usize| -> Result<()> {
        match i {
            0 => rig.forward_backward(&|l| rig.cross_entropy(l)).map(|_| ()),
            1 => rig.plain_step(),
            2 => rig.meta_gradient().map(|_| ()),
            _ => rig.dynamic_loss_iteration(),
        }
    };
    for i in 0..names.len() {
        run(&mut rig, i)?;
    }
    gpu.sync()?;
    let mut times = vec![Vec::new(); names.len()];
    let mut peaks = vec![0; names.len()];
    for _ in 0..cfg.reps.max(1) {
        for i in 0..names.len() {
            gpu.reset_peak();
            let t = Instant::now();
            run(&mut rig, i)?;
            gpu.sync()?;
            times[i].push(t.elapsed().as_secs_f64());
            peaks[i] = peaks[i].max(gpu.stats().peak_bytes);
        }
    }
    Ok(names
        .iter()
        .zip(times.iter_mut().zip(peaks))
        .map(|(name, (t, peak_bytes))| {
            t.sort_by(f64::total_cmp);
            StepRow {
                name: name.to_string(),
                median_ms: t[t.len() / 2] * 1e3,
                peak_bytes,
            }
        })
        .collect())
}

/// The profile of one step: time per kernel, and the step's wall time under profiling.
#[derive(Debug, Clone)]
pub struct StepProfile {
    /// What was profiled.
    pub name: &'static str,
    /// Kernel times per step.
    pub profile: Profile,
    /// Wall time of one step while profiled, in seconds.
    pub wall_seconds: f64,
}

/// Profiles `cfg.reps` plain steps (or Dynamic Loss iterations with `dynamic_loss`) after
/// one unprofiled warm-up; the totals are per step.
pub fn profile_step(gpu: &Gpu, cfg: &StepBench) -> Result<StepProfile> {
    let mut rig = StepRig::new(gpu, cfg)?;
    let (name, run): (&'static str, fn(&mut StepRig) -> Result<()>) = if cfg.dynamic_loss {
        ("Dynamic Loss iteration", StepRig::dynamic_loss_iteration)
    } else {
        ("plain training step (+ SGD)", StepRig::plain_step)
    };
    run(&mut rig)?;
    gpu.start_profile(true)?;
    let t = Instant::now();
    for _ in 0..cfg.reps.max(1) {
        run(&mut rig)?;
    }
    let profile = gpu.finish_profile()?;
    let wall = t.elapsed().as_secs_f64();
    Ok(StepProfile {
        name,
        profile: profile.per(cfg.reps.max(1)),
        wall_seconds: wall / cfg.reps.max(1) as f64,
    })
}

/// The profile as Markdown: kernel families, then every label, each with its time, share of
/// the step, count and achieved rate; the host's share is the step's wall time not spent in
/// timed commands.
pub fn format_profile(gpu: &Gpu, cfg: &StepBench, p: &StepProfile) -> String {
    let [c, h, w] = cfg.input;
    let wall_ms = p.wall_seconds * 1e3;
    let timed_ms = p.profile.total_seconds() * 1e3;
    let mut s = format!(
        "adapter: {}\nprofile of one {} (ResNet-{} on {c}x{h}x{w}, batch {}{}), {} steps, timed by {}\n\
         step wall time {wall_ms:.1} ms under profiling: {timed_ms:.1} ms in timed commands, \
         {:.1} ms on the host between them\n",
        gpu.info().name,
        p.name,
        cfg.depth,
        cfg.batch,
        meta_note(cfg),
        cfg.reps.max(1),
        p.profile.timer,
        (wall_ms - timed_ms).max(0.0),
    );
    let table = |title: &str, lines: &[crate::gpu::ProfileLine]| {
        let mut t = format!(
            "\n| {title} | ms per step | share of step | commands | rate |\n|---|---:|---:|---:|---:|\n"
        );
        for l in lines {
            let rate = if l.flops > 0.0 {
                format!("{:.2} GFLOP/s", l.flops / l.seconds.max(1e-12) / 1e9)
            } else if l.bytes > 0.0 {
                format!("{:.2} GB/s", l.bytes / l.seconds.max(1e-12) / 1e9)
            } else {
                String::new()
            };
            t.push_str(&format!(
                "| {} | {:.2} | {:.1}% | {} | {rate} |\n",
                l.label,
                l.seconds * 1e3,
                100.0 * l.seconds * 1e3 / wall_ms.max(1e-9),
                l.count,
            ));
        }
        t
    };
    s.push_str(&table("family", &p.profile.families()));
    s.push_str(&table("kernel", &p.profile.lines));
    s
}

/// ` (meta batch M)` where the Dynamic Loss steps run one that differs from the batch.
fn meta_note(cfg: &StepBench) -> String {
    if cfg.dynamic_loss && cfg.meta_batch != cfg.batch {
        format!(" (meta batch {})", cfg.meta_batch)
    } else {
        String::new()
    }
}

/// The step table as Markdown, with each time's ratio to the plain step.
pub fn format_steps(gpu: &Gpu, cfg: &StepBench, rows: &[StepRow]) -> String {
    let plain = rows
        .iter()
        .find(|r| r.name.starts_with("plain"))
        .map(|r| r.median_ms)
        .unwrap_or(f64::NAN);
    let [c, h, w] = cfg.input;
    let mut s = format!(
        "adapter: {}\nResNet-{} on {c}x{h}x{w}, batch {}{}, {} classes\n\n| step | median ms | images/s | x plain step | peak MiB |\n|---|---:|---:|---:|---:|\n",
        gpu.info().name,
        cfg.depth,
        cfg.batch,
        meta_note(cfg),
        cfg.classes
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {:.1} | {:.1} | {:.2} | {:.1} |\n",
            r.name,
            r.median_ms,
            cfg.batch as f64 / (r.median_ms / 1e3),
            r.median_ms / plain,
            r.peak_bytes as f64 / (1 << 20) as f64
        ));
    }
    s
}
