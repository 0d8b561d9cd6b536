//! torchvision's `efficientnet_b0`, layer for layer: symmetric (k-1)/2 padding,
//! BatchNorm eps 1e-5 / momentum 0.1, SiLU, squeeze-and-excitation with
//! max(1, in/4) channels, row-mode stochastic depth, torchvision's initialisation.
//! Variable paths equal torchvision's state-dict keys (`features.1.0.block.1.fc1.weight`).

use tch::nn;
use tch::Tensor;

use super::fused::FusedBlock;
use super::layers::{Activation, ConvNormActivation, ConvShape, Gate, SqueezeExcitation, TORCH_NORM};

/// Channels out of the last feature layer (4 × 320).
const FEATURE_DIM: i64 = 1280;

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

/// torchvision's `MBConv`: optional 1×1 expansion, depthwise conv, SE, 1×1 projection;
/// residual with row-mode stochastic depth when the shape is kept.
#[derive(Debug)]
pub struct MbConv {
    expand: Option<ConvNormActivation>,
    depthwise: ConvNormActivation,
    squeeze_excitation: SqueezeExcitation,
    project: ConvNormActivation,
    use_residual: bool,
    stochastic_depth_prob: f64,
}

impl MbConv {
    fn new(path: nn::Path, cin: i64, cout: i64, expand_ratio: i64, kernel: i64, stride: i64, sd_prob: f64) -> Self {
        let block = &path / "block";
        let expanded = cin * expand_ratio;
        let mut index = 0;
        let expand = (expanded != cin).then(|| {
            index += 1;
            ConvNormActivation::new(&block / 0, ConvShape::pointwise(cin, expanded), TORCH_NORM, Activation::Silu)
        });
        let depthwise = ConvNormActivation::new(
            &block / index,
            ConvShape::depthwise(expanded, kernel, stride),
            TORCH_NORM,
            Activation::Silu,
        );
        let squeeze_channels = (cin / 4).max(1);
        let squeeze_excitation =
            SqueezeExcitation::new(&block / (index + 1), expanded, squeeze_channels, Activation::Silu, Gate::Sigmoid);
        let project = ConvNormActivation::new(
            &block / (index + 2),
            ConvShape::pointwise(expanded, cout),
            TORCH_NORM,
            Activation::Identity,
        );
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
    stem: ConvNormActivation,
    blocks: Vec<MbConv>,
    head_conv: ConvNormActivation,
}

impl EfficientNetB0 {
    /// `path` is the module holding `features` (for the classifier model: `backbone`).
    pub fn new(path: nn::Path, stochastic_depth_prob: f64) -> Self {
        let features = &path / "features";
        let stem_shape = ConvShape { cin: 3, cout: 32, kernel: 3, stride: 2, groups: 1 };
        let stem = ConvNormActivation::new(&features / 0, stem_shape, TORCH_NORM, Activation::Silu);
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
        let head_conv = ConvNormActivation::new(
            &features / (B0_STAGES.len() + 1),
            ConvShape::pointwise(last, FEATURE_DIM),
            TORCH_NORM,
            Activation::Silu,
        );
        Self { stem, blocks, head_conv }
    }

    pub fn fused(&self, kind: tch::Kind) -> Vec<FusedBlock> {
        let mut fused = vec![FusedBlock::new(false).conv(&self.stem, kind)];
        for block in &self.blocks {
            let mut layers = FusedBlock::new(block.use_residual);
            if let Some(expand) = &block.expand {
                layers = layers.conv(expand, kind);
            }
            fused.push(
                layers
                    .conv(&block.depthwise, kind)
                    .squeeze_excitation(&block.squeeze_excitation, kind)
                    .conv(&block.project, kind),
            );
        }
        fused.push(FusedBlock::new(false).conv(&self.head_conv, kind));
        fused
    }

    /// Pooled features `[N, 1280]`. `train` selects BatchNorm batch statistics and stochastic depth.
    pub fn forward_t(&self, xs: &Tensor, train: bool, stochastic_depth: bool) -> Tensor {
        let mut ys = self.stem.forward_t(xs, train);
        for block in &self.blocks {
            ys = block.forward_t(&ys, train, stochastic_depth);
        }
        super::layers::global_average(&self.head_conv.forward_t(&ys, train)).flatten(1, -1)
    }
}
