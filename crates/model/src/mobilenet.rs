//! torchvision's `mobilenet_v2`, `mobilenet_v3_small` and `mobilenet_v3_large` feature
//! extractors, layer for layer (width multiplier 1.0, no dilation), with variable paths equal
//! to torchvision's state-dict keys (`features.3.conv.1.0.weight`, `features.4.block.2.fc1.bias`).

use tch::nn;
use tch::Tensor;

use super::fused::FusedBlock;
use super::layers::{
    global_average, make_divisible, Activation, ConvNormActivation, ConvShape, Gate, NormSpec, SqueezeExcitation,
    TORCH_NORM,
};

/// MobileNetV3's BatchNorm (torchvision: `partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)`).
const V3_NORM: NormSpec = NormSpec { eps: 1e-3, momentum: 0.01 };

/// MobileNetV2's inverted residual (`features.N.conv`): optional 1×1 expansion, 3×3
/// depthwise, 1×1 linear projection (a bare convolution and BatchNorm), ReLU6.
#[derive(Debug)]
pub struct InvertedResidualV2 {
    expand: Option<ConvNormActivation>,
    depthwise: ConvNormActivation,
    project: ConvNormActivation,
    use_residual: bool,
}

impl InvertedResidualV2 {
    fn new(path: nn::Path, cin: i64, cout: i64, stride: i64, expand_ratio: i64) -> Self {
        let conv = &path / "conv";
        let hidden = cin * expand_ratio;
        let mut index = 0;
        let expand = (expand_ratio != 1).then(|| {
            index += 1;
            ConvNormActivation::new(&conv / 0, ConvShape::pointwise(cin, hidden), TORCH_NORM, Activation::Relu6)
        });
        let depthwise = ConvNormActivation::new(
            &conv / index,
            ConvShape::depthwise(hidden, 3, stride),
            TORCH_NORM,
            Activation::Relu6,
        );
        let project = ConvNormActivation::at(
            &conv / (index + 1),
            &conv / (index + 2),
            ConvShape::pointwise(hidden, cout),
            TORCH_NORM,
            Activation::Identity,
        );
        Self { expand, depthwise, project, use_residual: stride == 1 && cin == cout }
    }
}

impl MobileNetBlock for InvertedResidualV2 {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let expanded = match &self.expand {
            Some(expand) => expand.forward_t(xs, train),
            None => xs.shallow_clone(),
        };
        let mut ys = self.project.forward_t(&self.depthwise.forward_t(&expanded, train), train);
        if self.use_residual {
            ys += xs;
        }
        ys
    }

    fn fused(&self, kind: tch::Kind) -> FusedBlock {
        let mut block = FusedBlock::new(self.use_residual);
        if let Some(expand) = &self.expand {
            block = block.conv(expand, kind);
        }
        block.conv(&self.depthwise, kind).conv(&self.project, kind)
    }
}

/// A MobileNet's `features`: a stem convolution, its inverted residual blocks, a last 1×1
/// convolution; then global pooling. V2 and V3 differ only in their block kind.
#[derive(Debug)]
pub struct MobileNet<Block> {
    stem: ConvNormActivation,
    blocks: Vec<Block>,
    last_conv: ConvNormActivation,
}

/// What [`MobileNet`] needs of a block kind.
pub trait MobileNetBlock {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor;
    fn fused(&self, kind: tch::Kind) -> FusedBlock;
}

impl<Block: MobileNetBlock> MobileNet<Block> {
    /// Pooled features `[N, channels of the last convolution]`.
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut ys = self.stem.forward_t(xs, train);
        for block in &self.blocks {
            ys = block.forward_t(&ys, train);
        }
        global_average(&self.last_conv.forward_t(&ys, train)).flatten(1, -1)
    }

    pub fn fused(&self, kind: tch::Kind) -> Vec<FusedBlock> {
        let mut fused = vec![FusedBlock::new(false).conv(&self.stem, kind)];
        fused.extend(self.blocks.iter().map(|b| b.fused(kind)));
        fused.push(FusedBlock::new(false).conv(&self.last_conv, kind));
        fused
    }
}

/// torchvision's `MobileNetV2` features: stem, 17 inverted residuals, a 1×1 conv to 1280.
pub type MobileNetV2 = MobileNet<InvertedResidualV2>;

/// (expand ratio t, channels c, repeats n, first stride s), as torchvision lists them.
const V2_SETTINGS: [(i64, i64, usize, i64); 7] =
    [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)];

impl MobileNetV2 {
    pub const FEATURE_DIM: i64 = 1280;

    pub fn new(path: nn::Path) -> Self {
        let features = &path / "features";
        let stem_shape = ConvShape { cin: 3, cout: 32, kernel: 3, stride: 2, groups: 1 };
        let stem = ConvNormActivation::new(&features / 0, stem_shape, TORCH_NORM, Activation::Relu6);
        let mut blocks = Vec::new();
        let mut cin = 32;
        for (t, c, n, s) in V2_SETTINGS {
            for i in 0..n {
                let stride = if i == 0 { s } else { 1 };
                blocks.push(InvertedResidualV2::new(&features / (blocks.len() + 1), cin, c, stride, t));
                cin = c;
            }
        }
        let last_conv = ConvNormActivation::new(
            &features / (blocks.len() + 1),
            ConvShape::pointwise(cin, Self::FEATURE_DIM),
            TORCH_NORM,
            Activation::Relu6,
        );
        Self { stem, blocks, last_conv }
    }
}

/// One row of torchvision's MobileNetV3 settings (`InvertedResidualConfig`, width 1.0).
struct V3Block {
    cin: i64,
    kernel: i64,
    expanded: i64,
    cout: i64,
    squeeze_excitation: bool,
    hardswish: bool,
    stride: i64,
}

const fn v3(cin: i64, kernel: i64, expanded: i64, cout: i64, se: bool, hs: bool, stride: i64) -> V3Block {
    V3Block { cin, kernel, expanded, cout, squeeze_excitation: se, hardswish: hs, stride }
}

const V3_LARGE: [V3Block; 15] = [
    v3(16, 3, 16, 16, false, false, 1),
    v3(16, 3, 64, 24, false, false, 2),
    v3(24, 3, 72, 24, false, false, 1),
    v3(24, 5, 72, 40, true, false, 2),
    v3(40, 5, 120, 40, true, false, 1),
    v3(40, 5, 120, 40, true, false, 1),
    v3(40, 3, 240, 80, false, true, 2),
    v3(80, 3, 200, 80, false, true, 1),
    v3(80, 3, 184, 80, false, true, 1),
    v3(80, 3, 184, 80, false, true, 1),
    v3(80, 3, 480, 112, true, true, 1),
    v3(112, 3, 672, 112, true, true, 1),
    v3(112, 5, 672, 160, true, true, 2),
    v3(160, 5, 960, 160, true, true, 1),
    v3(160, 5, 960, 160, true, true, 1),
];

const V3_SMALL: [V3Block; 11] = [
    v3(16, 3, 16, 16, true, false, 2),
    v3(16, 3, 72, 24, false, false, 2),
    v3(24, 3, 88, 24, false, false, 1),
    v3(24, 5, 96, 40, true, true, 2),
    v3(40, 5, 240, 40, true, true, 1),
    v3(40, 5, 240, 40, true, true, 1),
    v3(40, 5, 120, 48, true, true, 1),
    v3(48, 5, 144, 48, true, true, 1),
    v3(48, 5, 288, 96, true, true, 2),
    v3(96, 5, 576, 96, true, true, 1),
    v3(96, 5, 576, 96, true, true, 1),
];

/// MobileNetV3's inverted residual (`features.N.block`): optional 1×1 expansion, depthwise,
/// optional squeeze-excitation (ReLU, hard sigmoid), 1×1 projection; ReLU or hardswish.
#[derive(Debug)]
pub struct InvertedResidualV3 {
    expand: Option<ConvNormActivation>,
    depthwise: ConvNormActivation,
    squeeze_excitation: Option<SqueezeExcitation>,
    project: ConvNormActivation,
    use_residual: bool,
}

impl InvertedResidualV3 {
    fn new(path: nn::Path, config: &V3Block) -> Self {
        let block = &path / "block";
        let activation = if config.hardswish { Activation::Hardswish } else { Activation::Relu };
        // Layers are numbered in order, the optional ones only when present.
        let mut next = 0;
        let expand = (config.expanded != config.cin).then(|| {
            next += 1;
            ConvNormActivation::new(&block / 0, ConvShape::pointwise(config.cin, config.expanded), V3_NORM, activation)
        });
        let depthwise = ConvNormActivation::new(
            &block / next,
            ConvShape::depthwise(config.expanded, config.kernel, config.stride),
            V3_NORM,
            activation,
        );
        next += 1;
        let squeeze_excitation = config.squeeze_excitation.then(|| {
            let squeeze = make_divisible((config.expanded / 4) as f64);
            let se =
                SqueezeExcitation::new(&block / next, config.expanded, squeeze, Activation::Relu, Gate::Hardsigmoid);
            next += 1;
            se
        });
        let project = ConvNormActivation::new(
            &block / next,
            ConvShape::pointwise(config.expanded, config.cout),
            V3_NORM,
            Activation::Identity,
        );
        Self {
            expand,
            depthwise,
            squeeze_excitation,
            project,
            use_residual: config.stride == 1 && config.cin == config.cout,
        }
    }
}

impl MobileNetBlock for InvertedResidualV3 {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let expanded = match &self.expand {
            Some(expand) => expand.forward_t(xs, train),
            None => xs.shallow_clone(),
        };
        let mut ys = self.depthwise.forward_t(&expanded, train);
        if let Some(se) = &self.squeeze_excitation {
            ys = se.forward(&ys);
        }
        let mut ys = self.project.forward_t(&ys, train);
        if self.use_residual {
            ys += xs;
        }
        ys
    }

    fn fused(&self, kind: tch::Kind) -> FusedBlock {
        let mut block = FusedBlock::new(self.use_residual);
        if let Some(expand) = &self.expand {
            block = block.conv(expand, kind);
        }
        block = block.conv(&self.depthwise, kind);
        if let Some(se) = &self.squeeze_excitation {
            block = block.squeeze_excitation(se, kind);
        }
        block.conv(&self.project, kind)
    }
}

/// torchvision's `MobileNetV3` features: stem (16 channels, hardswish), the inverted
/// residuals, a 1×1 conv to 6 × the last width (960 large, 576 small).
pub type MobileNetV3 = MobileNet<InvertedResidualV3>;

impl MobileNetV3 {
    pub fn large(path: nn::Path) -> Self {
        Self::new(path, &V3_LARGE)
    }

    pub fn small(path: nn::Path) -> Self {
        Self::new(path, &V3_SMALL)
    }

    fn new(path: nn::Path, settings: &[V3Block]) -> Self {
        let features = &path / "features";
        let stem_shape = ConvShape { cin: 3, cout: 16, kernel: 3, stride: 2, groups: 1 };
        let stem = ConvNormActivation::new(&features / 0, stem_shape, V3_NORM, Activation::Hardswish);
        let blocks: Vec<InvertedResidualV3> = settings
            .iter()
            .enumerate()
            .map(|(i, config)| InvertedResidualV3::new(&features / (i + 1), config))
            .collect();
        let last_in = settings.last().expect("settings").cout;
        let feature_dim = 6 * last_in;
        let last_conv = ConvNormActivation::new(
            &features / (settings.len() + 1),
            ConvShape::pointwise(last_in, feature_dim),
            V3_NORM,
            Activation::Hardswish,
        );
        Self { stem, blocks, last_conv }
    }
}
