//! Building blocks the architectures share: convolutions, the conv-BN(-ReLU) unit, the basic
//! and pre-activation residual blocks, stages of blocks and the classifier head. Each adds
//! its parameters to the model in the order of its doc comment, which is the order a
//! checkpoint lists them in.

use super::{Init, Layer, Model};
use crate::tensor::conv::ConvGeom;

/// A model with no parameters or layers yet.
pub(super) fn empty(name: &str, input: [usize; 3], classes: usize) -> Model {
    Model {
        name: name.into(),
        params: Vec::new(),
        bn_channels: Vec::new(),
        program: Vec::new(),
        input,
        classes,
    }
}

/// A Kaiming-initialised k x k convolution with "same" padding (parameter `{name}.weight`).
pub(super) fn conv(
    m: &mut Model,
    name: &str,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
) -> Layer {
    let w = m.add_param(
        format!("{name}.weight"),
        vec![cout, cin, k, k],
        Init::KaimingNormal,
    );
    Layer::Conv {
        w,
        geom: ConvGeom { stride, pad: k / 2 },
    }
}

/// [`conv`] named `names.0`, then a batch norm named `names.1` over its `cout` channels with
/// the ReLU fused in when `relu`.
pub(super) fn conv_bn(
    m: &mut Model,
    names: (&str, &str),
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    relu: bool,
) -> [Layer; 2] {
    let c = conv(m, names.0, cin, cout, k, stride);
    let b = m.add_bn(names.1, cout, relu);
    [c, b]
}

/// The shortcut of a residual block whose stride or width changes (otherwise the identity).
#[derive(Debug, Clone, Copy)]
pub(super) enum Shortcut {
    /// Option A: strided subsample, new channels zero (no parameters).
    Subsample,
    /// A 1x1 conv and batch norm named `{p}.downsample.0` and `{p}.downsample.1`.
    Projection,
}

/// The basic block relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)) with 3x3 convs, conv1
/// of stride `stride`: parameters `{p}.conv1`, `{p}.bn1`, `{p}.conv2`, `{p}.bn2`, then the
/// shortcut's.
pub(super) fn basic_block(
    m: &mut Model,
    p: &str,
    cin: usize,
    cout: usize,
    stride: usize,
    shortcut: Shortcut,
) -> Layer {
    let name = |part: &str| format!("{p}.{part}");
    let [c1, b1] = conv_bn(
        m,
        (&name("conv1"), &name("bn1")),
        cin,
        cout,
        3,
        stride,
        true,
    );
    let [c2, b2] = conv_bn(m, (&name("conv2"), &name("bn2")), cout, cout, 3, 1, false);
    let shortcut = match shortcut {
        _ if stride == 1 && cin == cout => vec![],
        Shortcut::Subsample => vec![Layer::ShortcutA { cout }],
        Shortcut::Projection => {
            let (c, b) = (name("downsample.0"), name("downsample.1"));
            conv_bn(m, (&c, &b), cin, cout, 1, stride, false).into()
        }
    };
    Layer::Residual {
        body: vec![c1, b1, c2, b2],
        shortcut,
    }
}

/// The pre-activation block conv2(relu(bn2(conv1(relu(bn1(x)))))) + s, with s the 1x1
/// projection `{p}.shortcut` of relu(bn1(x)) when the stride or width changes, else x:
/// parameters `{p}.bn1`, `{p}.conv1`, `{p}.bn2`, `{p}.conv2`, then `{p}.shortcut`.
pub(super) fn preact_block(
    m: &mut Model,
    p: &str,
    cin: usize,
    cout: usize,
    stride: usize,
) -> Layer {
    let name = |part: &str| format!("{p}.{part}");
    let bn1 = m.add_bn(&name("bn1"), cin, true);
    let c1 = conv(m, &name("conv1"), cin, cout, 3, stride);
    let bn2 = m.add_bn(&name("bn2"), cout, true);
    let c2 = conv(m, &name("conv2"), cout, cout, 3, 1);
    let shortcut = if stride != 1 || cin != cout {
        vec![conv(m, &name("shortcut"), cin, cout, 1, stride)]
    } else {
        vec![]
    };
    Layer::PreAct {
        body: vec![bn1, c1, bn2, c2],
        shortcut,
    }
}

/// Appends stages of residual blocks to the program, starting from `cin` channels. Each stage
/// is (blocks, width, stride): its first block has that stride, the others 1, and block b of
/// stage s is named `layer{s+1}.{b}`. `block(m, name, cin, cout, stride)` builds one block.
/// Returns the last stage's width.
pub(super) fn add_stages(
    m: &mut Model,
    mut cin: usize,
    stages: &[(usize, usize, usize)],
    mut block: impl FnMut(&mut Model, &str, usize, usize, usize) -> Layer,
) -> usize {
    for (s, &(n, cout, first_stride)) in stages.iter().enumerate() {
        for b in 0..n {
            let stride = if b == 0 { first_stride } else { 1 };
            let layer = block(m, &format!("layer{}.{b}", s + 1), cin, cout, stride);
            m.program.push(layer);
            cin = cout;
        }
    }
    cin
}

/// Global average pooling, then the linear layer `fc` from `cin` features to the classes
/// (weight N(0, std), bias 0).
pub(super) fn head(m: &mut Model, cin: usize, std: f32) {
    m.program.push(Layer::GlobalAvgPool);
    let w = m.add_param("fc.weight".into(), vec![m.classes, cin], Init::Normal(std));
    let b = m.add_param("fc.bias".into(), vec![m.classes], Init::Const(0.0));
    m.program.push(Layer::Linear { w, b });
}
