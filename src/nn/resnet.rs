//! CIFAR-style ResNets (depth 6n+2: ResNet-8/14/20/32) with option-A shortcuts, and the tiny
//! conv-BN-ReLU-pool-linear network the tests use.

use super::{Init, Layer, Model};
use crate::tensor::conv::ConvGeom;

/// A Kaiming-initialised k x k convolution with "same" padding, added to `m`.
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

fn linear(m: &mut Model, name: &str, cin: usize, cout: usize, std: f32) -> Layer {
    let w = m.add_param(format!("{name}.weight"), vec![cout, cin], Init::Normal(std));
    let b = m.add_param(format!("{name}.bias"), vec![cout], Init::Const(0.0));
    Layer::Linear { w, b }
}

fn empty(name: &str, input: [usize; 3], classes: usize) -> Model {
    Model {
        name: name.into(),
        params: Vec::new(),
        bn_channels: Vec::new(),
        program: Vec::new(),
        input,
        classes,
    }
}

/// ResNet-(6n+2) for CIFAR as in the spec: 3x3 conv 16, BN, ReLU; three stages of n basic
/// blocks at 16/32/64 channels with strides 1/2/2 and option-A shortcuts; global average
/// pool; Linear(64, classes) initialised N(0, 0.01). `depth` must be 6n+2.
pub fn resnet_cifar(depth: usize, input: [usize; 3], classes: usize) -> Option<Model> {
    if depth < 8 || !(depth - 2).is_multiple_of(6) {
        return None;
    }
    let n = (depth - 2) / 6;
    let mut m = empty(&format!("resnet{depth}"), input, classes);
    let stem = conv(&mut m, "conv1", input[0], 16, 3, 1);
    let bn = m.add_bn("bn1", 16, true);
    m.program.extend([stem, bn]);
    let mut cin = 16;
    for (s, (cout, stride)) in [(16, 1), (32, 2), (64, 2)].into_iter().enumerate() {
        for b in 0..n {
            let stride = if b == 0 { stride } else { 1 };
            let p = format!("layer{}.{b}", s + 1);
            let c1 = conv(&mut m, &format!("{p}.conv1"), cin, cout, 3, stride);
            let b1 = m.add_bn(&format!("{p}.bn1"), cout, true);
            let c2 = conv(&mut m, &format!("{p}.conv2"), cout, cout, 3, 1);
            let b2 = m.add_bn(&format!("{p}.bn2"), cout, false);
            let shortcut = if stride != 1 || cin != cout {
                vec![Layer::ShortcutA { cout }]
            } else {
                vec![]
            };
            m.program.push(Layer::Residual {
                body: vec![c1, b1, c2, b2],
                shortcut,
            });
            cin = cout;
        }
    }
    m.program.push(Layer::GlobalAvgPool);
    let fc = linear(&mut m, "fc", 64, classes, 0.01);
    m.program.push(fc);
    Some(m)
}

/// conv(3x3, `width`) - BN - ReLU - global average pool - linear: the smallest model with
/// every layer kind the meta gradient must pass through.
pub fn tiny_cnn(input: [usize; 3], width: usize, classes: usize) -> Model {
    let mut m = empty("tiny", input, classes);
    let c = conv(&mut m, "conv", input[0], width, 3, 1);
    let b = m.add_bn("bn", width, true);
    m.program.extend([c, b, Layer::GlobalAvgPool]);
    let fc = linear(&mut m, "fc", width, classes, 0.1);
    m.program.push(fc);
    m
}
