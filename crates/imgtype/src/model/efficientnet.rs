//! torchvision's `efficientnet_b0`, layer for layer: symmetric (k-1)/2 padding,
//! BatchNorm eps 1e-5 / momentum 0.1, SiLU, squeeze-and-excitation with
//! max(1, in/4) channels, row-mode stochastic depth, torchvision's initialisation.
//! Variable paths equal torchvision's state-dict keys (`features.1.0.block.1.fc1.weight`).

use tch::nn::{self, ModuleT};
use tch::Tensor;

/// Channels out of the last feature layer (4 × 320).
pub const FEATURE_DIM: i64 = 1280;

/// torchvision's `_MBConvConfig` rows for B0 (width and depth multipliers 1.0).
struct StageConfig {
    expand_ratio: i64,
    kernel: i64,
    stride: i64,
    input_channels: i64,
    out_channels: i64,
    num_layers: usize,
}

const B0_STAGES: [StageConfig; 7] = [
    StageConfig { expand_ratio: 1, kernel: 3, stride: 1, input_channels: 32, out_channels: 16, num_layers: 1 },
    StageConfig { expand_ratio: 6, kernel: 3, stride: 2, input_channels: 16, out_channels: 24, num_layers: 2 },
    StageConfig { expand_ratio: 6, kernel: 5, stride: 2, input_channels: 24, out_channels: 40, num_layers: 2 },
    StageConfig { expand_ratio: 6, kernel: 3, stride: 2, input_channels: 40, out_channels: 80, num_layers: 3 },
    StageConfig { expand_ratio: 6, kernel: 5, stride: 1, input_channels: 80, out_channels: 112, num_layers: 3 },
    StageConfig { expand_ratio: 6, kernel: 5, stride: 2, input_channels: 112, out_channels: 192, num_layers: 4 },
    StageConfig { expand_ratio: 6, kernel: 3, stride: 1, input_channels: 192, out_channels: 320, num_layers: 1 },
];

/// torchvision: `kaiming_normal_(weight, mode="fan_out")`, bias zero.
const CONV_INIT: nn::Init = nn::Init::Kaiming {
    dist: nn::init::NormalOrUniform::Normal,
    fan: nn::init::FanInOut::FanOut,
    non_linearity: nn::init::NonLinearity::ReLU,
};

/// torchvision's BatchNorm epsilon.
pub const BATCH_NORM_EPS: f64 = 1e-5;

fn batch_norm(path: nn::Path, channels: i64) -> nn::BatchNorm {
    let config = nn::BatchNormConfig { eps: BATCH_NORM_EPS, momentum: 0.1, ..Default::default() };
    nn::batch_norm2d(path, channels, config)
}

fn conv(path: nn::Path, cin: i64, cout: i64, kernel: i64, stride: i64, groups: i64, bias: bool) -> nn::Conv2D {
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
fn conv_in_input_kind(conv: &nn::Conv2D, xs: &Tensor, stride: i64, padding: i64, groups: i64) -> Tensor {
    if xs.kind() == conv.ws.kind() {
        return xs.apply(conv);
    }
    let bias = conv.bs.as_ref().map(|b| b.to_kind(xs.kind()));
    xs.conv2d(&conv.ws.to_kind(xs.kind()), bias.as_ref(), [stride], [padding], [1], groups)
}

/// torchvision's `Conv2dNormActivation`: `.0` conv (no bias), `.1` BatchNorm, optional SiLU.
#[derive(Debug)]
pub struct ConvNormActivation {
    pub(super) conv: nn::Conv2D,
    pub(super) norm: nn::BatchNorm,
    pub(super) activation: bool,
    /// The convolution's geometry (tch keeps its own private).
    pub(super) stride: i64,
    pub(super) padding: i64,
    pub(super) groups: i64,
}

impl ConvNormActivation {
    pub fn new(path: nn::Path, cin: i64, cout: i64, kernel: i64, stride: i64, groups: i64, activation: bool) -> Self {
        Self {
            conv: conv(&path / 0, cin, cout, kernel, stride, groups, false),
            norm: batch_norm(&path / 1, cout),
            activation,
            stride,
            padding: (kernel - 1) / 2,
            groups,
        }
    }

    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let convolved = conv_in_input_kind(&self.conv, xs, self.stride, self.padding, self.groups);
        let mut ys = self.norm.forward_t(&convolved, train);
        if self.activation {
            // In place, as torchvision's SiLU(inplace=True): BatchNorm's backward does not
            // need its output, and a step allocates ~50 activations less.
            let _ = ys.silu_();
        }
        ys
    }
}

/// torchvision's `SqueezeExcitation` with SiLU and a sigmoid gate (`fc1`, `fc2` are 1×1 convs).
#[derive(Debug)]
pub struct SqueezeExcitation {
    pub(super) fc1: nn::Conv2D,
    pub(super) fc2: nn::Conv2D,
}

impl SqueezeExcitation {
    pub fn new(path: nn::Path, channels: i64, squeeze_channels: i64) -> Self {
        Self {
            fc1: conv(&path / "fc1", channels, squeeze_channels, 1, 1, 1, true),
            fc2: conv(&path / "fc2", squeeze_channels, channels, 1, 1, 1, true),
        }
    }

    pub fn forward(&self, xs: &Tensor) -> Tensor {
        let squeezed = conv_in_input_kind(&self.fc1, &super::fused::global_average(xs), 1, 0, 1).silu();
        let scale = conv_in_input_kind(&self.fc2, &squeezed, 1, 0, 1).sigmoid();
        xs * scale
    }
}

/// torchvision's `MBConv`: optional 1×1 expansion, depthwise conv, SE, 1×1 projection;
/// residual with row-mode stochastic depth when the shape is kept.
#[derive(Debug)]
pub struct MbConv {
    pub(super) expand: Option<ConvNormActivation>,
    pub(super) depthwise: ConvNormActivation,
    pub(super) squeeze_excitation: SqueezeExcitation,
    pub(super) project: ConvNormActivation,
    pub(super) use_residual: bool,
    stochastic_depth_prob: f64,
}

impl MbConv {
    fn new(path: nn::Path, cin: i64, cout: i64, expand_ratio: i64, kernel: i64, stride: i64, sd_prob: f64) -> Self {
        let block = &path / "block";
        let expanded = cin * expand_ratio;
        let mut index = 0;
        let expand = (expanded != cin).then(|| {
            index += 1;
            ConvNormActivation::new(&block / 0, cin, expanded, 1, 1, 1, true)
        });
        let depthwise = ConvNormActivation::new(&block / index, expanded, expanded, kernel, stride, expanded, true);
        let squeeze_channels = (cin / 4).max(1);
        let squeeze_excitation = SqueezeExcitation::new(&block / (index + 1), expanded, squeeze_channels);
        let project = ConvNormActivation::new(&block / (index + 2), expanded, cout, 1, 1, 1, false);
        Self {
            expand,
            depthwise,
            squeeze_excitation,
            project,
            use_residual: stride == 1 && cin == cout,
            stochastic_depth_prob: sd_prob,
        }
    }

    fn forward_t(&self, xs: &Tensor, train: bool, stochastic_depth: bool) -> Tensor {
        let mut ys = match &self.expand {
            Some(expand) => expand.forward_t(xs, train),
            None => xs.shallow_clone(),
        };
        ys = self.depthwise.forward_t(&ys, train);
        ys = self.squeeze_excitation.forward(&ys);
        ys = self.project.forward_t(&ys, train);
        if !self.use_residual {
            return ys;
        }
        if train && stochastic_depth && self.stochastic_depth_prob > 0.0 {
            ys = row_stochastic_depth(&ys, self.stochastic_depth_prob);
        }
        ys += xs; // in place, as torchvision's `result += input`
        ys
    }
}

/// torchvision.ops.stochastic_depth(mode="row") in training: drop whole samples, rescale the rest.
fn row_stochastic_depth(xs: &Tensor, p: f64) -> Tensor {
    let survival = 1.0 - p;
    let batch = xs.size()[0];
    let noise = Tensor::empty([batch, 1, 1, 1], (xs.kind(), xs.device())).bernoulli_float_(survival);
    let noise = if survival > 0.0 { noise / survival } else { noise };
    xs * noise
}

/// The `features` part of torchvision's EfficientNet-B0 plus global average pooling.
#[derive(Debug)]
pub struct EfficientNetB0 {
    pub(super) stem: ConvNormActivation,
    pub(super) blocks: Vec<MbConv>,
    pub(super) head_conv: ConvNormActivation,
}

impl EfficientNetB0 {
    /// `path` is the module holding `features` (for the classifier model: `backbone`).
    pub fn new(path: nn::Path, stochastic_depth_prob: f64) -> Self {
        let features = &path / "features";
        let stem = ConvNormActivation::new(&features / 0, 3, 32, 3, 2, 1, true);
        let total_blocks: usize = B0_STAGES.iter().map(|s| s.num_layers).sum();
        let mut blocks = Vec::with_capacity(total_blocks);
        for (stage_index, stage) in B0_STAGES.iter().enumerate() {
            let stage_path = &features / (stage_index + 1);
            for layer in 0..stage.num_layers {
                let (cin, stride) =
                    if layer == 0 { (stage.input_channels, stage.stride) } else { (stage.out_channels, 1) };
                let sd_prob = stochastic_depth_prob * blocks.len() as f64 / total_blocks as f64;
                blocks.push(MbConv::new(
                    &stage_path / layer,
                    cin,
                    stage.out_channels,
                    stage.expand_ratio,
                    stage.kernel,
                    stride,
                    sd_prob,
                ));
            }
        }
        let last = B0_STAGES.last().expect("stages").out_channels;
        let head_conv = ConvNormActivation::new(&features / (B0_STAGES.len() + 1), last, FEATURE_DIM, 1, 1, 1, true);
        Self { stem, blocks, head_conv }
    }

    /// Pooled features `[N, 1280]`. `train` selects BatchNorm batch statistics and stochastic depth.
    pub fn forward_t(&self, xs: &Tensor, train: bool, stochastic_depth: bool) -> Tensor {
        let mut ys = self.stem.forward_t(xs, train);
        for block in &self.blocks {
            ys = block.forward_t(&ys, train, stochastic_depth);
        }
        super::fused::global_average(&self.head_conv.forward_t(&ys, train)).flatten(1, -1)
    }
}
