//! The epoch loop: sets up the data, the classifier and the method, resumes if asked, and
//! after every epoch evaluates, logs, checkpoints and summarises.

use std::cell::Cell;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::nn::zoo;

use super::accuracy::accuracy;
use super::checkpoint::Checkpoint;
use super::classifier::Classifier;
use super::config::{Method, TrainConfig};
use super::data::TrainData;
use super::method::{EpochEnv, TrainingMethod};
use super::methods::baseline::Baseline;
use super::methods::dynamic_loss::DynamicLoss;
use super::metrics::{self, EpochMetrics};
use super::relabel::relabel_from_checkpoint;
use super::run_dir::RunDir;
use super::state::{self, CHECKPOINT, METRICS, SUMMARY};

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
    /// Set by the caller when the user asks the run to stop (Ctrl-C, SIGTERM): the epoch in
    /// progress is abandoned and [`Error::Interrupted`] returned.
    pub stop: Option<Arc<AtomicBool>>,
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
    /// The class names, in class-index order (per-class accuracies follow it).
    pub class_names: Vec<String>,
    /// The resolved configuration.
    pub config: TrainConfig,
    /// Adapter that ran it.
    pub adapter: String,
}

/// The training method `cfg` names.
fn method_for(
    gpu: &Gpu,
    cfg: &TrainConfig,
    data: &TrainData,
    clf: &Classifier,
) -> Result<Box<dyn TrainingMethod>> {
    Ok(match cfg.method {
        Method::Ce => Box::new(Baseline::cross_entropy()),
        Method::Bs => Box::new(Baseline::balanced_softmax(
            gpu,
            &data.train.labels,
            data.train.classes,
        )?),
        Method::Dl => Box::new(DynamicLoss::new(gpu, cfg, data, clf)?),
    })
}

fn progress_bar(steps: usize, epoch: usize, epochs: usize) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new(steps as u64);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "epoch {prefix} [{bar:30}] {pos}/{len} {elapsed}<{eta} {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    pb.set_prefix(format!("{}/{epochs}", epoch + 1));
    pb
}

/// Trains as `cfg` says, writing into `opts.out`; returns the summary.
pub fn train(gpu: &Gpu, cfg: &TrainConfig, opts: &RunOptions) -> Result<Summary> {
    cfg.validate()?;
    let run_dir = RunDir::claim(&opts.out, opts.resume)?;
    let out = run_dir.path();
    let ck_path = out.join(CHECKPOINT);
    let metrics_path = out.join(METRICS);

    let mut data = TrainData::load(cfg)?;
    if let Some(r) = relabel_from_checkpoint(gpu, cfg, &mut data)?
        && opts.verbose
    {
        eprintln!(
            "relabelled {} training labels: {:.2}% right before, {:.2}% after",
            r.changed, r.right_before, r.right_after
        );
    }
    let model = zoo::build_named(&cfg.model, data.train.shape, data.train.classes)?;
    let mut clf = Classifier::new(gpu, cfg, model, data.steps_per_epoch())?;
    let mut method = method_for(gpu, cfg, &data, &clf)?;

    let mut done = state::Progress {
        epoch: 0,
        seconds: 0.0,
        history: Vec::new(),
    };
    if opts.resume {
        let ck = Checkpoint::load(&ck_path)?;
        let saved = state::config_of(&ck_path, &ck)?;
        let changed = cfg.resume_changes(&saved).map_err(|differ| {
            Error::Config(format!(
                "--resume: the settings differ from the run in {}: {differ} (resume with the same flags or config; only the stabilisers may change)",
                out.display()
            ))
        })?;
        if !changed.is_empty() && opts.verbose {
            eprintln!("resuming with changed stabilisers: {}", changed.join(", "));
        }
        state::check_labels(&ck_path, &ck, &data)?;
        done = state::restore(&ck_path, &ck, &mut clf, method.as_mut(), &metrics_path)?;
        // A kill after the checkpoint's rename may have left the files behind it stale.
        write_epoch_files(cfg, &data, gpu, &done, out)?;
    }

    let seconds_before = done.seconds;
    let t_run = Instant::now();
    let show_bar = opts
        .progress
        .unwrap_or_else(|| std::io::stderr().is_terminal());
    let end_epoch = match opts.stop_after {
        Some(n) => cfg.epochs.min(done.epoch + n),
        None => cfg.epochs,
    };
    let test_order: Vec<usize> = (0..data.test.len()).collect();
    for epoch in done.epoch..end_epoch {
        let t0 = Instant::now();
        let bar = show_bar.then(|| progress_bar(data.steps_per_epoch(), epoch, cfg.epochs));
        let env = EpochEnv {
            gpu,
            cfg,
            data: &data,
            out,
            progress: bar.as_ref(),
            epoch,
            stop: opts.stop.as_deref(),
            steps: Cell::new(0),
        };
        clf.begin_epoch(epoch);
        let st = method.epoch(&env, &mut clf, epoch)?;
        let train_secs = t0.elapsed().as_secs_f64();
        if let Some(pb) = &bar {
            pb.finish_and_clear();
        }
        let logits = clf.predict(data.predict_loader(&data.test, test_order.clone())?)?;
        let (test_acc, per_class) = accuracy(&logits, &data.test.labels, data.test.classes);
        let m = EpochMetrics {
            epoch: epoch + 1,
            loss: st.mean_loss(),
            train_acc: st.accuracy(),
            test_acc,
            per_class_acc: per_class,
            lr: clf.last_lr() as f64,
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
        check_finite(&clf, method.as_ref())?;
        done.history.push(m);
        done.epoch = epoch + 1;
        done.seconds = seconds_before + t_run.elapsed().as_secs_f64();
        // The checkpoint is the commit point: it holds the metrics too.
        state::save(&ck_path, cfg, &data, &clf, method.as_ref(), &done)?;
        write_epoch_files(cfg, &data, gpu, &done, out)?;
        if opts.stop.as_ref().is_some_and(|f| f.load(Ordering::SeqCst)) {
            return Err(Error::Interrupted {
                epoch: epoch + 1,
                step: env.steps.get(),
                dir: out.into(),
                committed: epoch + 1,
            });
        }
    }
    done.seconds = seconds_before + t_run.elapsed().as_secs_f64();
    write_summary(cfg, &data, gpu, &done.history, done.seconds, out)
}

/// Refuses to commit an epoch whose state holds a NaN or infinity (a loss can stay finite
/// while a parameter overflows), naming the first such tensor; one small readback.
pub fn check_finite(clf: &Classifier, method: &dyn TrainingMethod) -> Result<()> {
    let mut named = clf.state_tensors();
    named.extend(method.state_tensors());
    let tensors: Vec<&crate::tensor::Tensor> = named.iter().map(|(_, t)| *t).collect();
    let counts = crate::tensor::finite::count_nonfinite(&tensors)?;
    let bad: Vec<(&str, u32)> = named
        .iter()
        .zip(&counts)
        .filter(|(_, n)| **n > 0)
        .map(|((name, _), n)| (name.as_str(), *n))
        .collect();
    match bad.first() {
        None => Ok(()),
        Some((name, n)) => Err(clf.diverged(format!(
            "tensor '{name}' holds {n} non-finite values ({} values in {} of {} state tensors)",
            bad.iter().map(|(_, n)| *n as u64).sum::<u64>(),
            bad.len(),
            named.len()
        ))),
    }
}

/// The files that follow the checkpoint: metrics, accuracy plot, summary.
fn write_epoch_files(
    cfg: &TrainConfig,
    data: &TrainData,
    gpu: &Gpu,
    done: &state::Progress,
    out: &Path,
) -> Result<()> {
    metrics::write_metrics(&out.join(METRICS), &done.history)?;
    metrics::plot_accuracy(out, &done.history)?;
    write_summary(cfg, data, gpu, &done.history, done.seconds, out)?;
    Ok(())
}

fn write_summary(
    cfg: &TrainConfig,
    data: &TrainData,
    gpu: &Gpu,
    history: &[EpochMetrics],
    seconds: f64,
    out: &Path,
) -> Result<Summary> {
    let s = Summary {
        last_acc: history.last().map(|m| m.test_acc).unwrap_or(0.0),
        best_acc: history.iter().map(|m| m.test_acc).fold(0.0, f64::max),
        epochs: history.len(),
        seconds,
        noise_rate: data.noise_rate,
        train_samples: data.train.len(),
        class_names: data.train.class_names.clone(),
        config: cfg.clone(),
        adapter: gpu.info().name.clone(),
    };
    metrics::write_json(&out.join(SUMMARY), &s)?;
    Ok(s)
}
