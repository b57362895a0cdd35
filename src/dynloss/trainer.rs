//! `train --method dl`: the Dynamic Loss epoch (ranks, hierarchical sampling, warm-up with the
//! label-corrector fit, meta step + real step every iteration, the meta-set pass) and its
//! diagnostics.

use std::path::Path;

use serde::Serialize;

use super::meta_net::{MetaNet, corrected_labels};
use super::meta_step::{
    MetaBatch, MetaParts, Pseudo, VirtualSgd, classifier_loss, meta_gradient, pseudo_labels,
};
use super::ranking::{MetaSplit, Ranking, hierarchical_split, rank};
use crate::autograd::{self as ag, Var};
use crate::data::mix64;
use crate::data::views::View;
use crate::error::{Error, Result};
use crate::optim::Adam;
use crate::tensor::Tensor;
use crate::train::{Checkpoint, Ctx, EpochStats, TrainingMethod, epoch_order, log_counts};

/// Margin magnitude above which the run reports that the margins are diverging.
pub const MARGIN_ALARM: f64 = 20.0;

/// Per-epoch diagnostics of the meta net, stored under `extra` in `metrics.jsonl`.
#[derive(Debug, Clone, Serialize)]
pub struct DlDiagnostics {
    /// True when this epoch was a warm-up epoch.
    pub warmup: bool,
    /// Mean meta loss over the epoch's meta steps (none in warm-up).
    pub meta_loss: Option<f64>,
    /// Largest |q_c|.
    pub max_abs_margin: f64,
    /// The margins q (after the bound, if any).
    pub margins: Vec<f64>,
    /// Share of training samples whose corrected label argmax(y*) is the true label, percent.
    pub label_correction_acc: f64,
    /// Share whose given label is the true label, percent (the no-correction reference).
    pub given_label_acc: f64,
    /// Per class: share of samples (by given label) with g < 0.5, percent.
    pub est_noise_rate: Vec<f64>,
    /// g(r | y) for every bin r (rows) and class y (columns).
    pub g_table: Vec<Vec<f64>>,
    /// Meta-set size.
    pub meta_set: usize,
    /// A warning when the margins or the meta loss diverge.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alarm: Option<String>,
}

/// State of the Dynamic Loss method.
pub struct DynamicLoss {
    meta: MetaNet,
    theta: Vec<Tensor>,
    adam: Adam,
    virtual_params: Vec<usize>,
    fixed_margins: Option<Tensor>,
    bins: usize,
    history: Vec<DlDiagnostics>,
    counts: Vec<usize>,
}

/// Indices of the parameters of the last `k` parameterised layers (a layer = one name
/// prefix before ".weight" / ".bias").
pub fn last_layers(names: &[String], k: Option<usize>) -> Vec<usize> {
    let layer = |n: &str| {
        n.rsplit_once('.')
            .map(|(a, _)| a.to_string())
            .unwrap_or_default()
    };
    let mut layers: Vec<String> = Vec::new();
    for n in names {
        let l = layer(n);
        if layers.last() != Some(&l) {
            layers.push(l);
        }
    }
    let keep: Vec<String> = match k {
        Some(k) if k < layers.len() => layers[layers.len() - k..].to_vec(),
        _ => layers,
    };
    (0..names.len())
        .filter(|&i| keep.contains(&layer(&names[i])))
        .collect()
}

impl DynamicLoss {
    /// The meta net, its Adam optimizer and the ablation settings for `ctx`'s run.
    pub fn new(ctx: &Ctx) -> Result<DynamicLoss> {
        let d = &ctx.cfg.dl;
        let classes = ctx.train.classes;
        let bins = d.bins.unwrap_or(if classes <= 10 { 100 } else { 50 });
        let meta = MetaNet::new(bins, classes, d.vector_meta);
        let theta = meta.init(ctx.gpu, ctx.cfg.seed ^ 0x5EED)?;
        let adam = Adam::new(&theta, d.meta_lr, 0.0);
        let fixed_margins = if d.balanced_softmax {
            Some(log_counts(ctx.gpu, &ctx.train.labels, classes)?)
        } else {
            None
        };
        Ok(DynamicLoss {
            virtual_params: last_layers(&ctx.param_names(), d.meta_layers),
            meta,
            theta,
            adam,
            fixed_margins,
            bins,
            history: Vec::new(),
            counts: crate::data::count_labels(&ctx.train.labels, classes),
        })
    }

    fn parts(&self, ctx: &Ctx) -> MetaParts<'_> {
        let d = &ctx.cfg.dl;
        MetaParts {
            corrector: !d.no_label_corrector,
            generator: !d.no_margin_generator,
            fixed_margins: self.fixed_margins.as_ref(),
            margin_bound: d.margin_bound,
        }
    }

    fn theta_consts(&self) -> Vec<Var> {
        self.theta
            .iter()
            .map(|t| Var::constant(t.clone()))
            .collect()
    }

    fn names(&self) -> Vec<String> {
        self.meta.params.iter().map(|p| p.name.clone()).collect()
    }

    /// Losses (weak view, eval mode, cross-entropy on given labels, computed on the GPU) and
    /// logits of every training sample.
    fn losses_and_logits(&self, ctx: &Ctx) -> Result<(Vec<f32>, Vec<f32>)> {
        let n = ctx.train.len();
        let logits = ctx.predict(&ctx.train, (0..n).collect(), 7)?;
        let c = ctx.train.classes;
        let mut losses = Vec::with_capacity(n);
        for start in (0..n).step_by(8192) {
            let end = (start + 8192).min(n);
            let lt = Tensor::from_f32(ctx.gpu, &[end - start, c], &logits[start * c..end * c])?;
            let lab = Tensor::from_u32(ctx.gpu, &[end - start], &ctx.train.labels[start..end])?;
            losses
                .extend(crate::tensor::softmax::cross_entropy_hard(&lt, &lab, None)?.to_f32_vec()?);
        }
        Ok((losses, logits))
    }

    fn bins_tensor(ctx: &Ctx, ranking: &Ranking, indices: &[usize]) -> Result<Tensor> {
        let b: Vec<u32> = indices.iter().map(|&i| ranking.bins[i]).collect();
        Tensor::from_u32(ctx.gpu, &[b.len()], &b)
    }

    /// Warm-up epoch: cross-entropy on the given labels; meanwhile the corrector learns to
    /// reproduce them (CE between y* and the one-hot label, yhat = softmax of the epoch-start
    /// weak logits).
    fn warmup_epoch(
        &mut self,
        ctx: &mut Ctx,
        epoch: usize,
        split: &MetaSplit,
        ranking: &Ranking,
        logits: &[f32],
    ) -> Result<EpochStats> {
        let order: Vec<usize> = epoch_order(split.train.len(), ctx.cfg.seed, epoch)
            .into_iter()
            .map(|i| split.train[i])
            .collect();
        let loader = ctx.loader(order, ctx.train_view(), epoch, 1)?;
        let c = ctx.train.classes;
        let fit = !ctx.cfg.dl.no_label_corrector;
        let mut st = EpochStats::default();
        for batch in loader {
            let (x, labels) = ctx.upload(&batch.x, &batch.labels)?;
            let (p, out, stats) = ctx.forward_train(&x)?;
            let loss = ag::mean_all(&ag::cross_entropy(&out, &labels, None)?)?;
            let v = ctx.sgd_update(&p, &loss, &stats, epoch)?;
            if fit {
                let rows: Vec<f32> = batch
                    .indices
                    .iter()
                    .flat_map(|&i| logits[i * c..(i + 1) * c].iter().copied())
                    .collect();
                let lt = Tensor::from_f32(ctx.gpu, &[batch.indices.len(), c], &rows)?;
                let yhat = pseudo_labels(&lt, Pseudo::Softmax)?;
                let bins = Self::bins_tensor(ctx, ranking, &batch.indices)?;
                let tv: Vec<Var> = self
                    .theta
                    .iter()
                    .map(|t| Var::leaf(t.clone(), true))
                    .collect();
                let g = self.meta.label_weights(&tv, &bins, &labels)?;
                let ystar = corrected_labels(&g, &labels, &yhat)?;
                // -log y*_y: cross-entropy of y* against the one-hot given label.
                let nll = ag::neg(&ag::log(&ag::pick(&ystar, &labels)?)?)?;
                let fit_loss = ag::mean_all(&nll)?;
                let refs: Vec<&Var> = tv.iter().collect();
                let grads = ag::backward(&fit_loss, &refs)?;
                self.adam.update(&self.theta, &grads)?;
            }
            let correct = Ctx::count_correct(out.value(), &batch.labels)?;
            st.record(v, correct, batch.labels.len());
            ctx.tick(format!(
                "warm-up loss {:.3}",
                st.loss_sum / st.batches as f64
            ));
        }
        Ok(st)
    }

    /// A meta-batch order long enough for `iters` batches of `mb`: reshuffled meta set repeats.
    fn meta_order(ctx: &Ctx, meta: &[usize], iters: usize, mb: usize, epoch: usize) -> Vec<usize> {
        let mut order = Vec::with_capacity(iters * mb + meta.len());
        let mut round = 0;
        while order.len() < iters * mb {
            let perm = epoch_order(meta.len(), ctx.cfg.seed ^ 0xA11CE, epoch * 1000 + round);
            order.extend(perm.into_iter().map(|i| meta[i]));
            round += 1;
        }
        order
    }

    fn meta_epoch(
        &mut self,
        ctx: &mut Ctx,
        epoch: usize,
        split: &MetaSplit,
        ranking: &Ranking,
    ) -> Result<(EpochStats, Option<f64>)> {
        let d = ctx.cfg.dl.clone();
        let order: Vec<usize> = epoch_order(split.train.len(), ctx.cfg.seed, epoch)
            .into_iter()
            .map(|i| split.train[i])
            .collect();
        let weak = ctx.loader(order.clone(), View::Weak, epoch, 2)?;
        let strong = ctx.loader(order, ctx.train_view(), epoch, 1)?;
        let iters = weak.num_batches();
        let mb = ctx.cfg.batch_size.min(split.meta.len()).max(1);
        let meta_loader = crate::data::views::Loader::new(
            ctx.train.clone(),
            Self::meta_order(ctx, &split.meta, iters, mb, epoch),
            mb,
            ctx.train_view(),
            ctx.mean.clone(),
            ctx.std.clone(),
            ctx.cfg.seed ^ 0x3E7A,
        )?
        .with_epoch(epoch as u64)
        .with_drop_last(true)
        .with_workers(ctx.cfg.workers);
        let meta_active = d
            .meta_stop
            .is_none_or(|f| (epoch as f64) < f * ctx.cfg.epochs as f64);
        let mut st = EpochStats::default();
        let mut meta_sum = 0.0;
        let mut meta_n = 0usize;
        let base_lr = ctx.cfg.lr;
        for (it, ((wb, sb), mbatch)) in weak.zip(strong).zip(meta_loader).enumerate() {
            debug_assert_eq!(wb.indices, sb.indices);
            let (xw, labels) = ctx.upload(&wb.x, &wb.labels)?;
            let (xs, _) = ctx.upload(&sb.x, &sb.labels)?;
            let (mx, mlabels) = ctx.upload(&mbatch.x, &mbatch.labels)?;
            let bins = Self::bins_tensor(ctx, ranking, &wb.indices)?;
            let batch = MetaBatch {
                x: &xw,
                labels: &labels,
                bins: &bins,
                meta_x: &mx,
                meta_labels: &mlabels,
            };
            let lr = ctx.schedule.lr(ctx.step);
            let pseudo =
                Pseudo::HardGumbel(mix64(ctx.cfg.seed ^ ((epoch as u64) << 32) ^ it as u64));
            let yhat = if meta_active {
                let opt = VirtualSgd {
                    lr,
                    momentum: ctx.cfg.momentum,
                    weight_decay: ctx.cfg.weight_decay,
                    buffers: Some(&ctx.sgd.buffers),
                };
                let mg = meta_gradient(
                    &ctx.model,
                    &ctx.params,
                    &ctx.running,
                    &self.meta,
                    &self.theta,
                    &batch,
                    pseudo,
                    &opt,
                    &self.virtual_params,
                    self.parts(ctx),
                )?;
                let ml = mg.meta_loss.value().item()? as f64;
                if !ml.is_finite() {
                    return Err(Error::Config(format!(
                        "meta loss became {ml} at epoch {} step {}; the last good checkpoint is kept",
                        epoch + 1,
                        ctx.step + 1
                    )));
                }
                meta_sum += ml;
                meta_n += 1;
                if d.meta_lr_follows_classifier {
                    self.adam.lr = d.meta_lr * lr / base_lr;
                }
                self.adam.update(&self.theta, &mg.grads)?;
                mg.yhat
            } else {
                let consts: Vec<Var> = ctx
                    .params
                    .iter()
                    .map(|t| Var::constant(t.clone()))
                    .collect();
                let out = ag::no_grad(|| {
                    ctx.model.forward(
                        &consts,
                        &Var::constant(xw.clone()),
                        crate::nn::Mode::Train,
                        &ctx.running,
                    )
                })?
                .0;
                pseudo_labels(out.value(), pseudo)?
            };
            // Real step: strong view, the updated meta net, no graph through it.
            let (p, out, stats) = ctx.forward_train(&xs)?;
            let tv = self.theta_consts();
            let loss = classifier_loss(&self.meta, &tv, &out, &batch, &yhat, self.parts(ctx))?;
            let v = ctx.sgd_update(&p, &loss, &stats, epoch)?;
            let correct = Ctx::count_correct(out.value(), &sb.labels)?;
            st.record(v, correct, sb.labels.len());
            ctx.tick(format!(
                "loss {:.3} meta {:.3}",
                st.loss_sum / st.batches as f64,
                meta_sum / meta_n.max(1) as f64
            ));
        }
        Ok((st, (meta_n > 0).then(|| meta_sum / meta_n as f64)))
    }

    /// After each epoch: one pass over the meta set with cross-entropy on its given labels
    /// plus the margins (no label correction).
    fn meta_set_pass(&self, ctx: &mut Ctx, epoch: usize, split: &MetaSplit) -> Result<()> {
        let order: Vec<usize> = epoch_order(split.meta.len(), ctx.cfg.seed ^ 0xFACE, epoch)
            .into_iter()
            .map(|i| split.meta[i])
            .collect();
        let loader = ctx.loader(order, ctx.train_view(), epoch, 3)?;
        let q = match (self.parts(ctx).generator, &self.fixed_margins) {
            (true, _) => Some(
                self.meta
                    .bounded_margins(&self.theta_consts(), ctx.cfg.dl.margin_bound)?
                    .detach(),
            ),
            (false, Some(m)) => Some(Var::constant(m.clone())),
            _ => None,
        };
        for batch in loader {
            if batch.labels.len() < 2 {
                continue;
            }
            let (x, labels) = ctx.upload(&batch.x, &batch.labels)?;
            let (p, out, stats) = ctx.forward_train(&x)?;
            let loss = ag::mean_all(&ag::cross_entropy(&out, &labels, q.as_ref())?)?;
            ctx.sgd_update(&p, &loss, &stats, epoch)?;
            ctx.step -= 1; // the meta-set pass does not advance the schedule
        }
        Ok(())
    }

    fn diagnostics(
        &self,
        ctx: &Ctx,
        ranking: &Ranking,
        logits: &[f32],
        warmup: bool,
        meta_loss: Option<f64>,
        meta_set: usize,
    ) -> Result<DlDiagnostics> {
        let c = ctx.train.classes;
        let tv = self.theta_consts();
        let g = ag::no_grad(|| self.meta.label_weight_table(&tv))?.to_f32_vec()?;
        let q: Vec<f64> = if self.parts(ctx).generator {
            ag::no_grad(|| self.meta.bounded_margins(&tv, ctx.cfg.dl.margin_bound))?
                .value()
                .to_f32_vec()?
                .iter()
                .map(|&v| v as f64)
                .collect()
        } else {
            Vec::new()
        };
        let (mut hit, mut given_hit) = (0usize, 0usize);
        let mut low = vec![0usize; c];
        for (i, (&y, &truth)) in ctx.train.labels.iter().zip(&ctx.true_labels).enumerate() {
            let w = if self.parts(ctx).corrector {
                g[ranking.bins[i] as usize * c + y as usize] as f64
            } else {
                1.0
            };
            let row = &logits[i * c..(i + 1) * c];
            let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
            let z: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
            let mut best = 0;
            let mut best_v = f64::NEG_INFINITY;
            for (j, &v) in row.iter().enumerate() {
                let ys =
                    (1.0 - w) * (v as f64 - m).exp() / z + if j == y as usize { w } else { 0.0 };
                if ys > best_v {
                    best_v = ys;
                    best = j;
                }
            }
            hit += (best == truth as usize) as usize;
            given_hit += (y == truth) as usize;
            low[y as usize] += (w < 0.5) as usize;
        }
        let n = ctx.train.len().max(1) as f64;
        let max_abs_margin = q.iter().map(|v| v.abs()).fold(0.0, f64::max);
        let best_meta = self
            .history
            .iter()
            .filter_map(|h| h.meta_loss)
            .fold(f64::INFINITY, f64::min);
        let alarm = if max_abs_margin > MARGIN_ALARM {
            Some(format!(
                "margins diverging: max |q| = {max_abs_margin:.1} (consider --margin-bound or --meta-lr-follows-classifier)"
            ))
        } else {
            meta_loss
                .filter(|&m| best_meta.is_finite() && m > 2.0 * best_meta)
                .map(|m| format!("meta loss rising: {m:.3} vs best {best_meta:.3}"))
        };
        Ok(DlDiagnostics {
            warmup,
            meta_loss,
            max_abs_margin,
            margins: q,
            label_correction_acc: 100.0 * hit as f64 / n,
            given_label_acc: 100.0 * given_hit as f64 / n,
            est_noise_rate: low
                .iter()
                .zip(&self.counts)
                .map(|(&l, &t)| {
                    if t == 0 {
                        0.0
                    } else {
                        100.0 * l as f64 / t as f64
                    }
                })
                .collect(),
            g_table: (0..self.bins)
                .map(|r| (0..c).map(|y| g[r * c + y] as f64).collect())
                .collect(),
            meta_set,
            alarm,
        })
    }

    fn plots(&self, ctx: &Ctx, dir: &Path) -> Result<()> {
        use crate::report::plot::{bar_chart, line_chart};
        let last = self.history.last().expect("called after an epoch");
        let plots = dir.join("plots");
        std::fs::create_dir_all(&plots).map_err(|e| Error::Io {
            path: plots.clone(),
            source: e,
        })?;
        let names = &ctx.train.class_names;
        let curves: Vec<(String, Vec<(f64, f64)>)> = (0..ctx.train.classes)
            .map(|y| {
                (
                    names.get(y).cloned().unwrap_or_else(|| y.to_string()),
                    last.g_table
                        .iter()
                        .enumerate()
                        .map(|(r, row)| (r as f64, row[y]))
                        .collect(),
                )
            })
            .collect();
        let refs: Vec<(&str, Vec<(f64, f64)>)> = curves
            .iter()
            .map(|(n, v)| (n.as_str(), v.clone()))
            .collect();
        line_chart(
            &plots.join("label_weights.png"),
            "label weight g(r|y) per class",
            "loss-rank bin r",
            "g",
            &refs,
        )?;
        if !last.margins.is_empty() {
            let logn: Vec<f64> = self
                .counts
                .iter()
                .map(|&n| (n.max(1) as f64).ln())
                .collect();
            let mean = logn.iter().sum::<f64>() / logn.len() as f64;
            bar_chart(
                &plots.join("margins.png"),
                "learned margin q and centred log class count",
                names,
                &[
                    ("margin q", last.margins.clone()),
                    ("ln(count) - mean", logn.iter().map(|v| v - mean).collect()),
                ],
            )?;
        }
        let acc: Vec<(f64, f64)> = self
            .history
            .iter()
            .enumerate()
            .map(|(e, h)| ((e + 1) as f64, h.label_correction_acc))
            .collect();
        let given: Vec<(f64, f64)> = self
            .history
            .iter()
            .enumerate()
            .map(|(e, h)| ((e + 1) as f64, h.given_label_acc))
            .collect();
        line_chart(
            &plots.join("label_accuracy.png"),
            "label-correction accuracy",
            "epoch",
            "accuracy (%)",
            &[("corrected labels", acc), ("given labels", given)],
        )
    }

    /// Where the run writes (for the plots), set by the driver.
    pub fn out_dir<'a>(ctx: &'a Ctx<'_>) -> Option<&'a Path> {
        ctx.out.as_deref()
    }
}

impl TrainingMethod for DynamicLoss {
    fn epoch(&mut self, ctx: &mut Ctx, epoch: usize) -> Result<EpochStats> {
        let (losses, logits) = self.losses_and_logits(ctx)?;
        let ranking = rank(
            ctx.gpu,
            &losses,
            &ctx.train.labels,
            ctx.train.classes,
            self.bins,
        )?;
        let mut rng = crate::data::rng_for(ctx.cfg.seed, &[0xD1CE, epoch as u64]);
        let split = hierarchical_split(&ranking, ctx.cfg.dl.naive_sampling, &mut rng);
        let warmup = epoch < ctx.cfg.dl.warmup_epochs;
        let (mut st, meta_loss) = if warmup {
            (
                self.warmup_epoch(ctx, epoch, &split, &ranking, &logits)?,
                None,
            )
        } else {
            self.meta_epoch(ctx, epoch, &split, &ranking)?
        };
        if !warmup {
            self.meta_set_pass(ctx, epoch, &split)?;
        }
        let diag = self.diagnostics(ctx, &ranking, &logits, warmup, meta_loss, split.meta.len())?;
        if let Some(a) = &diag.alarm {
            eprintln!("warning: epoch {}: {a}", epoch + 1);
        }
        st.extra = Some(serde_json::to_value(&diag).expect("diagnostics serialise"));
        self.history.push(diag);
        if let Some(dir) = Self::out_dir(ctx) {
            self.plots(ctx, dir)?;
        }
        Ok(st)
    }

    fn save(&self, ck: &mut Checkpoint) -> Result<()> {
        let names = self.names();
        ck.push_tensors("meta", &names, &self.theta)?;
        ck.push_tensors("adam_m", &names, &self.adam.m)?;
        ck.push_tensors("adam_v", &names, &self.adam.v)?;
        ck.meta
            .insert("adam_step".into(), self.adam.step.to_string());
        ck.meta.insert(
            "dl_history".into(),
            serde_json::to_string(&self.history).expect("serialise"),
        );
        Ok(())
    }

    fn restore(&mut self, path: &Path, ck: &Checkpoint) -> Result<()> {
        let names = self.names();
        ck.restore(path, "meta", &names, &self.theta)?;
        ck.restore(path, "adam_m", &names, &self.adam.m)?;
        ck.restore(path, "adam_v", &names, &self.adam.v)?;
        self.adam.step = ck.get(path, "adam_step")?.parse().unwrap_or(0);
        let hist: Vec<serde_json::Value> =
            serde_json::from_str(ck.get(path, "dl_history")?).unwrap_or_default();
        self.history = hist
            .into_iter()
            .filter_map(|v| diag_from_json(&v))
            .collect();
        Ok(())
    }
}

fn diag_from_json(v: &serde_json::Value) -> Option<DlDiagnostics> {
    let f = |k: &str| v.get(k).and_then(|x| x.as_f64());
    let vec = |k: &str| -> Vec<f64> {
        v.get(k)
            .and_then(|x| x.as_array())
            .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
            .unwrap_or_default()
    };
    Some(DlDiagnostics {
        warmup: v.get("warmup")?.as_bool()?,
        meta_loss: f("meta_loss"),
        max_abs_margin: f("max_abs_margin")?,
        margins: vec("margins"),
        label_correction_acc: f("label_correction_acc")?,
        given_label_acc: f("given_label_acc")?,
        est_noise_rate: vec("est_noise_rate"),
        g_table: v
            .get("g_table")?
            .as_array()?
            .iter()
            .map(|row| {
                row.as_array()
                    .map(|r| r.iter().filter_map(|x| x.as_f64()).collect())
                    .unwrap_or_default()
            })
            .collect(),
        meta_set: v.get("meta_set")?.as_u64()? as usize,
        alarm: v.get("alarm").and_then(|a| a.as_str()).map(String::from),
    })
}
