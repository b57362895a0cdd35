//! CIFAR-style ResNets (depth 6n+2: ResNet-8/14/20/32) with option-A shortcuts.

use super::Model;
use super::blocks::{Shortcut, add_stages, basic_block, conv_bn, empty, head};

/// ResNet-(6n+2) for CIFAR as in the spec: 3x3 conv 16, BN, ReLU; three stages of n basic
/// blocks at 16/32/64 channels with strides 1/2/2 and option-A shortcuts; global average
/// pool; Linear(64, classes) initialised N(0, 0.01). `depth` must be 6n+2.
pub fn resnet_cifar(depth: usize, input: [usize; 3], classes: usize) -> Option<Model> {
    if depth < 8 || !(depth - 2).is_multiple_of(6) {
        return None;
    }
    let n = (depth - 2) / 6;
    let mut m = empty(&format!("resnet{depth}"), input, classes);
    let stem = conv_bn(&mut m, ("conv1", "bn1"), input[0], 16, 3, 1, true);
    m.program.extend(stem);
    let cout = add_stages(
        &mut m,
        16,
        &[(n, 16, 1), (n, 32, 2), (n, 64, 2)],
        |m, p, cin, cout, stride| basic_block(m, p, cin, cout, stride, Shortcut::Subsample),
    );
    head(&mut m, cout, 0.01);
    Some(m)
}
