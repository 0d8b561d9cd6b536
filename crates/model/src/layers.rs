//! The layer kinds torchvision's EfficientNet and MobileNets share: `Conv2dNormActivation`
//! and `SqueezeExcitation`, with torchvision's initialisation, and the activations they use.

use tch::nn::{self, ModuleT};
use tch::Tensor;

/// torchvision: `kaiming_normal_(weight, mode="fan_out")`, bias zero.
const CONV_INIT: nn::Init = nn::Init::Kaiming {
    dist: nn::init::NormalOrUniform::Normal,
    fan: nn::init::FanInOut::FanOut,
    non_linearity: nn::init::NonLinearity::ReLU,
};

/// A BatchNorm's epsilon and running-statistics momentum (torchvision: 1e-5 / 0.1 by
/// default; MobileNetV3 1e-3 / 0.01).
#[derive(Debug, Clone, Copy)]
pub struct NormSpec {
    pub eps: f64,
    pub momentum: f64,
}

pub const TORCH_NORM: NormSpec = NormSpec { eps: 1e-5, momentum: 0.1 };

fn batch_norm(path: nn::Path, channels: i64, spec: NormSpec) -> nn::BatchNorm {
    let config = nn::BatchNormConfig { eps: spec.eps, momentum: spec.momentum, ..Default::default() };
    nn::batch_norm2d(path, channels, config)
}

pub(super) fn conv(
    path: nn::Path,
    cin: i64,
    cout: i64,
    kernel: i64,
    stride: i64,
    groups: i64,
    bias: bool,
) -> nn::Conv2D {
    let config = nn::ConvConfig {
        stride,
        padding: (kernel - 1) / 2,
        groups,
        bias,
        ws_init: CONV_INIT,
        bs_init: nn::Init::Const(0.),
        ..Default::default()
    };
    nn::conv2d(path, cin, cout, kernel, config)
}

/// `conv` applied to `xs` in `xs`'s number format: with bf16 activations (reduced-precision
/// training) the fp32 weights are cast on the way in, and their gradients flow back in fp32,
/// as PyTorch's autocast does. BatchNorm takes bf16 input with its fp32 parameters as it is.
pub(super) fn conv_in_input_kind(conv: &nn::Conv2D, xs: &Tensor, stride: i64, padding: i64, groups: i64) -> Tensor {
    if xs.kind() == conv.ws.kind() {
        return xs.apply(conv);
    }
    let bias = conv.bs.as_ref().map(|b| b.to_kind(xs.kind()));
    xs.conv2d(&conv.ws.to_kind(xs.kind()), bias.as_ref(), [stride], [padding], [1], groups)
}

/// The activations of torchvision's backbones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Identity,
    Silu,
    Relu,
    Relu6,
    Hardswish,
}

impl Activation {
    /// In place, as torchvision's `inplace=True` layers: a step allocates fewer activations.
    pub fn apply_(self, xs: &mut Tensor) {
        let _ = match self {
            Activation::Identity => return,
            Activation::Silu => xs.silu_(),
            Activation::Relu => xs.relu_(),
            Activation::Relu6 => xs.relu6_(),
            Activation::Hardswish => xs.hardswish_(),
        };
    }

    pub fn apply(self, xs: &Tensor) -> Tensor {
        match self {
            Activation::Identity => xs.shallow_clone(),
            Activation::Silu => xs.silu(),
            Activation::Relu => xs.relu(),
            Activation::Relu6 => xs.relu6(),
            Activation::Hardswish => xs.hardswish(),
        }
    }
}

/// torchvision's `Conv2dNormActivation`: a convolution without bias, BatchNorm, an activation.
/// Its convolution is at `.0` and its BatchNorm at `.1`, except in MobileNetV2's projection,
/// which is a bare convolution and BatchNorm at sibling indices ([`Self::at`]).
#[derive(Debug)]
pub struct ConvNormActivation {
    pub(super) conv: nn::Conv2D,
    pub(super) norm: nn::BatchNorm,
    pub(super) norm_eps: f64,
    pub(super) activation: Activation,
    /// The convolution's geometry (tch keeps its own private).
    pub(super) stride: i64,
    pub(super) padding: i64,
    pub(super) groups: i64,
}

/// A convolution's shape: channels in and out, kernel, stride, groups.
#[derive(Debug, Clone, Copy)]
pub struct ConvShape {
    pub cin: i64,
    pub cout: i64,
    pub kernel: i64,
    pub stride: i64,
    pub groups: i64,
}

impl ConvShape {
    /// A 1×1 convolution.
    pub fn pointwise(cin: i64, cout: i64) -> Self {
        Self { cin, cout, kernel: 1, stride: 1, groups: 1 }
    }

    /// A depthwise convolution over `channels`.
    pub fn depthwise(channels: i64, kernel: i64, stride: i64) -> Self {
        Self { cin: channels, cout: channels, kernel, stride, groups: channels }
    }
}

impl ConvNormActivation {
    pub fn new(path: nn::Path, shape: ConvShape, norm: NormSpec, activation: Activation) -> Self {
        Self::at(&path / 0, &path / 1, shape, norm, activation)
    }

    /// With the convolution and the BatchNorm at the paths given.
    pub fn at(
        conv_path: nn::Path,
        norm_path: nn::Path,
        shape: ConvShape,
        norm: NormSpec,
        activation: Activation,
    ) -> Self {
        Self {
            conv: conv(conv_path, shape.cin, shape.cout, shape.kernel, shape.stride, shape.groups, false),
            norm: batch_norm(norm_path, shape.cout, norm),
            norm_eps: norm.eps,
            activation,
            stride: shape.stride,
            padding: (shape.kernel - 1) / 2,
            groups: shape.groups,
        }
    }

    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let convolved = conv_in_input_kind(&self.conv, xs, self.stride, self.padding, self.groups);
        let mut ys = self.norm.forward_t(&convolved, train);
        self.activation.apply_(&mut ys);
        ys
    }
}

/// The gate of a squeeze-excitation layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Sigmoid,
    Hardsigmoid,
}

impl Gate {
    pub fn apply(self, xs: &Tensor) -> Tensor {
        match self {
            Gate::Sigmoid => xs.sigmoid(),
            Gate::Hardsigmoid => xs.hardsigmoid(),
        }
    }
}

/// torchvision's `SqueezeExcitation`: global average, `fc1` (1×1 conv), activation, `fc2`,
/// gate, and the input scaled by it. EfficientNet: SiLU and sigmoid; MobileNetV3: ReLU and
/// hard sigmoid.
#[derive(Debug)]
pub struct SqueezeExcitation {
    pub(super) fc1: nn::Conv2D,
    pub(super) fc2: nn::Conv2D,
    pub(super) activation: Activation,
    pub(super) gate: Gate,
}

impl SqueezeExcitation {
    pub fn new(path: nn::Path, channels: i64, squeeze_channels: i64, activation: Activation, gate: Gate) -> Self {
        Self {
            fc1: conv(&path / "fc1", channels, squeeze_channels, 1, 1, 1, true),
            fc2: conv(&path / "fc2", squeeze_channels, channels, 1, 1, 1, true),
            activation,
            gate,
        }
    }

    pub fn forward(&self, xs: &Tensor) -> Tensor {
        let squeezed = conv_in_input_kind(&self.fc1, &global_average(xs), 1, 0, 1);
        let scale = conv_in_input_kind(&self.fc2, &self.activation.apply(&squeezed), 1, 0, 1);
        xs * self.gate.apply(&scale)
    }
}

/// torchvision's `_make_divisible(v, 8)`: channels rounded to a multiple of 8, never more
/// than 10% below `v`.
pub fn make_divisible(v: f64) -> i64 {
    let divisor = 8;
    let rounded = ((v + divisor as f64 / 2.0) as i64 / divisor * divisor).max(divisor);
    if (rounded as f64) < 0.9 * v {
        rounded + divisor
    } else {
        rounded
    }
}

/// The mean over height and width, `[N, C, 1, 1]`: `adaptive_avg_pool2d(1)`, as an average
/// pool over the whole image, which libtorch runs several times faster on channels-last
/// tensors (in bf16 some 30×).
pub fn global_average(xs: &Tensor) -> Tensor {
    let size = xs.size();
    let (height, width) = (size[2], size[3]);
    xs.avg_pool2d([height, width], [height, width], [0, 0], false, true, None)
}
