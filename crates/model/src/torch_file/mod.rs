//! Reads `torch.save` files without Python: a zip holding `<name>/data.pkl` (a pickle) and
//! one `<name>/data/<key>` file per tensor storage. libtorch's C++ reader cannot read a
//! pickled `OrderedDict` (every `state_dict()` is one), so this is a small pickle machine
//! that knows the few globals torch.save writes (`OrderedDict`, `_rebuild_tensor_v2`,
//! `_rebuild_parameter`, the storage types) and keeps everything else as plain values, so a
//! training checkpoint's nested dicts, lists, strings and numbers come through as well.
//! Objects of other classes are kept as their constructor call, never executed. The file,
//! each archive entry and the pickle machine (`pickle.rs`) are bounded: a crafted file is an
//! error that names it, never a crash.

mod handlers;
mod opcode;
mod pickle;
mod view;

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use tch::{Kind, Tensor};

/// A value of the unpickled object tree.
#[derive(Debug)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    Tuple(Vec<Value>),
    /// Keys in insertion order, as Python dicts keep them.
    Dict(Vec<(Value, Value)>),
    Tensor(Tensor),
    /// A class or function named by a pickle GLOBAL (`module`, `name`).
    Global(String, String),
    /// A reference to a storage file: its element type and key.
    Storage(Kind, String),
    /// A call of a global this reader does not run, kept as (callable, arguments).
    Call(Box<Value>, Box<Value>),
}

impl Clone for Value {
    fn clone(&self) -> Self {
        match self {
            Value::None => Value::None,
            Value::Bool(b) => Value::Bool(*b),
            Value::Int(i) => Value::Int(*i),
            Value::Float(f) => Value::Float(*f),
            Value::Str(s) => Value::Str(s.clone()),
            Value::Bytes(b) => Value::Bytes(b.clone()),
            Value::List(v) => Value::List(v.clone()),
            Value::Tuple(v) => Value::Tuple(v.clone()),
            Value::Dict(v) => Value::Dict(v.clone()),
            Value::Tensor(t) => Value::Tensor(t.shallow_clone()),
            Value::Global(m, n) => Value::Global(m.clone(), n.clone()),
            Value::Storage(k, key) => Value::Storage(*k, key.clone()),
            Value::Call(f, a) => Value::Call(f.clone(), a.clone()),
        }
    }
}

impl Value {
    /// The value under string key `key` of a dict.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(items) => items.iter().find(|(k, _)| matches!(k, Value::Str(s) if s == key)).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Name → tensor, when this is a dict of string keys whose values are all tensors
    /// (a state dict); entries of other types (none in a real state dict) fail it.
    pub fn as_state_dict(&self) -> Option<Vec<(String, Tensor)>> {
        let Value::Dict(items) = self else { return None };
        if items.is_empty() {
            return None;
        }
        items
            .iter()
            .map(|(k, v)| match (k, v) {
                (Value::Str(name), Value::Tensor(t)) => Some((name.clone(), t.shallow_clone())),
                _ => None,
            })
            .collect()
    }

    /// As JSON (for configs and class lists inside checkpoints); tensors and objects are null.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::None | Value::Tensor(_) | Value::Global(..) | Value::Storage(..) | Value::Call(..) => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map(J::Number).unwrap_or(J::Null),
            Value::Str(s) => J::String(s.clone()),
            Value::Bytes(_) => J::Null,
            Value::List(v) | Value::Tuple(v) => J::Array(v.iter().map(Value::to_json).collect()),
            Value::Dict(items) => J::Object(
                items
                    .iter()
                    .filter_map(|(k, v)| match k {
                        Value::Str(s) => Some((s.clone(), v.to_json())),
                        Value::Int(i) => Some((i.to_string(), v.to_json())),
                        _ => None,
                    })
                    .collect(),
            ),
        }
    }
}

/// Largest `torch.save` file read, and most bytes its entries may inflate to in all (a
/// deflate bomb stops here); a training checkpoint of EfficientNet-B0 is about 100 MB.
pub const MAX_TORCH_FILE_BYTES: u64 = 4 << 30;

/// [`MAX_TORCH_FILE_BYTES`] as the cap on reading any model file.
pub const MODEL_FILE_CAP: imgtype_base::fsutil::ByteCap<'static> =
    imgtype_base::fsutil::ByteCap { max_bytes: MAX_TORCH_FILE_BYTES, name: "the 4 GiB a model file may have" };
/// Largest pickle (the object tree without the tensor data) read.
const MAX_PICKLE_BYTES: u64 = 256 << 20;

/// The object a `torch.save` file holds, tensors on the CPU. Errors name the file.
pub fn read_torch_file(path: &Path) -> Result<Value> {
    imgtype_base::fsutil::open_regular_file(path, "the file", MODEL_FILE_CAP)
        .and_then(|(file, metadata)| read_archive(file, &metadata))
        .with_context(|| format!("cannot read {}", path.display()))
}

/// As [`read_torch_file`] for a file already opened (by [`imgtype_base::fsutil::open_regular_file`])
/// and positioned at its start; `path` names it in errors.
pub fn read_opened_torch_file(path: &Path, file: std::fs::File, metadata: &std::fs::Metadata) -> Result<Value> {
    read_archive(file, metadata).with_context(|| format!("cannot read {}", path.display()))
}

fn read_archive(file: std::fs::File, metadata: &std::fs::Metadata) -> Result<Value> {
    let mut archive = zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(|e| {
        anyhow!(
            "not a torch.save file of PyTorch 1.6 or later (a zip archive): {e}; older files can be \
             re-saved with torch.save in any recent PyTorch"
        )
    })?;
    let pickle_name = archive
        .file_names()
        .map(str::to_string)
        .find(|name| name.ends_with("data.pkl") && name.matches('/').count() == 1)
        .ok_or_else(|| anyhow!("the archive has no data.pkl (not written by torch.save?)"))?;
    let prefix = pickle_name.trim_end_matches("data.pkl").to_string();
    // torch.save stores entries uncompressed; a re-zipped file of weights inflates to about
    // its own size. Far more than that is a deflate bomb, refused before memory runs out.
    let inflate_limit = metadata.len().saturating_mul(8).saturating_add(64 << 20).min(MAX_TORCH_FILE_BYTES);
    let mut budget = InflateBudget { left: inflate_limit };
    if let Ok(order) = archive.by_name(&format!("{prefix}byteorder")) {
        let text = String::from_utf8_lossy(&budget.read(order, 64)?).to_string();
        if text.trim() != "little" {
            bail!("tensors are stored {} endian; only little endian is read", text.trim());
        }
    }
    let pickle = budget.read(archive.by_name(&pickle_name)?, MAX_PICKLE_BYTES)?;
    let mut storages: HashMap<String, Tensor> = HashMap::new();
    let mut load_storage = |kind: Kind, key: &str| -> Result<Tensor> {
        if let Some(t) = storages.get(key) {
            return Ok(t.shallow_clone());
        }
        let entry = archive
            .by_name(&format!("{prefix}data/{key}"))
            .with_context(|| format!("storage {key} is missing from the archive"))?;
        let bytes = budget.read(entry, MAX_TORCH_FILE_BYTES)?;
        let element = kind.elt_size_in_bytes();
        if bytes.len() % element != 0 {
            bail!("storage {key} has {} bytes, not a whole number of {kind:?} elements", bytes.len());
        }
        let tensor = Tensor::f_from_data_size(&bytes, &[(bytes.len() / element) as i64], kind)?;
        storages.insert(key.to_string(), tensor.shallow_clone());
        Ok(tensor)
    };
    pickle::Unpickler::new(&pickle, &mut load_storage).run()
}

/// What the entries of one archive may still inflate to.
struct InflateBudget {
    left: u64,
}

impl InflateBudget {
    /// Reads a zip entry whole, refusing one that inflates past `max` or past the budget,
    /// whatever size its header declares.
    fn read(&mut self, entry: zip::read::ZipFile<'_>, max: u64) -> Result<Vec<u8>> {
        let name = entry.name().to_string();
        let limit = max.min(self.left);
        if entry.size() > limit {
            bail!("archive entry {name} inflates to {} bytes, more than the {limit} allowed", entry.size());
        }
        let mut bytes = Vec::new();
        entry
            .take(limit + 1)
            .read_to_end(&mut bytes)
            .with_context(|| format!("cannot inflate archive entry {name}"))?;
        if bytes.len() as u64 > limit {
            bail!("archive entry {name} inflates to more than the {limit} bytes allowed (a deflate bomb?)");
        }
        self.left -= bytes.len() as u64;
        Ok(bytes)
    }
}
