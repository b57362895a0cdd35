//! Reverse-mode autodiff whose backward pass is itself differentiable.
//!
//! A [`Var`] is a tensor plus, when it was computed from tensors that require gradients, the
//! op that made it and that op's input `Var`s. The ops live in `ops/`, one file per family,
//! each file holding its family's forwards and, below them, their backward rules. Every
//! backward rule is written with the same differentiable `Var` ops, so with `create_graph` the
//! backward pass records itself and can be differentiated again; without it the rules run
//! under `no_grad` and record nothing. Only nodes on a path to a requested input are
//! differentiated (pruning).

mod ops;

use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;

pub use ops::*;

use crate::error::{Result, shape_err};
use crate::tensor::{DType, Tensor};

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
    static NEXT_ID: Cell<u64> = const { Cell::new(1) };
}

/// True when ops record the graph (outside `no_grad`).
pub fn grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// Runs `f` with graph recording switched to `enabled`, restoring the previous state after.
pub fn with_grad_mode<R>(enabled: bool, f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            GRAD_ENABLED.with(|g| g.set(self.0));
        }
    }
    let _restore = Restore(GRAD_ENABLED.with(|g| g.replace(enabled)));
    f()
}

/// Runs `f` without recording any graph.
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    with_grad_mode(false, f)
}

fn next_id() -> u64 {
    NEXT_ID.with(|n| {
        let id = n.get();
        n.set(id + 1);
        id
    })
}

struct Node {
    id: u64,
    value: Tensor,
    /// What made the node, less its inputs (`Op::Leaf` when nothing was recorded).
    op: Op,
    /// The op's `Var` inputs, in the op's argument order (empty for leaves).
    inputs: Vec<Var>,
    requires_grad: bool,
}

/// A tensor in the autodiff graph. Cloning shares the node.
#[derive(Clone)]
pub struct Var(Rc<Node>);

impl std::fmt::Debug for Var {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Var#{}({:?}, {}, grad={})",
            self.0.id,
            self.0.value.shape(),
            self.0.op.name(),
            self.0.requires_grad
        )
    }
}

impl Var {
    /// A leaf: a parameter (`requires_grad`) or an input.
    pub fn leaf(value: Tensor, requires_grad: bool) -> Var {
        Var(Rc::new(Node {
            id: next_id(),
            value,
            op: Op::Leaf,
            inputs: Vec::new(),
            requires_grad,
        }))
    }

    /// A leaf that never gets a gradient.
    pub fn constant(value: Tensor) -> Var {
        Var::leaf(value, false)
    }

    /// The result of `op` on `inputs`; recorded only when grad mode is on and an input
    /// requires grad (otherwise a constant that keeps neither the op nor its inputs).
    fn from_op(value: Tensor, op: Op, inputs: &[&Var]) -> Var {
        let record = grad_enabled() && inputs.iter().any(|p| p.requires_grad());
        if !record {
            return Var::constant(value);
        }
        Var(Rc::new(Node {
            id: next_id(),
            value,
            op,
            inputs: inputs.iter().map(|&p| p.clone()).collect(),
            requires_grad: true,
        }))
    }

    /// The tensor.
    pub fn value(&self) -> &Tensor {
        &self.0.value
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        self.0.value.shape()
    }

    /// Whether gradients flow to this variable.
    pub fn requires_grad(&self) -> bool {
        self.0.requires_grad
    }

    /// The same tensor, cut from the graph.
    pub fn detach(&self) -> Var {
        Var::constant(self.0.value.clone())
    }

    /// A unique id of the node.
    pub fn id(&self) -> u64 {
        self.0.id
    }

    /// Name of the op that produced this variable ("leaf" for leaves).
    pub fn op_name(&self) -> &'static str {
        self.0.op.name()
    }
}

/// Nodes reachable from `outputs`, parents before children.
fn topo_order(outputs: &[&Var]) -> Vec<Var> {
    let mut order = Vec::new();
    let mut seen = std::collections::HashSet::new();
    // Iterative post-order DFS: deep networks would overflow a recursive one.
    let mut stack: Vec<(Var, bool)> = outputs.iter().map(|v| ((*v).clone(), false)).collect();
    while let Some((v, expanded)) = stack.pop() {
        if expanded {
            order.push(v);
            continue;
        }
        if !v.requires_grad() || !seen.insert(v.id()) {
            continue;
        }
        stack.push((v.clone(), true));
        for p in &v.0.inputs {
            if p.requires_grad() && !seen.contains(&p.id()) {
                stack.push((p.clone(), false));
            }
        }
    }
    order
}

/// Gradients of `sum_i <grad_outputs[i], outputs[i]>` with respect to each of `inputs`
/// (`None` where an input does not influence the outputs). `grad_outputs` defaults to ones.
/// With `create_graph` the returned gradients are themselves differentiable.
pub fn grad(
    outputs: &[&Var],
    inputs: &[&Var],
    grad_outputs: Option<&[Var]>,
    create_graph: bool,
) -> Result<Vec<Option<Var>>> {
    if let Some(g) = grad_outputs
        && g.len() != outputs.len()
    {
        return Err(shape_err(
            "grad",
            format!("{} grad_outputs for {} outputs", g.len(), outputs.len()),
        ));
    }
    let order = topo_order(outputs);
    // Pruning: a node needs a gradient only if it is an input or leads to one.
    let wanted: std::collections::HashSet<u64> = inputs.iter().map(|v| v.id()).collect();
    let mut reaches: std::collections::HashSet<u64> = std::collections::HashSet::new();
    for v in &order {
        if wanted.contains(&v.id()) || v.0.inputs.iter().any(|p| reaches.contains(&p.id())) {
            reaches.insert(v.id());
        }
    }
    with_grad_mode(create_graph, || {
        let mut grads: HashMap<u64, Var> = HashMap::new();
        for (i, out) in outputs.iter().enumerate() {
            if !reaches.contains(&out.id()) {
                continue;
            }
            let g = match grad_outputs {
                Some(gs) => {
                    if gs[i].shape() != out.shape() {
                        return Err(shape_err(
                            "grad",
                            format!(
                                "grad_output {:?} for output {:?}",
                                gs[i].shape(),
                                out.shape()
                            ),
                        ));
                    }
                    gs[i].clone()
                }
                None => Var::constant(Tensor::full(out.value().gpu(), out.shape(), 1.0)),
            };
            accumulate(&mut grads, out.id(), g)?;
        }
        let mut results: HashMap<u64, Var> = HashMap::new();
        for v in order.iter().rev() {
            let Some(g) = grads.remove(&v.id()) else {
                continue;
            };
            if wanted.contains(&v.id()) {
                results.insert(v.id(), g.clone());
            }
            let need = |p: &Var| reaches.contains(&p.id());
            for (parent, pg) in ops::backward(v, &g, &need)? {
                accumulate(&mut grads, parent.id(), pg)?;
            }
        }
        Ok(inputs.iter().map(|v| results.remove(&v.id())).collect())
    })
}

fn accumulate(grads: &mut HashMap<u64, Var>, id: u64, g: Var) -> Result<()> {
    let sum = match grads.remove(&id) {
        Some(prev) => add(&prev, &g)?,
        None => g,
    };
    grads.insert(id, sum);
    Ok(())
}

/// Gradients of a scalar `loss` with respect to `params` (no graph kept), as tensors.
pub fn backward(loss: &Var, params: &[&Var]) -> Result<Vec<Option<Tensor>>> {
    if loss.value().numel() != 1 {
        return Err(shape_err(
            "backward",
            format!("loss must be a scalar, got {:?}", loss.shape()),
        ));
    }
    let g = grad(&[loss], params, None, false)?;
    Ok(g.into_iter()
        .map(|v| v.map(|v| v.value().clone()))
        .collect())
}

/// A zero tensor shaped like `v` (for tests and optimisers).
pub fn zeros_like(v: &Var) -> Tensor {
    Tensor::zeros(v.value().gpu(), v.shape(), DType::F32)
}
