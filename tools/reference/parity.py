#!/usr/bin/env python3
"""PyTorch reference for one warm-up iteration, two meta iterations and one meta-set step of
the Dynamic Loss, written from docs/method.md (not from the Rust code), computed in float64.

It writes tests/golden/parity.safetensors, which tests/parity_pytorch.rs replays on the GPU.
Regenerate (from the repository root) with:

    ~/venv-torch/bin/python tools/reference/parity.py

The case: ResNet-8 (option-A shortcuts) on 16 random 1x12x12 images, 10 classes, R = 10 rank
bins, a meta batch of 10, SGD lr 0.1 (epoch schedule with one warm-up epoch of one step over
10 epochs), momentum 0.9, weight decay 5e-4, meta-net Adam lr 3e-3. The file stores every
input (classifier and meta-net weights, BN running statistics, both batches, the bins, the lr
of each step, the uniforms behind each Gumbel sample) and every intermediate, as f32 except
the uniforms (f64). Tensors larger than SAMPLE_CAP elements that are outputs are stored as a
fixed sample of SAMPLE_CAP elements (see `sample_indices`) to keep the file small; inputs are
always stored whole. The momentum buffers start at zero (a fresh optimizer), as in the Rust
`Classifier::new`.

Conventions this reference matches where the method leaves a choice (see README.md):
parameter order and names of the Rust model and meta net; every forward pass here is in
training mode (batch statistics); the meta step's two forward passes (weak view, meta batch)
leave the running statistics alone (the authors' `higher` runs them on a copy); the warm-up fit's weak-view forward does not move them either; only the
real step and the meta-set step update them (momentum 0.1, unbiased variance).
"""

import argparse
import json
import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

torch.set_default_dtype(torch.float64)

C = 10  # classes
R = 10  # rank bins
B = 16  # training batch
M = 10  # meta batch
H = W = 12
HIDDEN = 64
LR, MOMENTUM, WD = 0.1, 0.9, 5e-4
EPOCHS, WARMUP_EPOCHS, STEPS_PER_EPOCH = 10, 1, 1
META_LR = 3e-3
BN_EPS, BN_MOMENTUM = 1e-5, 0.1
SAMPLE_CAP = 256
SAMPLE_STRIDE = 7919  # a prime, coprime with every tensor size here

COMMAND = "~/venv-torch/bin/python tools/reference/parity.py"


def f32(t):
    """Rounded to f32 and back: the inputs are stored as f32, so the reference starts from
    exactly the values the Rust side reads."""
    return t.float().double()


def sample_indices(numel):
    """The elements kept of an output tensor with more than SAMPLE_CAP elements."""
    return [(k * SAMPLE_STRIDE + 13) % numel for k in range(SAMPLE_CAP)]


# ---------------------------------------------------------------- the models, functionally


def resnet8_params(gen):
    """(name, tensor) of ResNet-8 for 1 channel in this project's parameter order."""
    p = []

    def conv(name, cin, cout):
        std = math.sqrt(2.0 / (cin * 9))  # Kaiming normal, fan-in
        p.append((name + ".weight", torch.randn(cout, cin, 3, 3, generator=gen) * std))

    def bn(name, c):
        # Not the identity init, so gamma and beta matter in every gradient.
        p.append((name + ".weight", 1.0 + 0.1 * torch.randn(c, generator=gen)))
        p.append((name + ".bias", 0.1 * torch.randn(c, generator=gen)))

    conv("conv1", 1, 16)
    bn("bn1", 16)
    cin = 16
    for s, cout in enumerate([16, 32, 64]):
        pre = f"layer{s + 1}.0"
        conv(pre + ".conv1", cin, cout)
        bn(pre + ".bn1", cout)
        conv(pre + ".conv2", cout, cout)
        bn(pre + ".bn2", cout)
        cin = cout
    # Larger than the N(0, 0.01) init, so the logits, and so the Gumbel picks and the
    # softmax, depend on the weights.
    p.append(("fc.weight", 0.3 * torch.randn(C, 64, generator=gen)))
    p.append(("fc.bias", 0.1 * torch.randn(C, generator=gen)))
    return p


BN_CHANNELS = [16, 16, 16, 32, 32, 64, 64]


def shortcut_a(x, cout):
    """Option A: subsample by 2, zero channels split evenly before and after."""
    x = x[:, :, ::2, ::2]
    pad = (cout - x.shape[1]) // 2
    return F.pad(x, (0, 0, 0, 0, pad, cout - x.shape[1] - pad))


def resnet8(w, x, running=None):
    """Logits; training-mode batch norm. With `running` (lists of mean / var tensors) the
    running statistics are updated in place, as the real step does; without, they are not."""
    it = iter(w)
    k = [0]

    def bn(h):
        g, b = next(it), next(it)
        if running is None:
            rm = rv = None
        else:
            rm, rv = running[0][k[0]], running[1][k[0]]
        k[0] += 1
        return F.batch_norm(h, rm, rv, g, b, training=True, momentum=BN_MOMENTUM, eps=BN_EPS)

    h = F.relu(bn(F.conv2d(x, next(it), padding=1)))
    for cout, stride in [(16, 1), (32, 2), (64, 2)]:
        a = F.relu(bn(F.conv2d(h, next(it), stride=stride, padding=1)))
        a = bn(F.conv2d(a, next(it), padding=1))
        s = h if stride == 1 and h.shape[1] == cout else shortcut_a(h, cout)
        h = F.relu(a + s)
    h = h.mean(dim=(2, 3))
    return F.linear(h, next(it), next(it))


def mlp_params(prefix, rows, last_bias, gen):
    def xavier_uniform(fi, fo, shape):
        a = math.sqrt(6.0 / (fi + fo))
        return (torch.rand(*shape, generator=gen) * 2 - 1) * a

    def xavier_normal(fo, fi):
        return torch.randn(fo, fi, generator=gen) * math.sqrt(2.0 / (fi + fo))

    p = [(prefix + ".embedding", xavier_uniform(rows, HIDDEN, (rows, HIDDEN)))]
    for i, (fi, fo) in enumerate([(HIDDEN, HIDDEN), (HIDDEN, HIDDEN), (HIDDEN, C)]):
        p.append((f"{prefix}.fc{i}.weight", xavier_normal(fo, fi)))
        p.append((f"{prefix}.fc{i}.bias", torch.full((fo,), last_bias if i == 2 else 0.0)))
    return p


def mlp(p, inp):
    h = inp @ p[0]
    for i in range(3):
        h = F.linear(h, p[1 + 2 * i], p[2 + 2 * i])
        if i < 2:
            h = F.relu(h)
    return h


def corrector(theta, bins, labels):
    """g(r | y) per sample."""
    out = torch.sigmoid(mlp(theta[:7], F.one_hot(bins, R).double()))
    return out.gather(1, labels[:, None])[:, 0]


def generator(theta):
    """The margins q [C]."""
    return mlp(theta[7:], torch.ones(1, 1))[0]


def corrected(g, labels, yhat):
    return F.one_hot(labels, C).double() * g[:, None] + yhat * (1 - g[:, None])


def dynamic_loss(logits, ystar, q):
    return -(ystar * F.log_softmax(logits + q, dim=1)).sum(1).mean()


def gumbel_pick(logits, u):
    """Hard Gumbel-softmax sample (tau 1) as one-hot rows, from the uniforms u."""
    s = logits.detach() - torch.log(-torch.log(u))
    return F.one_hot(s.argmax(1), C).double()


def gumbel_gap(logits, u):
    """Per row: best Gumbel score minus the second best (a near tie could flip the pick)."""
    s = logits.detach() - torch.log(-torch.log(u))
    top = s.topk(2, dim=1).values
    return top[:, 0] - top[:, 1]


def lr_at(step, epoch):
    """The epoch schedule: 0.5 lr (1 + cos(pi e / E)), ramped from 0.1x over the warm-up
    steps; rounded to f32 as the Rust schedule computes it in f32."""
    value = 0.5 * LR * (1 + math.cos(math.pi * epoch / EPOCHS))
    warm = WARMUP_EPOCHS * STEPS_PER_EPOCH
    if step < warm:
        value *= 0.1 + 0.9 * step / warm
    return float(np.float32(value))


# ---------------------------------------------------------------- recording


class Golden:
    def __init__(self):
        self.t = {}

    def put(self, key, value, whole=False):
        v = value.detach().reshape(-1) if torch.is_tensor(value) else torch.tensor([value])
        if not whole and v.numel() > SAMPLE_CAP:
            v = v[sample_indices(v.numel())]
        self.t[key] = v.to(torch.float32).contiguous()

    def put_list(self, prefix, names, values, whole=False):
        for n, v in zip(names, values):
            self.put(f"{prefix}.{n}", v, whole)

    def put_f64(self, key, value):
        self.t[key] = value.detach().reshape(-1).contiguous()


def adam_state(opt, params):
    st = [opt.state.get(p, {}) for p in params]
    zero = [torch.zeros_like(p) for p in params]
    m = [s.get("exp_avg", z) for s, z in zip(st, zero)]
    v = [s.get("exp_avg_sq", z) for s, z in zip(st, zero)]
    return m, v


def sgd_buffers(opt, params):
    return [opt.state.get(p, {}).get("momentum_buffer", torch.zeros_like(p)) for p in params]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="tests/golden/parity.safetensors")
    ap.add_argument("--seed", type=int, default=29)
    args = ap.parse_args()
    gen = torch.Generator().manual_seed(args.seed)

    named = resnet8_params(gen)
    wnames = [n for n, _ in named]
    w = [f32(t).requires_grad_(True) for _, t in named]
    running = (
        [f32(0.1 * torch.randn(c, generator=gen)) for c in BN_CHANNELS],
        [f32(0.5 + torch.rand(c, generator=gen)) for c in BN_CHANNELS],
    )
    mnamed = mlp_params("corrector", R, 3.98, gen) + mlp_params("generator", 1, 1.0, gen)
    tnames = [n for n, _ in mnamed]
    theta = [f32(t).requires_grad_(True) for _, t in mnamed]

    x_weak = f32(torch.randn(B, 1, H, W, generator=gen))
    # A different view of the same images: flipped, shifted and noisy.
    x_strong = torch.roll(x_weak.flip(3), 1, dims=2) + 0.3 * torch.randn(B, 1, H, W, generator=gen)
    x_strong = f32(x_strong)
    labels = torch.randint(0, C, (B,), generator=gen)
    bins = torch.randint(0, R, (B,), generator=gen)
    meta_x = f32(torch.randn(M, 1, H, W, generator=gen))
    meta_labels = torch.randperm(C, generator=gen)[:M]

    gold = Golden()
    gold.put_list("input.param", wnames, w, whole=True)
    for i in range(len(BN_CHANNELS)):
        gold.put(f"input.bn.{i}.running_mean", running[0][i], whole=True)
        gold.put(f"input.bn.{i}.running_var", running[1][i], whole=True)
    gold.put_list("input.meta", tnames, theta, whole=True)
    for k, v in [("x_weak", x_weak), ("x_strong", x_strong), ("meta_x", meta_x)]:
        gold.put("input." + k, v, whole=True)
    for k, v in [("labels", labels), ("bins", bins), ("meta_labels", meta_labels)]:
        gold.put("input." + k, v.double(), whole=True)

    sgd = torch.optim.SGD(w, lr=LR, momentum=MOMENTUM, weight_decay=WD)
    adam = torch.optim.Adam(theta, lr=META_LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=0)
    lrs = [lr_at(0, 0), lr_at(1, 1), lr_at(2, 1), lr_at(3, 1)]
    gold.put("lr", torch.tensor(lrs), whole=True)

    def record_classifier(prefix, grads):
        gold.put_list(prefix + ".grad", wnames, grads)
        gold.put_list(prefix + ".param", wnames, w)
        gold.put_list(prefix + ".buffer", wnames, sgd_buffers(sgd, w))
        for i in range(len(BN_CHANNELS)):
            gold.put(f"{prefix}.bn.{i}.running_mean", running[0][i])
            gold.put(f"{prefix}.bn.{i}.running_var", running[1][i])

    def record_meta(prefix):
        m, v = adam_state(adam, theta)
        gold.put_list(prefix + ".meta", tnames, theta)
        gold.put_list(prefix + ".adam_m", tnames, m)
        gold.put_list(prefix + ".adam_v", tnames, v)

    def sgd_step(loss, lr):
        grads = torch.autograd.grad(loss, w)
        for p, g in zip(w, grads):
            p.grad = g
        for grp in sgd.param_groups:
            grp["lr"] = lr
        sgd.step()
        return grads

    def adam_step(grads):
        for p, g in zip(theta, grads):
            p.grad = g
        adam.step()
        for p in theta:
            p.grad = None

    # ---------------------------------------------------------------- warm-up iteration
    # yhat: softmax of this batch's weak-view logits, training mode, detached.
    weak = resnet8(w, x_weak).detach()
    logits = resnet8(w, x_strong, running)
    loss = F.cross_entropy(logits, labels)
    grads = sgd_step(loss, lrs[0])
    gold.put("warm.weak_logits", weak)
    gold.put("warm.loss", loss)
    gold.put("warm.logits", logits)
    record_classifier("warm", grads)
    # The corrector fit: cross-entropy of y* against the given label, -log y*_y.
    yhat = F.softmax(weak, dim=1)
    g = corrector(theta, bins, labels)
    ystar = corrected(g, labels, yhat)
    fit = -torch.log(ystar.gather(1, labels[:, None])).mean()
    cgrads = torch.autograd.grad(fit, theta[:7])
    adam_step(list(cgrads) + [None] * 7)  # the generator gets no gradient
    gold.put("warm.g", g)
    gold.put("warm.ystar", ystar)
    gold.put("warm.fit_loss", fit)
    gold.put_list("warm.fit_grad", tnames[:7], cgrads)
    record_meta("warm")

    # ---------------------------------------------------------------- meta iterations
    checks = {}
    for it, lr in [(1, lrs[1]), (2, lrs[2])]:
        pre = f"meta{it}"
        buf = [b.clone() for b in sgd_buffers(sgd, w)]
        # 1. Weak pass (batch statistics, running statistics untouched).
        z = resnet8(w, x_weak)
        u_v = torch.rand(B, C, generator=gen)
        u_r = torch.rand(B, C, generator=gen)
        # Redraw the rows whose pick a 1e-3 change of the logits could flip.
        for u in (u_v, u_r):
            for _ in range(100):
                bad = gumbel_gap(z, u) < 1e-2
                if not bad.any():
                    break
                u[bad] = torch.rand(int(bad.sum()), C, generator=gen)
        checks[f"{pre}.min_gumbel_gap"] = min(
            float(gumbel_gap(z, u_v).min()), float(gumbel_gap(z, u_r).min())
        )
        gold.put_f64(f"input.noise.{pre}.virtual", u_v)
        gold.put_f64(f"input.noise.{pre}.real", u_r)
        yhat_v = gumbel_pick(z, u_v)
        g = corrector(theta, bins, labels)
        q = generator(theta)
        ystar = corrected(g, labels, yhat_v)
        dl = dynamic_loss(z, ystar, q)
        # 2. Virtual step with the graph kept, over all classifier parameters.
        gw = torch.autograd.grad(dl, w, create_graph=True)
        w_virtual = [
            p - lr * (MOMENTUM * b + gr + WD * p) for p, b, gr in zip(w, buf, gw)
        ]
        # 3. Meta loss: plain cross-entropy of w' on the meta batch; back to theta; Adam.
        meta_loss = F.cross_entropy(resnet8(w_virtual, meta_x), meta_labels)
        mgrads = torch.autograd.grad(meta_loss, theta)
        gold.put(f"{pre}.weak_logits", z)
        gold.put(f"{pre}.yhat", yhat_v)
        gold.put(f"{pre}.g", g)
        gold.put(f"{pre}.q", q)
        gold.put(f"{pre}.ystar", ystar)
        gold.put(f"{pre}.dynamic_loss", dl)
        gold.put_list(f"{pre}.virtual", wnames, w_virtual)
        gold.put(f"{pre}.meta_loss", meta_loss)
        gold.put_list(f"{pre}.meta_grad", tnames, mgrads)
        adam_step(mgrads)
        record_meta(pre)
        checks[f"{pre}.smallest_nonzero_meta_grad"] = min(
            float(gr.abs()[gr != 0].min()) for gr in mgrads if (gr != 0).any()
        )
        # 4. Real step: updated meta net, no graph; a fresh sample from the same weak logits;
        # strong view; the dynamic loss; SGD.
        with torch.no_grad():
            yhat_r = gumbel_pick(z, u_r)
            g_r = corrector(theta, bins, labels)
            q_r = generator(theta)
            ystar_r = corrected(g_r, labels, yhat_r)
        logits = resnet8(w, x_strong, running)
        loss = dynamic_loss(logits, ystar_r, q_r)
        grads = sgd_step(loss, lr)
        gold.put(f"{pre}.real.yhat", yhat_r)
        gold.put(f"{pre}.real.q", q_r)
        gold.put(f"{pre}.real.ystar", ystar_r)
        gold.put(f"{pre}.real.loss", loss)
        gold.put(f"{pre}.real.logits", logits)
        record_classifier(f"{pre}.real", grads)

    # ---------------------------------------------------------------- meta-set pass step
    # Cross-entropy on the given labels plus the margins q (no correction), off schedule.
    with torch.no_grad():
        q = generator(theta)
    logits = resnet8(w, meta_x, running)
    loss = F.cross_entropy(logits + q, meta_labels)
    grads = sgd_step(loss, lrs[3])
    gold.put("pass.q", q)
    gold.put("pass.loss", loss)
    gold.put("pass.logits", logits)
    record_classifier("pass", grads)

    meta = {
        "command": COMMAND,
        "seed": str(args.seed),
        "torch": torch.__version__,
        "param_names": json.dumps(wnames),
        "meta_names": json.dumps(tnames),
        "sample": f"outputs over {SAMPLE_CAP} elements keep elements "
        f"(k * {SAMPLE_STRIDE} + 13) % numel, k = 0..{SAMPLE_CAP}",
        "sample_cap": str(SAMPLE_CAP),
        "sample_stride": str(SAMPLE_STRIDE),
        "checks": json.dumps(checks),
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    save_file(gold.t, args.out, metadata=meta)
    size = os.path.getsize(args.out)
    print(f"wrote {args.out}: {len(gold.t)} tensors, {size / 1024:.0f} KiB")
    print(json.dumps(checks, indent=1))


if __name__ == "__main__":
    main()
