//! The training driver: data, model, optimizer and schedule; the epoch loop of the baselines
//! (cross-entropy, Balanced Softmax) and of the Dynamic Loss; evaluation, metrics,
//! checkpoints and resume.

pub mod checkpoint;
pub mod config;
pub mod metrics;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::autograd::{self as ag, Var};
use crate::data::views::{Loader, View};
use crate::data::{Dataset, TrainSet};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::nn::{Mode, Model, RunningStats, init::init_params, update_running_stats, zoo};
use crate::optim::{CosineSchedule, Sgd};
use crate::tensor::Tensor;
pub use checkpoint::Checkpoint;
pub use config::{DlConfig, Method, TrainConfig};
use metrics::EpochMetrics;

/// How one invocation runs: where to write, whether to resume, when to stop early.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Output directory.
    pub out: PathBuf,
    /// Continue the run found in `out`.
    pub resume: bool,
    /// Stop after this many epochs of this invocation (resume later).
    pub stop_after: Option<usize>,
    /// Show a progress bar (else plain log lines); `None` = when stderr is a terminal.
    pub progress: Option<bool>,
    /// Print per-epoch log lines.
    pub verbose: bool,
}

/// What a finished (or stopped) run reports; also written as `summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Test accuracy after the last epoch, percent.
    pub last_acc: f64,
    /// Best test accuracy over epochs, percent.
    pub best_acc: f64,
    /// Epochs completed.
    pub epochs: usize,
    /// Wall time of all invocations, seconds.
    pub seconds: f64,
    /// Realised noise rate of the training labels.
    pub noise_rate: f64,
    /// Training samples.
    pub train_samples: usize,
    /// The resolved configuration.
    pub config: TrainConfig,
    /// Adapter that ran it.
    pub adapter: String,
}

/// Everything a training epoch needs.
pub struct Ctx<'a> {
    /// The GPU.
    pub gpu: &'a Gpu,
    /// The resolved config.
    pub cfg: &'a TrainConfig,
    /// The classifier.
    pub model: Model,
    /// Its parameters.
    pub params: Vec<Tensor>,
    /// Batch-norm running statistics.
    pub running: RunningStats,
    /// The classifier's optimizer.
    pub sgd: Sgd,
    /// Learning-rate schedule over global steps.
    pub schedule: CosineSchedule,
    /// Global step count so far.
    pub step: usize,
    /// Training set (given labels) and its true labels.
    pub train: Arc<Dataset>,
    /// True labels of the training samples (for reports only).
    pub true_labels: Vec<u32>,
    /// Test set.
    pub test: Arc<Dataset>,
    /// Per-channel normalisation.
    pub mean: Vec<f32>,
    /// Per-channel normalisation.
    pub std: Vec<f32>,
    /// Progress display.
    pub progress: Option<indicatif::ProgressBar>,
    /// Output directory (for per-method plots).
    pub out: Option<PathBuf>,
}

/// Loss, accuracy and throughput of one training epoch.
#[derive(Debug, Clone, Default)]
pub struct EpochStats {
    /// Sum of batch losses.
    pub loss_sum: f64,
    /// Batches.
    pub batches: usize,
    /// Correct predictions against the given labels.
    pub correct: usize,
    /// Samples seen.
    pub seen: usize,
    /// Method-specific diagnostics for `metrics.jsonl`.
    pub extra: Option<serde_json::Value>,
}

impl EpochStats {
    /// Adds one batch: its loss, correct predictions and size.
    pub fn record(&mut self, loss: f32, correct: usize, n: usize) {
        self.loss_sum += loss as f64;
        self.correct += correct;
        self.seen += n;
        self.batches += 1;
    }
}

impl Ctx<'_> {
    /// Parameter names, in order.
    pub fn param_names(&self) -> Vec<String> {
        self.model.params.iter().map(|p| p.name.clone()).collect()
    }

    /// Uploads a prepared batch: images [B, C, H, W] and labels [B].
    pub fn upload(&self, x: &[f32], labels: &[u32]) -> Result<(Tensor, Tensor)> {
        let [c, h, w] = self.train.shape;
        let b = labels.len();
        Ok((
            Tensor::from_f32(self.gpu, &[b, c, h, w], x)?,
            Tensor::from_u32(self.gpu, &[b], labels)?,
        ))
    }

    /// A loader over `order` of the training set with `view`, for epoch `epoch`.
    pub fn loader(&self, order: Vec<usize>, view: View, epoch: usize, salt: u64) -> Result<Loader> {
        let drop_last = order.len() >= self.cfg.batch_size;
        Ok(Loader::new(
            self.train.clone(),
            order,
            self.cfg.batch_size,
            view,
            self.mean.clone(),
            self.std.clone(),
            self.cfg.seed ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        )?
        .with_epoch(epoch as u64)
        .with_drop_last(drop_last)
        .with_workers(self.cfg.workers))
    }

    /// The training view the config asks for.
    pub fn train_view(&self) -> View {
        if self.cfg.augment == "weak" {
            View::Weak
        } else {
            View::Strong
        }
    }

    /// Forward in training mode with the current parameters as leaves that need gradients.
    pub fn forward_train(
        &self,
        x: &Tensor,
    ) -> Result<(Vec<Var>, Var, Vec<crate::tensor::batchnorm::BatchStats>)> {
        let p: Vec<Var> = self
            .params
            .iter()
            .map(|t| Var::leaf(t.clone(), true))
            .collect();
        let (logits, stats) =
            self.model
                .forward(&p, &Var::constant(x.clone()), Mode::Train, &self.running)?;
        Ok((p, logits, stats))
    }

    /// Backward of `loss`, one SGD step at the scheduled lr, running-statistics update.
    /// Returns the loss value (checked for NaN).
    pub fn sgd_update(
        &mut self,
        p: &[Var],
        loss: &Var,
        stats: &[crate::tensor::batchnorm::BatchStats],
        epoch: usize,
    ) -> Result<f32> {
        let refs: Vec<&Var> = p.iter().collect();
        let grads = ag::backward(loss, &refs)?;
        let lr = self.schedule.lr(self.step);
        self.sgd.step(&self.params, &grads, lr)?;
        update_running_stats(&self.running, stats)?;
        self.step += 1;
        let v = loss.value().item()?;
        if !v.is_finite() {
            return Err(Error::Config(format!(
                "training diverged: loss became {v} at epoch {} step {} (lr {lr}); the last good checkpoint is kept",
                epoch + 1,
                self.step
            )));
        }
        Ok(v)
    }

    /// Counts argmax(logits) == labels.
    pub fn count_correct(logits: &Tensor, labels: &[u32]) -> Result<usize> {
        let c = logits.shape()[1];
        let v = logits.to_f32_vec()?;
        Ok(labels
            .iter()
            .enumerate()
            .filter(|(i, l)| argmax(&v[i * c..(i + 1) * c]) == **l as usize)
            .count())
    }

    /// Logits of every sample of `ds` at `order`, weak view, evaluation mode: [N, classes].
    pub fn predict(&self, ds: &Arc<Dataset>, order: Vec<usize>, salt: u64) -> Result<Vec<f32>> {
        let consts: Vec<Var> = self
            .params
            .iter()
            .map(|t| Var::constant(t.clone()))
            .collect();
        let loader = Loader::new(
            ds.clone(),
            order,
            256,
            View::Weak,
            self.mean.clone(),
            self.std.clone(),
            salt,
        )?
        .with_workers(self.cfg.workers);
        let [c, h, w] = ds.shape;
        let mut out = Vec::new();
        for batch in loader {
            let b = batch.labels.len();
            let x = Tensor::from_f32(self.gpu, &[b, c, h, w], &batch.x)?;
            let logits = ag::no_grad(|| {
                self.model
                    .forward(&consts, &Var::constant(x), Mode::Eval, &self.running)
                    .map(|r| r.0)
            })?;
            out.extend(logits.value().to_f32_vec()?);
        }
        Ok(out)
    }

    /// Overall and per-class test accuracy, percent.
    pub fn evaluate(&self) -> Result<(f64, Vec<f64>)> {
        let order: Vec<usize> = (0..self.test.len()).collect();
        let logits = self.predict(&self.test, order, 0)?;
        Ok(accuracy(&logits, &self.test.labels, self.test.classes))
    }

    /// Advances the progress bar by one batch.
    pub fn tick(&self, msg: String) {
        if let Some(pb) = &self.progress {
            pb.inc(1);
            pb.set_message(msg);
        }
    }
}

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

/// A seeded permutation of 0..n for epoch `epoch`.
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(
        seed.wrapping_mul(0x2545_F491_4F6C_DD1D)
            ^ (epoch as u64)
                .wrapping_add(1)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.random_range(0..=i);
        v.swap(i, j);
    }
    v
}

/// The loss of a baseline: cross-entropy, with log class counts as margins for BS.
fn baseline_loss(logits: &Var, labels: &Tensor, bs_margins: Option<&Var>) -> Result<Var> {
    ag::mean_all(&ag::cross_entropy(logits, labels, bs_margins)?)
}

/// log(class count) per class: the Balanced Softmax margins.
pub fn log_counts(gpu: &Gpu, labels: &[u32], classes: usize) -> Result<Tensor> {
    let counts = crate::data::count_labels(labels, classes);
    let v: Vec<f32> = counts.iter().map(|&n| (n.max(1) as f32).ln()).collect();
    Tensor::from_f32(gpu, &[classes], &v)
}

/// One epoch of a baseline (ce or bs).
fn baseline_epoch(ctx: &mut Ctx, epoch: usize) -> Result<EpochStats> {
    let margins = match ctx.cfg.method {
        Method::Bs => Some(Var::constant(log_counts(
            ctx.gpu,
            &ctx.train.labels,
            ctx.train.classes,
        )?)),
        _ => None,
    };
    let order = epoch_order(ctx.train.len(), ctx.cfg.seed, epoch);
    let loader = ctx.loader(order, ctx.train_view(), epoch, 1)?;
    let mut st = EpochStats::default();
    for batch in loader {
        let (x, labels) = ctx.upload(&batch.x, &batch.labels)?;
        let (p, logits, stats) = ctx.forward_train(&x)?;
        let loss = baseline_loss(&logits, &labels, margins.as_ref())?;
        let v = ctx.sgd_update(&p, &loss, &stats, epoch)?;
        let correct = Ctx::count_correct(logits.value(), &batch.labels)?;
        st.record(v, correct, batch.labels.len());
        ctx.tick(format!(
            "loss {:.3} acc {:.1}%",
            st.loss_sum / st.batches as f64,
            100.0 * st.correct as f64 / st.seen as f64
        ));
    }
    Ok(st)
}

/// A seeded random subset of k of n indices, in increasing order (class mix kept on average).
fn subset_indices(n: usize, k: usize, seed: u64) -> Vec<usize> {
    let mut idx = epoch_order(n, seed ^ 0x5B5E7, usize::MAX);
    idx.truncate(k);
    idx.sort_unstable();
    idx
}

/// A random subset of k samples of the training set.
fn limit_train_set(ts: TrainSet, limit: Option<usize>, seed: u64) -> TrainSet {
    let n = ts.data.len();
    match limit {
        Some(k) if k < n => {
            let idx = subset_indices(n, k, seed);
            TrainSet {
                data: ts.data.subset(&idx),
                true_labels: idx.iter().map(|&i| ts.true_labels[i]).collect(),
                source_index: idx.iter().map(|&i| ts.source_index[i]).collect(),
            }
        }
        _ => ts,
    }
}

/// Reads the data the config names (long tail and noise applied).
pub fn load_data(cfg: &TrainConfig) -> Result<(TrainSet, Dataset)> {
    let (ts, test) = crate::data::load(&cfg.data_config()?)?;
    let test = match cfg.test_limit {
        Some(k) if k < test.len() => test.subset(&subset_indices(test.len(), k, cfg.seed ^ 1)),
        _ => test,
    };
    Ok((limit_train_set(ts, cfg.train_limit, cfg.seed), test))
}

/// Builds the classifier the config names for `ds`.
pub fn build_model(cfg: &TrainConfig, ds: &Dataset) -> Result<Model> {
    zoo::build_named(&cfg.model, ds.shape, ds.classes)
}

/// Per-epoch hooks of a training method.
pub trait TrainingMethod {
    /// Runs one training epoch.
    fn epoch(&mut self, ctx: &mut Ctx, epoch: usize) -> Result<EpochStats>;
    /// Adds the method's state to a checkpoint.
    fn save(&self, _ck: &mut Checkpoint) -> Result<()> {
        Ok(())
    }
    /// Restores the method's state from a checkpoint.
    fn restore(&mut self, _path: &Path, _ck: &Checkpoint) -> Result<()> {
        Ok(())
    }
}

struct Baseline;

impl TrainingMethod for Baseline {
    fn epoch(&mut self, ctx: &mut Ctx, epoch: usize) -> Result<EpochStats> {
        baseline_epoch(ctx, epoch)
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::Io {
        path: path.into(),
        source: e,
    }
}

/// Trains as `cfg` says, writing into `opts.out`; returns the summary.
pub fn train(gpu: &Gpu, cfg: &TrainConfig, opts: &RunOptions) -> Result<Summary> {
    cfg.validate()?;
    let out = &opts.out;
    let ck_path = out.join("checkpoint.safetensors");
    let metrics_path = out.join("metrics.jsonl");
    if opts.resume {
        if !ck_path.exists() {
            return Err(Error::Config(format!(
                "--resume: {} has no checkpoint.safetensors to continue from",
                out.display()
            )));
        }
    } else if out.exists()
        && std::fs::read_dir(out)
            .map_err(io_err(out))?
            .next()
            .is_some()
    {
        return Err(Error::Config(format!(
            "output directory {} is not empty: choose another --out, or --resume it",
            out.display()
        )));
    }
    std::fs::create_dir_all(out).map_err(io_err(out))?;

    let (train_set, test) = load_data(cfg)?;
    let noise_rate = train_set.noise_rate();
    let model = build_model(cfg, &train_set.data)?;
    let (mean, std) = crate::data::mean_std(&train_set.data);
    let params = init_params(gpu, &model, cfg.seed)?;
    let running = model.new_running_stats(gpu);
    let sgd = Sgd::new(&params, cfg.momentum, cfg.weight_decay);
    let per_epoch = {
        let n = train_set.data.len();
        if n >= cfg.batch_size {
            n / cfg.batch_size
        } else {
            1
        }
    };
    let schedule = CosineSchedule {
        base_lr: cfg.lr,
        warmup_steps: cfg.lr_warmup_epochs * per_epoch,
        total_steps: cfg.epochs * per_epoch,
        warmup_start: 0.1,
    };
    let mut ctx = Ctx {
        gpu,
        cfg,
        model,
        params,
        running,
        sgd,
        schedule,
        step: 0,
        train: Arc::new(train_set.data),
        true_labels: train_set.true_labels,
        test: Arc::new(test),
        mean,
        std,
        progress: None,
        out: Some(out.clone()),
    };
    let mut method: Box<dyn TrainingMethod> = match cfg.method {
        Method::Ce | Method::Bs => Box::new(Baseline),
        Method::Dl => Box::new(crate::dynloss::trainer::DynamicLoss::new(&ctx)?),
    };

    let mut history: Vec<EpochMetrics> = Vec::new();
    let mut start_epoch = 0;
    let mut seconds_before = 0.0;
    if opts.resume {
        let ck = Checkpoint::load(&ck_path)?;
        let saved: TrainConfig =
            serde_json::from_str(ck.get(&ck_path, "config")?).map_err(|e| Error::Format {
                path: ck_path.clone(),
                msg: format!("config in checkpoint: {e}"),
            })?;
        let Some(changed) = cfg.resume_changes(&saved) else {
            return Err(Error::Config(format!(
                "--resume: the settings differ from the run in {} (resume with the same flags or config; only the stabilisers may change)",
                out.display()
            )));
        };
        if !changed.is_empty() && opts.verbose {
            eprintln!("resuming with changed stabilisers: {}", changed.join(", "));
        }
        restore_state(&mut ctx, &ck_path, &ck)?;
        method.restore(&ck_path, &ck)?;
        start_epoch = ck.get(&ck_path, "epoch")?.parse().unwrap_or(0);
        seconds_before = ck.get(&ck_path, "seconds")?.parse().unwrap_or(0.0);
        history = metrics::read_metrics(&metrics_path)?;
        history.truncate(start_epoch);
    }

    let t_run = Instant::now();
    let show_bar = opts
        .progress
        .unwrap_or_else(|| std::io::stderr().is_terminal());
    let end_epoch = match opts.stop_after {
        Some(n) => cfg.epochs.min(start_epoch + n),
        None => cfg.epochs,
    };
    for epoch in start_epoch..end_epoch {
        let t0 = Instant::now();
        if show_bar {
            let pb = indicatif::ProgressBar::new(per_epoch as u64);
            pb.set_style(
                indicatif::ProgressStyle::with_template(
                    "epoch {prefix} [{bar:30}] {pos}/{len} {elapsed}<{eta} {msg}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            pb.set_prefix(format!("{}/{}", epoch + 1, cfg.epochs));
            ctx.progress = Some(pb);
        }
        let st = method.epoch(&mut ctx, epoch)?;
        let train_secs = t0.elapsed().as_secs_f64();
        if let Some(pb) = ctx.progress.take() {
            pb.finish_and_clear();
        }
        let (test_acc, per_class) = ctx.evaluate()?;
        let m = EpochMetrics {
            epoch: epoch + 1,
            loss: st.loss_sum / st.batches.max(1) as f64,
            train_acc: 100.0 * st.correct as f64 / st.seen.max(1) as f64,
            test_acc,
            per_class_acc: per_class,
            lr: ctx.schedule.lr(ctx.step.saturating_sub(1)) as f64,
            seconds: t0.elapsed().as_secs_f64(),
            images_per_sec: st.seen as f64 / train_secs.max(1e-9),
            extra: st.extra,
        };
        if opts.verbose {
            eprintln!(
                "epoch {}/{}: loss {:.4}  train acc {:.2}%  test acc {:.2}%  lr {:.4}  {:.1}s ({:.0} img/s)",
                m.epoch,
                cfg.epochs,
                m.loss,
                m.train_acc,
                m.test_acc,
                m.lr,
                m.seconds,
                m.images_per_sec
            );
        }
        history.push(m);
        let seconds = seconds_before + t_run.elapsed().as_secs_f64();
        save_state(&ctx, method.as_ref(), &ck_path, epoch + 1, seconds)?;
        metrics::write_metrics(&metrics_path, &history)?;
        metrics::plot_accuracy(out, &history)?;
        write_summary(&ctx, &history, seconds, noise_rate, out)?;
    }
    let seconds = seconds_before + t_run.elapsed().as_secs_f64();
    write_summary(&ctx, &history, seconds, noise_rate, out)
}

fn write_summary(
    ctx: &Ctx,
    history: &[EpochMetrics],
    seconds: f64,
    noise_rate: f64,
    out: &Path,
) -> Result<Summary> {
    let s = Summary {
        last_acc: history.last().map(|m| m.test_acc).unwrap_or(0.0),
        best_acc: history.iter().map(|m| m.test_acc).fold(0.0, f64::max),
        epochs: history.len(),
        seconds,
        noise_rate,
        train_samples: ctx.train.len(),
        config: ctx.cfg.clone(),
        adapter: ctx.gpu.info().name.clone(),
    };
    metrics::write_json(&out.join("summary.json"), &s)?;
    Ok(s)
}

fn bn_names(ctx: &Ctx) -> (Vec<String>, Vec<String>) {
    let n = ctx.running.mean.len();
    (
        (0..n).map(|i| format!("{i}.running_mean")).collect(),
        (0..n).map(|i| format!("{i}.running_var")).collect(),
    )
}

fn save_state(
    ctx: &Ctx,
    method: &dyn TrainingMethod,
    path: &Path,
    epoch: usize,
    seconds: f64,
) -> Result<()> {
    let mut ck = Checkpoint::default();
    let names = ctx.param_names();
    ck.push_tensors("param", &names, &ctx.params)?;
    ck.push_tensors("sgd", &names, &ctx.sgd.buffers)?;
    let (rm, rv) = bn_names(ctx);
    ck.push_tensors("bn", &rm, &ctx.running.mean)?;
    ck.push_tensors("bn", &rv, &ctx.running.var)?;
    method.save(&mut ck)?;
    let m = &mut ck.meta;
    m.insert("epoch".into(), epoch.to_string());
    m.insert("step".into(), ctx.step.to_string());
    m.insert("seconds".into(), seconds.to_string());
    m.insert(
        "config".into(),
        serde_json::to_string(ctx.cfg).expect("config serialises"),
    );
    m.insert("model".into(), ctx.cfg.model.clone());
    m.insert("input".into(), format!("{:?}", ctx.train.shape));
    m.insert("classes".into(), ctx.train.classes.to_string());
    m.insert(
        "mean".into(),
        serde_json::to_string(&ctx.mean).expect("floats"),
    );
    m.insert(
        "std".into(),
        serde_json::to_string(&ctx.std).expect("floats"),
    );
    ck.save(path)
}

fn restore_state(ctx: &mut Ctx, path: &Path, ck: &Checkpoint) -> Result<()> {
    let names = ctx.param_names();
    ck.restore(path, "param", &names, &ctx.params)?;
    ck.restore(path, "sgd", &names, &ctx.sgd.buffers)?;
    let (rm, rv) = bn_names(ctx);
    ck.restore(path, "bn", &rm, &ctx.running.mean)?;
    ck.restore(path, "bn", &rv, &ctx.running.var)?;
    ctx.step = ck.get(path, "step")?.parse().map_err(|_| Error::Format {
        path: path.into(),
        msg: "bad step".into(),
    })?;
    Ok(())
}

/// Evaluates a checkpoint on a data set: overall and per-class accuracy, percent.
/// A checkpoint's result on a test split.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// Overall accuracy, percent.
    pub accuracy: f64,
    /// Accuracy per true class, percent.
    pub per_class: Vec<f64>,
    /// How many test images were predicted as each class (a collapse onto a few classes, or a
    /// class never predicted, shows here).
    pub predicted: Vec<usize>,
    /// Class names of the data set.
    pub class_names: Vec<String>,
}

/// Evaluates the checkpoint at `path` on the test split of `data`.
pub fn evaluate_checkpoint(
    gpu: &Gpu,
    path: &Path,
    data: &crate::data::DataConfig,
) -> Result<Evaluation> {
    let (_, test) = crate::data::load_raw(data)?;
    evaluate_checkpoint_on(gpu, path, test)
}

/// Evaluates the checkpoint at `path` on `test`.
pub fn evaluate_checkpoint_on(gpu: &Gpu, path: &Path, test: Dataset) -> Result<Evaluation> {
    let ck = Checkpoint::load(path)?;
    let saved: TrainConfig =
        serde_json::from_str(ck.get(path, "config")?).map_err(|e| Error::Format {
            path: path.into(),
            msg: format!("config in checkpoint: {e}"),
        })?;
    let model = zoo::build_named(&saved.model, test.shape, test.classes)?;
    let classes: usize = ck.get(path, "classes")?.parse().unwrap_or(0);
    let input = ck.get(path, "input")?;
    if classes != test.classes || input != format!("{:?}", test.shape) {
        return Err(Error::Format {
            path: path.into(),
            msg: format!(
                "checkpoint was trained on {input} images with {classes} classes; this data set has {:?} and {}",
                test.shape, test.classes
            ),
        });
    }
    let params: Vec<Tensor> = model
        .params
        .iter()
        .map(|p| Tensor::zeros(gpu, &p.shape, crate::tensor::DType::F32))
        .collect();
    let running = model.new_running_stats(gpu);
    let names: Vec<String> = model.params.iter().map(|p| p.name.clone()).collect();
    ck.restore(path, "param", &names, &params)?;
    let n = running.mean.len();
    ck.restore(
        path,
        "bn",
        &(0..n)
            .map(|i| format!("{i}.running_mean"))
            .collect::<Vec<_>>(),
        &running.mean,
    )?;
    ck.restore(
        path,
        "bn",
        &(0..n)
            .map(|i| format!("{i}.running_var"))
            .collect::<Vec<_>>(),
        &running.var,
    )?;
    let parse = |k: &str| -> Result<Vec<f32>> {
        serde_json::from_str(ck.get(path, k)?).map_err(|e| Error::Format {
            path: path.into(),
            msg: format!("{k}: {e}"),
        })
    };
    let (mean, std) = (parse("mean")?, parse("std")?);
    let consts: Vec<Var> = params.iter().map(|t| Var::constant(t.clone())).collect();
    let test = Arc::new(test);
    let loader = Loader::new(
        test.clone(),
        (0..test.len()).collect(),
        256,
        View::Weak,
        mean,
        std,
        0,
    )?;
    let [c, h, w] = test.shape;
    let mut logits = Vec::new();
    for batch in loader {
        let b = batch.labels.len();
        let x = Tensor::from_f32(gpu, &[b, c, h, w], &batch.x)?;
        let y = ag::no_grad(|| {
            model
                .forward(&consts, &Var::constant(x), Mode::Eval, &running)
                .map(|r| r.0)
        })?;
        logits.extend(y.value().to_f32_vec()?);
    }
    let (acc, per) = accuracy(&logits, &test.labels, test.classes);
    Ok(Evaluation {
        accuracy: acc,
        per_class: per,
        predicted: prediction_counts(&logits, test.classes),
        class_names: test.class_names.clone(),
    })
}
