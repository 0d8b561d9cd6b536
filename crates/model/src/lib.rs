//! The Python system's classifier: torchvision features (EfficientNet-B0, MobileNetV3
//! Small or Large, MobileNetV2) under `backbone.`, and the head `classifier =
//! Sequential(Dropout, Linear, LayerNorm, ReLU, Dropout, Linear)`, so weights load by their
//! PyTorch state-dict names. Beside it: model files (`file`, `torch_file`), ImageNet weights
//! (`pretrained`), ONNX export (`onnx`), the fused inference model (`fused`), images as an
//! input tensor (`input`), devices (`device`) and libtorch's compute threads (`threads`).

pub mod device;
pub mod efficientnet;
pub mod file;
pub mod fused;
pub mod input;
pub mod layers;
pub mod mobilenet;
pub mod onnx;
pub mod pretrained;
pub mod quantize;
pub mod threads;
pub mod torch_file;

use anyhow::Result;
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

pub use efficientnet::EfficientNetB0;
pub use file::{ModelFile, ModelMetadata};
pub use mobilenet::{MobileNetV2, MobileNetV3};

use imgtype_base::config::{Backbone, Config};

/// The feature extractor `model.backbone` names.
#[derive(Debug)]
pub enum BackboneNetwork {
    EfficientNetB0(EfficientNetB0),
    MobileNetV2(MobileNetV2),
    MobileNetV3(MobileNetV3),
}

impl BackboneNetwork {
    /// `path` is the module holding `features` (for the classifier model: `backbone`).
    pub fn new(path: nn::Path, config: &imgtype_base::config::ModelConfig) -> Self {
        match config.backbone {
            Backbone::EfficientNetB0 => Self::EfficientNetB0(EfficientNetB0::new(path, config.stochastic_depth_prob)),
            Backbone::MobileNetV2 => Self::MobileNetV2(MobileNetV2::new(path)),
            Backbone::MobileNetV3Small => Self::MobileNetV3(MobileNetV3::small(path)),
            Backbone::MobileNetV3Large => Self::MobileNetV3(MobileNetV3::large(path)),
        }
    }

    /// Pooled features `[N, width]`; `train` selects BatchNorm batch statistics, and
    /// `stochastic_depth` EfficientNet's stochastic depth (the MobileNets have none).
    pub fn forward_t(&self, xs: &Tensor, train: bool, stochastic_depth: bool) -> Tensor {
        match self {
            Self::EfficientNetB0(net) => net.forward_t(xs, train, stochastic_depth),
            Self::MobileNetV2(net) => net.forward_t(xs, train),
            Self::MobileNetV3(net) => net.forward_t(xs, train),
        }
    }

    /// The inference form: BatchNorms folded, in `kind`.
    pub fn fused(&self, kind: Kind) -> Vec<fused::FusedBlock> {
        match self {
            Self::EfficientNetB0(net) => net.fused(kind),
            Self::MobileNetV2(net) => net.fused(kind),
            Self::MobileNetV3(net) => net.fused(kind),
        }
    }
}

/// tch's (and PyTorch's) LayerNorm epsilon, which the head uses.
pub const LAYER_NORM_EPS: f64 = 1e-5;

/// Optimiser parameter groups: the head trains at `learning_rate`, the backbone at `backbone_lr`.
pub const HEAD_GROUP: usize = 0;
pub const BACKBONE_GROUP: usize = 1;

/// `Dropout(p) → Linear(features, hidden) → LayerNorm → ReLU → Dropout(p) → Linear(hidden, classes)`;
/// Linear weights Xavier-uniform, biases zero, as the Python system initialises them.
#[derive(Debug)]
pub struct ClassifierHead {
    pub(crate) hidden: nn::Linear,
    pub(crate) norm: nn::LayerNorm,
    pub(crate) output: nn::Linear,
    dropout: f64,
}

fn xavier_linear(path: nn::Path, fan_in: i64, fan_out: i64) -> nn::Linear {
    let bound = (6.0 / (fan_in + fan_out) as f64).sqrt();
    let config = nn::LinearConfig {
        ws_init: nn::Init::Uniform { lo: -bound, up: bound },
        bs_init: Some(nn::Init::Const(0.)),
        bias: true,
    };
    nn::linear(path, fan_in, fan_out, config)
}

impl ClassifierHead {
    pub fn new(path: nn::Path, feature_dim: i64, hidden_dim: i64, num_classes: i64, dropout: f64) -> Self {
        Self {
            hidden: xavier_linear(&path / 1, feature_dim, hidden_dim),
            norm: nn::layer_norm(
                &path / 2,
                vec![hidden_dim],
                nn::LayerNormConfig { eps: LAYER_NORM_EPS, ..Default::default() },
            ),
            output: xavier_linear(&path / 5, hidden_dim, num_classes),
            dropout,
        }
    }

    pub fn forward_t(&self, features: &Tensor, train: bool) -> Tensor {
        let ys = features.dropout(self.dropout, train).apply(&self.hidden);
        let ys = self.norm.forward(&ys).relu();
        ys.dropout(self.dropout, train).apply(&self.output)
    }
}

/// The whole model with its variables, class names and the config it was built from.
pub struct ImageTypeClassifier {
    pub vs: nn::VarStore,
    pub(crate) backbone: BackboneNetwork,
    pub(crate) head: ClassifierHead,
    /// The side of the square images the model takes: the model file's `image_size`.
    input_size: u32,
    /// The config it was built from (and trained with), stored in the files it saves.
    config: Config,
    backbone_frozen: bool,
    /// The backbone's activations' number format: `Float`, or `BFloat16` for reduced-precision
    /// training (the weights stay fp32).
    compute_kind: Kind,
    /// The INT8 ranges its file held (or why the entry could not be read), checked against
    /// the weights only when asked for ([`Self::int8_ranges`]): hashing them costs every load.
    int8_ranges: Option<Result<quantize::ActivationRanges, String>>,
}

impl ImageTypeClassifier {
    /// A freshly initialised model (torchvision's initialisation) for `config`.
    pub fn new(config: &Config, device: Device) -> Self {
        if device.is_cuda() {
            // For callers that name a CUDA device without `device::resolve_device`.
            crate::device::load_cuda_support();
        }
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let backbone = BackboneNetwork::new(root.set_group(BACKBONE_GROUP) / "backbone", &config.model);
        let class_names = &config.data.class_names;
        let head = ClassifierHead::new(
            root.set_group(HEAD_GROUP) / "classifier",
            config.model.backbone.feature_dim(),
            config.model.effective_hidden_dim(),
            class_names.len() as i64,
            config.model.dropout_rate,
        );
        // Convolution weights in channels-last layout, as the batches are: oneDNN's fastest
        // CPU kernels, in training as in inference. The values are the same; files and
        // state-dict names do not change.
        tch::no_grad(|| {
            for (_, mut var) in vs.variables() {
                if var.dim() == 4 {
                    var.set_data(&fused::channels_last(&var));
                }
            }
        });
        Self {
            vs,
            backbone,
            head,
            input_size: config.augmentation.image_size,
            config: config.clone(),
            backbone_frozen: false,
            compute_kind: Kind::Float,
            int8_ranges: None,
        }
    }

    /// Loads a model file: the architecture comes from the config stored in it.
    pub fn load(path: &std::path::Path, device: Device) -> Result<Self> {
        let file = ModelFile::read(path)?;
        let classes = file.metadata.class_names().len() as i64;
        if let Some((_, output)) = file.tensors.iter().find(|(name, _)| name == "classifier.5.weight") {
            let outputs = output.size()[0];
            if outputs != classes {
                anyhow::bail!(
                    "{}: the model has {outputs} outputs but its metadata lists {classes} class names {:?}",
                    path.display(),
                    file.metadata.class_names()
                );
            }
        }
        let mut model = Self::new(&file.metadata.config, device);
        // A training checkpoint also holds optimiser, EMA and best-so-far tensors.
        let weights: Vec<(String, Tensor)> = file
            .tensors
            .iter()
            .filter(|(n, _)| !file::is_training_state(n))
            .map(|(n, t)| (n.clone(), t.shallow_clone()))
            .collect();
        if let Some((name, _)) = weights.iter().find(|(_, t)| t.is_floating_point() && !finite(t)) {
            anyhow::bail!(
                "{}: tensor `{name}` holds NaN or infinite values; every prediction would be NaN (a training \
                 run that diverged, or a damaged file)",
                path.display()
            );
        }
        file::copy_named_tensors(&weights, &mut model.vs, path, "")?;
        model.check_finite_outputs().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        // The weights serve at every other precision; `test --int8-calibrate` measures again.
        if let Some(Err(problem)) = &file.metadata.int8_ranges {
            tracing::warn!("{}: INT8 ranges ignored: {problem}", path.display());
        }
        model.int8_ranges = file.metadata.int8_ranges;
        Ok(model)
    }

    /// The INT8 ranges measured on its current weights and input size, if any.
    pub fn int8_ranges(&self) -> Option<&quantize::ActivationRanges> {
        self.int8_ranges.as_ref()?.as_ref().ok().filter(|ranges| ranges.is_sealed_for(self))
    }

    /// Why [`Self::int8_ranges`] has none.
    pub fn int8_missing_reason(&self) -> String {
        match &self.int8_ranges {
            Some(Err(problem)) => format!("its INT8 ranges were ignored ({problem})"),
            Some(Ok(_)) => format!("its INT8 ranges were ignored ({})", quantize::NOT_SEALED),
            None => "it holds no INT8 ranges".into(),
        }
    }

    /// Keeps `ranges` (saved with the model from now on); refused when they were measured
    /// on other weights or input size, were edited, or do not fit the network.
    pub fn set_int8_ranges(&mut self, ranges: quantize::ActivationRanges) -> Result<()> {
        if !ranges.is_sealed_for(self) {
            anyhow::bail!("{}", quantize::NOT_SEALED);
        }
        ranges.check_fits(&fused::FusedClassifier::new(self, Kind::Float).convolutions())?;
        self.int8_ranges = Some(Ok(ranges));
        Ok(())
    }

    /// Refuses a model whose probabilities are not finite numbers on two plain probe inputs
    /// (a mid-grey image and a ramp across every value a normalised pixel takes): finite
    /// weights can still overflow, and `inference.temperature` divides the logits.
    fn check_finite_outputs(&self) -> Result<()> {
        let size = self.input_size() as i64;
        let options = (tch::Kind::Float, self.device());
        let grey = Tensor::zeros([1, 3, size, size], options);
        let ramp = Tensor::linspace(-2.2, 2.7, 3 * size * size, options).view([1, 3, size, size]);
        let logits = tch::no_grad(|| self.forward_t(&Tensor::cat(&[grey, ramp], 0), false));
        let temperature = self.config.inference.temperature;
        let probabilities = (&logits / temperature).softmax(-1, tch::Kind::Float);
        if finite(&logits) && finite(&probabilities) {
            return Ok(());
        }
        let shown = Vec::<f32>::try_from(logits.flatten(0, -1)).unwrap_or_default();
        anyhow::bail!(
            "refused: on a plain probe image the model's output is not a number (logits {shown:?} at \
             inference.temperature {temperature}); its weights overflow, or the temperature is too small for them"
        )
    }

    pub fn save(&self, path: &std::path::Path) -> Result<()> {
        let metadata = ModelMetadata { config: self.config.clone(), int8_ranges: self.int8_ranges().cloned().map(Ok) };
        ModelFile::write(path, &self.vs, &metadata)
    }

    /// Its classes, in output order: the config's `data.class_names` (a model file's
    /// `class_names` entry), their one owner.
    pub fn class_names(&self) -> &[String] {
        &self.config.data.class_names
    }

    /// The side of the square, normalised images `forward_t` takes.
    pub fn input_size(&self) -> u32 {
        self.input_size
    }

    /// The config it was built from: for a loaded file, the one it was trained with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Stores per-class minimum probabilities (`inference.class_thresholds`) in the files it
    /// saves from now on: one of the two settings a model file gets after training (with the temperature).
    pub fn set_class_thresholds(&mut self, thresholds: std::collections::BTreeMap<String, f64>) {
        self.config.inference.class_thresholds = thresholds;
    }

    /// Sets `inference.temperature` (logits divided by it before the softmax) in the files
    /// it saves from now on.
    pub fn set_temperature(&mut self, temperature: f64) {
        self.config.inference.temperature = temperature;
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// Logits `[N, classes]` for a normalised batch `[N, 3, H, W]`. While the backbone is
    /// frozen its BatchNorm layers stay in eval mode even when `train` is true.
    pub fn forward_t(&self, images: &Tensor, train: bool) -> Tensor {
        let backbone_train = train && !self.backbone_frozen;
        if self.compute_kind == Kind::Float {
            let features = self.backbone.forward_t(images, backbone_train, backbone_train);
            return self.head.forward_t(&features, train);
        }
        let features = self.backbone.forward_t(&images.to_kind(self.compute_kind), backbone_train, backbone_train);
        self.head.forward_t(&features.to_kind(Kind::Float), train)
    }

    /// The backbone's pooled features `[N, width]` (torchvision's
    /// `avgpool(features(x)).flatten(1)`), BatchNorm in training mode when `train`, without
    /// stochastic depth.
    pub fn backbone_features(&self, images: &Tensor, train: bool) -> Tensor {
        self.backbone.forward_t(images, train, false)
    }

    /// Runs the backbone in `kind` from now on (`BFloat16`: reduced-precision training).
    pub fn set_compute_kind(&mut self, kind: Kind) {
        self.compute_kind = kind;
    }

    /// Every variable by its state-dict name, sorted; shares storage with the model.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        file::sorted_variables(&self.vs)
    }

    /// Detached copies of every variable, sorted by name (best-so-far weights, an EMA's start).
    pub fn snapshot(&self) -> Vec<(String, Tensor)> {
        self.named_tensors().into_iter().map(|(name, tensor)| (name, tensor.detach().copy())).collect()
    }

    /// Overwrites every variable with `tensors` (as from [`Self::snapshot`]); `source` names them in errors.
    pub fn load_tensors(&mut self, tensors: &[(String, Tensor)], source: &std::path::Path) -> Result<()> {
        file::copy_named_tensors(tensors, &mut self.vs, source, "")
    }

    pub fn set_backbone_frozen(&mut self, frozen: bool) {
        for (name, var) in self.vs.variables() {
            if name.starts_with("backbone.") && var.is_floating_point() && !is_buffer(&name) {
                let _ = var.set_requires_grad(!frozen);
            }
        }
        self.backbone_frozen = frozen;
    }

    pub fn backbone_frozen(&self) -> bool {
        self.backbone_frozen
    }

    /// The first variable (by name) holding NaN or an infinity: a training run that diverged.
    pub fn first_non_finite_variable(&self) -> Option<String> {
        self.named_tensors().into_iter().find(|(_, t)| t.is_floating_point() && !finite(t)).map(|(name, _)| name)
    }
}

/// Whether every value of `tensor` is a finite number.
fn finite(tensor: &Tensor) -> bool {
    tensor.isfinite().all().int64_value(&[]) != 0
}

/// BatchNorm running statistics are state, never trained.
pub fn is_buffer(name: &str) -> bool {
    name.ends_with("running_mean") || name.ends_with("running_var")
}

/// Loads backbone weights (torchvision's ImageNet weights, say) into `backbone.*`; the head
/// keeps its fresh initialisation. `path` is a `.safetensors` file or a `torch.save`d state
/// dict (`.pth`, read by libtorch). Keys may carry our `backbone.` prefix or be
/// torchvision's own (`features.…`; its `classifier.…` is ignored).
pub fn load_backbone_weights(model: &mut ImageTypeClassifier, path: &std::path::Path) -> Result<()> {
    let tensors = file::read_weights(path)?;
    let backbone: Vec<(String, Tensor)> = tensors
        .into_iter()
        .filter_map(|(name, t)| {
            if name.starts_with("backbone.") {
                Some((name, t))
            } else if name.starts_with("features.") {
                Some((format!("backbone.{name}"), t))
            } else {
                None
            }
        })
        .collect();
    let count = backbone.len();
    file::copy_named_tensors(&backbone, &mut model.vs, path, "backbone.")?;
    tracing::info!("loaded {count} backbone tensors from {}", path.display());
    Ok(())
}
