//! Model files: one `.safetensors` file whose header metadata carries the class
//! names and the effective config, so a model file is all that `test` and the API need.
//! Tensor names are the PyTorch state-dict keys; written atomically (temp file, rename).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use tch::{nn, Kind, Tensor};

use crate::config::Config;

pub const FORMAT: &str = "imgtype-model-v1";
pub const IMAGENET_MEAN: [f64; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f64; 3] = [0.229, 0.224, 0.225];

/// What a model file says about itself besides its tensors.
#[derive(Debug, Clone)]
pub struct ModelMetadata {
    pub class_names: Vec<String>,
    pub config: Config,
}

impl ModelMetadata {
    pub fn new(config: &Config) -> Self {
        Self { class_names: config.data.class_names.clone(), config: config.clone() }
    }

    pub fn to_header(&self) -> HashMap<String, String> {
        let mut header = HashMap::new();
        header.insert("format".into(), FORMAT.into());
        header.insert("class_names".into(), serde_json::to_string(&self.class_names).expect("names serialise"));
        header.insert("config".into(), serde_json::to_string(&self.config).expect("config serialises"));
        header.insert("image_size".into(), self.config.augmentation.image_size.to_string());
        header.insert("normalize_mean".into(), serde_json::to_string(&IMAGENET_MEAN).expect("mean"));
        header.insert("normalize_std".into(), serde_json::to_string(&IMAGENET_STD).expect("std"));
        header.insert("architecture".into(), self.config.model.backbone.as_str().into());
        header.insert("imgtype_version".into(), env!("CARGO_PKG_VERSION").into());
        header
    }

    fn from_header(header: &HashMap<String, String>, path: &Path) -> Result<Self> {
        let field = |key: &str| {
            header.get(key).ok_or_else(|| {
                anyhow!("{}: model file metadata has no `{key}` entry (not written by this tool?)", path.display())
            })
        };
        let class_names: Vec<String> = serde_json::from_str(field("class_names")?)
            .with_context(|| format!("{}: metadata `class_names` is not a JSON list of strings", path.display()))?;
        let loaded = Config::parse(field("config")?)
            .with_context(|| format!("{}: metadata `config` is not a valid config", path.display()))?;
        let mut config = loaded.config;
        if class_names.is_empty() {
            bail!("{}: metadata `class_names` is empty", path.display());
        }
        config.data.class_names = class_names.clone();
        Ok(Self { class_names, config })
    }
}

/// Tensors a training checkpoint holds besides the model weights (optimiser state, EMA
/// and best-so-far weights); loading a checkpoint as a model skips them.
pub fn is_training_state(name: &str) -> bool {
    name.starts_with("optimizer.") || name.starts_with("ema.") || name.starts_with("best.")
}

/// A model file read into memory: named CPU tensors and the metadata.
pub struct ModelFile {
    pub tensors: Vec<(String, Tensor)>,
    pub metadata: ModelMetadata,
}

fn kind_of(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::I64 => Kind::Int64,
        Dtype::U8 => Kind::Uint8,
        _ => return None,
    })
}

/// Named tensors of a safetensors file, as CPU tensors, and its header metadata.
pub fn read_safetensors(path: &Path) -> Result<(Vec<(String, Tensor)>, HashMap<String, String>)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read model file {}", path.display()))?;
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| anyhow!("{}: not a valid safetensors file ({e:?})", path.display()))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let file = SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow!("{}: not a valid safetensors file ({e:?})", path.display()))?;
    let mut tensors = Vec::new();
    for (name, view) in file.tensors() {
        let kind = kind_of(view.dtype())
            .ok_or_else(|| anyhow!("{}: tensor `{name}` has unsupported dtype {:?}", path.display(), view.dtype()))?;
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let tensor = Tensor::f_from_data_size(view.data(), &shape, kind)
            .with_context(|| format!("{}: cannot read tensor `{name}`", path.display()))?;
        tensors.push((name, tensor));
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((tensors, metadata))
}

/// Writes named tensors (as f32, contiguous, on CPU) with header metadata; atomic.
pub fn write_safetensors(path: &Path, tensors: &[(String, Tensor)], metadata: HashMap<String, String>) -> Result<()> {
    let mut buffers = Vec::with_capacity(tensors.len());
    for (name, tensor) in tensors {
        let cpu = tensor.to_device(tch::Device::Cpu).to_kind(Kind::Float).contiguous();
        let shape: Vec<usize> = cpu.size().iter().map(|&d| d as usize).collect();
        let values = Vec::<f32>::try_from(cpu.flatten(0, -1)).with_context(|| format!("tensor `{name}`"))?;
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        buffers.push((name.clone(), shape, bytes));
    }
    let views = buffers
        .iter()
        .map(|(name, shape, bytes)| Ok((name.clone(), TensorView::new(Dtype::F32, shape.clone(), bytes)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()
        .map_err(|e| anyhow!("cannot build tensor views: {e:?}"))?;
    let bytes = safetensors::serialize(views, &Some(metadata)).map_err(|e| anyhow!("cannot serialise: {e:?}"))?;
    crate::fsutil::write_atomic(path, &bytes)
}

impl ModelFile {
    pub fn write(path: &Path, vs: &nn::VarStore, metadata: &ModelMetadata) -> Result<()> {
        write_safetensors(path, &sorted_variables(vs), metadata.to_header())
            .with_context(|| format!("cannot write model file {}", path.display()))
    }

    pub fn read(path: &Path) -> Result<Self> {
        let (tensors, header) = read_safetensors(path)?;
        let metadata = ModelMetadata::from_header(&header, path)?;
        Ok(Self { tensors, metadata })
    }
}

/// Every variable of `vs` (weights and BatchNorm statistics) by its state-dict name, sorted.
pub fn sorted_variables(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut tensors: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    tensors
}

/// Loads `tensors` into the variables of `vs` whose names start with `prefix`
/// (all when empty). `num_batches_tracked` entries are ignored.
pub fn copy_named_tensors(
    tensors: &[(String, Tensor)],
    vs: &mut nn::VarStore,
    source: &Path,
    prefix: &str,
) -> Result<()> {
    let mut variables: HashMap<String, Tensor> =
        vs.variables().into_iter().filter(|(name, _)| name.starts_with(prefix)).collect();
    let mut unexpected = Vec::new();
    tch::no_grad(|| -> Result<()> {
        for (name, tensor) in tensors {
            if name.ends_with("num_batches_tracked") {
                continue;
            }
            let Some(mut variable) = variables.remove(name) else {
                unexpected.push(name.clone());
                continue;
            };
            if variable.size() != tensor.size() {
                bail!(
                    "{}: tensor `{name}` has shape {:?}, the model expects {:?}",
                    source.display(),
                    tensor.size(),
                    variable.size()
                );
            }
            variable.copy_(&tensor.to_kind(variable.kind()));
        }
        Ok(())
    })?;
    if !unexpected.is_empty() {
        unexpected.sort();
        bail!("{}: unexpected tensor(s) not in the model: {}", source.display(), unexpected.join(", "));
    }
    if !variables.is_empty() {
        let mut missing: Vec<_> = variables.into_keys().collect();
        missing.sort();
        bail!("{}: missing tensor(s): {}", source.display(), missing.join(", "));
    }
    Ok(())
}
