//! Model files: one `.safetensors` file whose header metadata carries the class
//! names and the effective config, so a model file is all that `test` and the API need.
//! Tensor names are the PyTorch state-dict keys; written atomically (temp file, rename).

use imgtype_images::image::{IMAGENET_MEAN, IMAGENET_STD};
use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use tch::{nn, Kind, Tensor};

use super::quantize::{ActivationRanges, METADATA_KEY};
use imgtype_base::config::Config;

pub const FORMAT: &str = "imgtype-model-v1";

/// What a model file says about itself besides its tensors: the config it was trained
/// with, whose `data.class_names` are the model's classes (the file's `class_names` entry).
#[derive(Debug, Clone)]
pub struct ModelMetadata {
    pub config: Config,
    /// The INT8 ranges measured on these weights, when they were (`quantize`); an entry that
    /// is not what this tool writes is the reason, as INT8 is an extra the model serves without.
    pub int8_ranges: Option<Result<ActivationRanges, String>>,
}

impl ModelMetadata {
    pub fn new(config: &Config) -> Self {
        Self { config: config.clone(), int8_ranges: None }
    }

    pub fn class_names(&self) -> &[String] {
        &self.config.data.class_names
    }

    pub fn to_header(&self) -> HashMap<String, String> {
        let mut header = HashMap::new();
        header.insert("format".into(), FORMAT.into());
        header.insert("class_names".into(), serde_json::to_string(self.class_names()).expect("names serialise"));
        header.insert("config".into(), serde_json::to_string(&self.config).expect("config serialises"));
        header.insert("image_size".into(), self.config.augmentation.image_size.to_string());
        header.insert("normalize_mean".into(), serde_json::to_string(&IMAGENET_MEAN).expect("mean"));
        header.insert("normalize_std".into(), serde_json::to_string(&IMAGENET_STD).expect("std"));
        header.insert("architecture".into(), self.config.model.backbone.as_str().into());
        header.insert("imgtype_version".into(), env!("CARGO_PKG_VERSION").into());
        if let Some(Ok(ranges)) = &self.int8_ranges {
            header.insert(METADATA_KEY.into(), ranges.to_json());
        }
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
        config.data.class_names = class_names;
        config.validate().map_err(|e| anyhow!("{}: metadata `class_names`: {e:#}", path.display()))?;
        let int8_ranges =
            header.get(METADATA_KEY).map(|text| ActivationRanges::from_json(text).map_err(|e| format!("{e:#}")));
        let metadata = Self { config, int8_ranges };
        metadata.check_header(header).map_err(|e| anyhow!("{}: metadata {e:#}", path.display()))?;
        Ok(metadata)
    }

    /// The header's descriptive entries must say what the config says and what this tool
    /// does: a file whose `image_size`, normalisation or architecture disagree would be
    /// read with other numbers than it was made with.
    fn check_header(&self, header: &HashMap<String, String>) -> Result<()> {
        if let Some(size) = header.get("image_size") {
            let expected = self.config.augmentation.image_size;
            if size.trim().parse::<u32>().ok() != Some(expected) {
                bail!("`image_size` is {size:?}, its config says {expected}");
            }
        }
        for (key, expected) in [("normalize_mean", IMAGENET_MEAN), ("normalize_std", IMAGENET_STD)] {
            let Some(text) = header.get(key) else { continue };
            let values: Vec<f64> =
                serde_json::from_str(text).map_err(|_| anyhow!("`{key}` is not a list of numbers: {text:?}"))?;
            let same = values.len() == 3 && values.iter().zip(expected).all(|(v, e)| (v - e).abs() < 1e-6);
            if !same {
                bail!("`{key}` is {text}; this tool normalises with ImageNet's {expected:?} only");
            }
        }
        if let Some(architecture) = header.get("architecture") {
            let backbone = self.config.model.backbone.as_str();
            if architecture != backbone {
                let known: Result<imgtype_base::config::Backbone, _> =
                    serde_json::from_value(serde_json::Value::String(architecture.clone()));
                match known {
                    Ok(_) => bail!("`architecture` is {architecture}, its config says {backbone}"),
                    Err(_) => bail!("`architecture` {architecture:?} is not a backbone this tool knows"),
                }
            }
        }
        Ok(())
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
    let bytes = imgtype_base::fsutil::read_capped(
        path,
        &format!("model file {}", path.display()),
        super::torch_file::MODEL_FILE_CAP,
    )?;
    parse_safetensors(&bytes, path)
}

/// Named tensors and header metadata of a safetensors file's bytes; `path` names it in errors.
fn parse_safetensors(bytes: &[u8], path: &Path) -> Result<(Vec<(String, Tensor)>, HashMap<String, String>)> {
    let (_, header) = SafeTensors::read_metadata(bytes)
        .map_err(|e| anyhow!("{}: not a valid safetensors file ({e:?})", path.display()))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let file = SafeTensors::deserialize(bytes)
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
/// Named tensors of a `.safetensors` file, or of a `torch.save` file (`.pth` / `.pt`): a
/// state dict, or a checkpoint dict holding one under `model_state_dict` or `state_dict`.
pub fn read_weights(path: &Path) -> Result<Vec<(String, Tensor)>> {
    if !imgtype_base::fsutil::is_present(path) {
        bail!("weights file {} does not exist", path.display());
    }
    if path.extension().is_some_and(|e| e == "safetensors") {
        return Ok(read_safetensors(path)?.0);
    }
    let value = super::torch_file::read_torch_file(path)?;
    let state = value
        .as_state_dict()
        .or_else(|| value.get("model_state_dict").and_then(|v| v.as_state_dict()))
        .or_else(|| value.get("state_dict").and_then(|v| v.as_state_dict()));
    state.ok_or_else(|| {
        anyhow!(
            "{}: holds neither a state dict nor a checkpoint with `model_state_dict` or `state_dict`",
            path.display()
        )
    })
}

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
    imgtype_base::fsutil::write_atomic(path, &bytes)
}

/// Rewrites the model file at `path` (one of ours) with `inference.temperature` set in its
/// config, weights untouched.
pub fn store_temperature(path: &Path, temperature: f64) -> Result<()> {
    let (tensors, mut header) = read_safetensors(path)?;
    let config = header.get("config").ok_or_else(|| anyhow!("{}: no config in the model file", path.display()))?;
    let mut config: serde_json::Value =
        serde_json::from_str(config).with_context(|| format!("{}: the stored config", path.display()))?;
    config["inference"]["temperature"] = serde_json::json!(temperature);
    header.insert("config".into(), config.to_string());
    write_safetensors(path, &tensors, header).with_context(|| format!("cannot write model file {}", path.display()))
}

impl ModelFile {
    pub fn write(path: &Path, vs: &nn::VarStore, metadata: &ModelMetadata) -> Result<()> {
        write_safetensors(path, &sorted_variables(vs), metadata.to_header())
            .with_context(|| format!("cannot write model file {}", path.display()))
    }

    /// Reads our `.safetensors` model file, or a `torch.save` checkpoint of the Python system.
    /// The file is opened once (a regular file within the cap, never blocking) and told
    /// apart by its first bytes: torch.save files are zip archives, ours are safetensors.
    pub fn read(path: &Path) -> Result<Self> {
        use std::io::{Read, Seek};
        let label = format!("model file {}", path.display());
        let cap = super::torch_file::MODEL_FILE_CAP;
        let (mut file, metadata) = imgtype_base::fsutil::open_regular_file(path, &label, cap)?;
        let mut magic = [0u8; 4];
        let is_zip = file.read_exact(&mut magic).is_ok() && magic == *b"PK\x03\x04";
        file.rewind().with_context(|| format!("cannot read {label}"))?;
        if is_zip {
            let value = super::torch_file::read_opened_torch_file(path, file, &metadata)?;
            return read_python_checkpoint(path, value);
        }
        let bytes = imgtype_base::fsutil::read_at_most(file, &label, cap)?;
        let (tensors, header) = parse_safetensors(&bytes, path)?;
        let metadata = ModelMetadata::from_header(&header, path)?;
        Ok(Self { tensors, metadata })
    }
}

const CONFIG_SECTIONS: [&str; 9] =
    ["data", "model", "training", "augmentation", "validation", "logging", "inference", "paths", "system"];

/// The Python system's checkpoint (`torch.save` of a dict with `model_state_dict`, `config`,
/// `class_names`, …) as a model file. Class names come from the checkpoint, else from its
/// config (the Python system saved an empty list), else the four default classes; config
/// sections this tool does not know are left out. A bare state dict gets the default config.
fn read_python_checkpoint(path: &Path, value: super::torch_file::Value) -> Result<ModelFile> {
    let state = match value.get("model_state_dict").and_then(|v| v.as_state_dict()) {
        Some(state) => state,
        None => value.as_state_dict().ok_or_else(|| {
            anyhow!(
                "{}: a torch.save file without `model_state_dict` (not a checkpoint of the Python system?)",
                path.display()
            )
        })?,
    };
    let mut config_json = match value.get("config").map(|c| c.to_json()) {
        Some(serde_json::Value::Object(sections)) => sections,
        _ => {
            tracing::warn!("{}: holds no config; assuming the default one (image size, classes)", path.display());
            serde_json::Map::new()
        }
    };
    config_json.retain(|section, _| CONFIG_SECTIONS.contains(&section.as_str()));
    let names = |v: Option<serde_json::Value>| -> Option<Vec<String>> {
        serde_json::from_value::<Vec<String>>(v?).ok().filter(|n| !n.is_empty())
    };
    let class_names = names(value.get("class_names").map(|v| v.to_json()))
        .or_else(|| names(config_json.get("data").and_then(|d| d.get("class_names")).cloned()))
        .unwrap_or_else(|| imgtype_base::config::DEFAULT_CLASS_NAMES.iter().map(|s| s.to_string()).collect());
    let data = config_json.entry("data").or_insert_with(|| serde_json::json!({}));
    if let Some(data) = data.as_object_mut() {
        data.insert("class_names".into(), serde_json::json!(class_names));
    }
    let loaded = Config::parse(&serde_json::Value::Object(config_json).to_string())
        .with_context(|| format!("{}: the checkpoint's config", path.display()))?;
    let tensors = state
        .into_iter()
        .filter(|(name, _)| !name.ends_with("num_batches_tracked"))
        .map(|(name, t)| (name, t.to_kind(Kind::Float)))
        .collect();
    let mut config = loaded.config;
    config.data.class_names = class_names;
    Ok(ModelFile { tensors, metadata: ModelMetadata { config, int8_ranges: None } })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quantize::tests::{measured, model};
    use crate::ImageTypeClassifier;
    use imgtype_base::config::Backbone;

    /// An edited or damaged entry costs INT8 only: the file loads, serves at other
    /// precisions, and says why it has no ranges.
    #[test]
    fn edited_or_damaged_ranges_in_a_file_are_ignored_with_the_reason() {
        let mut model = model(Backbone::MobileNetV3Small);
        model.set_int8_ranges(measured(&model)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        model.save(&path).unwrap();
        let (tensors, header) = read_safetensors(&path).unwrap();
        let mut edited: serde_json::Value = serde_json::from_str(&header[METADATA_KEY]).unwrap();
        edited["convolutions"][0]["clip"] =
            serde_json::json!(edited["convolutions"][0]["clip"].as_f64().unwrap() * 0.9);
        for (entry, says) in
            [(edited.to_string(), "SHA-256 does not match"), ("[[[".to_string(), "not the INT8 ranges")]
        {
            let mut header = header.clone();
            header.insert(METADATA_KEY.into(), entry);
            write_safetensors(&path, &tensors, header).unwrap();
            let loaded = ImageTypeClassifier::load(&path, tch::Device::Cpu).unwrap();
            assert!(loaded.int8_ranges().is_none());
            let reason = loaded.int8_missing_reason();
            assert!(reason.contains("ignored") && reason.contains(says), "{reason}");
        }
    }
}
