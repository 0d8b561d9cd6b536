//! The classifier for inference only, built from a trained [`ImageTypeClassifier`]: every
//! BatchNorm folded into the convolution before it (one pass over each activation instead
//! of two), weights in channels-last layout, which libtorch's oneDNN convolutions run
//! fastest on CPU, and optionally the backbone in bfloat16 on CPUs with AVX512-BF16 / AMX
//! (and on CUDA). The head (LayerNorm, two linears) always runs in fp32. Logits match the
//! plain model's to about 1e-4 in fp32 (tested); training uses the plain model.

use tch::{Kind, Tensor};

use super::layers::{global_average, Activation, ConvNormActivation, Gate, SqueezeExcitation};
use super::{ClassifierHead, ImageTypeClassifier, LAYER_NORM_EPS};

/// A convolution with its BatchNorm folded in: `y = conv(x, w') + b'` with
/// `w' = w · γ/√(σ² + ε)` per output channel and `b' = β − μ · γ/√(σ² + ε)`.
pub(super) struct FusedConv {
    pub(super) weight: Tensor,
    pub(super) bias: Tensor,
    pub(super) stride: i64,
    pub(super) padding: i64,
    pub(super) groups: i64,
    pub(super) activation: Activation,
}

impl FusedConv {
    fn new(layer: &ConvNormActivation, kind: Kind) -> Self {
        let norm = &layer.norm;
        let gamma = norm.ws.as_ref().expect("BatchNorm weight");
        let beta = norm.bs.as_ref().expect("BatchNorm bias");
        let scale = gamma / (&norm.running_var + layer.norm_eps).sqrt();
        let weight = &layer.conv.ws * scale.view([-1, 1, 1, 1]);
        let bias = beta - &norm.running_mean * &scale;
        Self {
            weight: channels_last(&weight.to_kind(kind)),
            bias: bias.to_kind(kind),
            stride: layer.stride,
            padding: layer.padding,
            groups: layer.groups,
            activation: layer.activation,
        }
    }

    fn forward(&self, xs: &Tensor) -> Tensor {
        let mut ys = xs.conv2d(&self.weight, Some(&self.bias), [self.stride], [self.padding], [1], self.groups);
        self.activation.apply_(&mut ys);
        ys
    }
}

/// A 1×1 convolution with a bias (the squeeze-excitation layers).
pub(super) struct PointwiseConv {
    pub(super) weight: Tensor,
    pub(super) bias: Tensor,
}

impl PointwiseConv {
    fn new(conv: &tch::nn::Conv2D, kind: Kind) -> Self {
        Self {
            weight: channels_last(&conv.ws.to_kind(kind)),
            bias: conv.bs.as_ref().expect("SE conv bias").to_kind(kind),
        }
    }

    fn forward(&self, xs: &Tensor) -> Tensor {
        xs.conv2d(&self.weight, Some(&self.bias), [1], [0], [1], 1)
    }
}

pub(super) struct FusedSqueezeExcitation {
    pub(super) fc1: PointwiseConv,
    pub(super) fc2: PointwiseConv,
    pub(super) activation: Activation,
    pub(super) gate: Gate,
}

impl FusedSqueezeExcitation {
    fn new(se: &SqueezeExcitation, kind: Kind) -> Self {
        Self {
            fc1: PointwiseConv::new(&se.fc1, kind),
            fc2: PointwiseConv::new(&se.fc2, kind),
            activation: se.activation,
            gate: se.gate,
        }
    }

    /// Scales `xs` in place by its channel gate.
    fn forward(&self, xs: &mut Tensor) {
        let mut squeezed = self.fc1.forward(&global_average(xs));
        self.activation.apply_(&mut squeezed);
        let gate = self.gate.apply(&self.fc2.forward(&squeezed));
        let _ = xs.g_mul_(&gate);
    }
}

pub(super) enum FusedLayer {
    Conv(FusedConv),
    SqueezeExcitation(FusedSqueezeExcitation),
}

/// A backbone block for inference: its layers in order, BatchNorms folded, and the input
/// added back when the block is residual. Every backbone (EfficientNet's MBConv,
/// MobileNet's inverted residuals, stems and last convolutions) is a list of these.
pub struct FusedBlock {
    layers: Vec<FusedLayer>,
    residual: bool,
}

impl FusedBlock {
    pub fn new(residual: bool) -> Self {
        Self { layers: Vec::new(), residual }
    }

    /// Appends a convolution + BatchNorm + activation, folded.
    pub fn conv(mut self, layer: &ConvNormActivation, kind: Kind) -> Self {
        self.layers.push(FusedLayer::Conv(FusedConv::new(layer, kind)));
        self
    }

    pub fn squeeze_excitation(mut self, se: &SqueezeExcitation, kind: Kind) -> Self {
        self.layers.push(FusedLayer::SqueezeExcitation(FusedSqueezeExcitation::new(se, kind)));
        self
    }

    pub(super) fn layers(&self) -> &[FusedLayer] {
        &self.layers
    }

    pub(super) fn residual(&self) -> bool {
        self.residual
    }

    /// `observe` sees each convolution's input (the INT8 ranges are measured there).
    fn forward(&self, xs: &Tensor, observe: &mut dyn FnMut(&Tensor)) -> Tensor {
        let mut ys = xs.shallow_clone();
        for layer in &self.layers {
            match layer {
                FusedLayer::Conv(conv) => {
                    observe(&ys);
                    ys = conv.forward(&ys)
                }
                FusedLayer::SqueezeExcitation(se) => se.forward(&mut ys),
            }
        }
        if self.residual {
            ys += xs;
        }
        ys
    }
}

/// The head in fp32: `Linear → LayerNorm → ReLU → Linear` (dropout is the identity here).
pub(super) struct FusedHead {
    pub(super) hidden_weight: Tensor,
    pub(super) hidden_bias: Tensor,
    pub(super) norm_weight: Tensor,
    pub(super) norm_bias: Tensor,
    pub(super) output_weight: Tensor,
    pub(super) output_bias: Tensor,
}

impl FusedHead {
    fn new(head: &ClassifierHead) -> Self {
        let copy = |t: &Tensor| t.detach().copy();
        Self {
            hidden_weight: copy(&head.hidden.ws),
            hidden_bias: copy(head.hidden.bs.as_ref().expect("linear bias")),
            norm_weight: copy(head.norm.ws.as_ref().expect("LayerNorm weight")),
            norm_bias: copy(head.norm.bs.as_ref().expect("LayerNorm bias")),
            output_weight: copy(&head.output.ws),
            output_bias: copy(head.output.bs.as_ref().expect("linear bias")),
        }
    }

    fn forward(&self, features: &Tensor) -> Tensor {
        let hidden = features.linear(&self.hidden_weight, Some(&self.hidden_bias));
        let width = self.norm_weight.size()[0];
        let normed = hidden.layer_norm([width], Some(&self.norm_weight), Some(&self.norm_bias), LAYER_NORM_EPS, false);
        normed.relu().linear(&self.output_weight, Some(&self.output_bias))
    }
}

/// The backbone plus the head, for `forward` in eval mode only.
pub struct FusedClassifier {
    blocks: Vec<FusedBlock>,
    head: FusedHead,
    kind: Kind,
}

impl FusedClassifier {
    /// Folds `model`'s current weights; `kind` is `Float` or `BFloat16` for the backbone.
    pub fn new(model: &ImageTypeClassifier, kind: Kind) -> Self {
        tch::no_grad(|| Self { blocks: model.backbone.fused(kind), head: FusedHead::new(&model.head), kind })
    }

    pub(super) fn blocks(&self) -> &[FusedBlock] {
        &self.blocks
    }

    /// The backbone's convolutions in the order of the forward pass (squeeze-excitation
    /// layers excluded): what the INT8 ranges describe.
    pub(super) fn convolutions(&self) -> Vec<&FusedConv> {
        let layers = self.blocks.iter().flat_map(|block| block.layers());
        layers.filter_map(|layer| if let FusedLayer::Conv(conv) = layer { Some(conv) } else { None }).collect()
    }

    pub(super) fn head(&self) -> &FusedHead {
        &self.head
    }

    /// The backbone's precision.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Logits `[N, classes]` (fp32) for a normalised batch `[N, 3, H, W]`, best passed in
    /// channels-last layout (as the data module's `to_normalized_batch` makes it).
    pub fn forward(&self, images: &Tensor) -> Tensor {
        self.forward_observing_convolutions(images, &mut |_| {})
    }

    /// [`Self::forward`], showing `observe` the input of every convolution of the backbone
    /// (not the squeeze-excitation layers'), in order.
    pub fn forward_observing_convolutions(&self, images: &Tensor, observe: &mut dyn FnMut(&Tensor)) -> Tensor {
        tch::no_grad(|| {
            let mut ys = images.to_kind(self.kind);
            for block in &self.blocks {
                ys = block.forward(&ys, observe);
            }
            let features = global_average(&ys).flatten(1, -1);
            self.head.forward(&features.to_kind(Kind::Float))
        })
    }
}

/// The same values in channels-last (NHWC) memory order, shape unchanged.
pub fn channels_last(xs: &Tensor) -> Tensor {
    xs.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}
