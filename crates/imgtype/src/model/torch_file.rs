//! Reads `torch.save` files without Python: a zip holding `<name>/data.pkl` (a pickle) and
//! one `<name>/data/<key>` file per tensor storage. libtorch's C++ reader cannot read a
//! pickled `OrderedDict` (every `state_dict()` is one), so this is a small pickle machine
//! that knows the few globals torch.save writes (`OrderedDict`, `_rebuild_tensor_v2`,
//! `_rebuild_parameter`, the storage types) and keeps everything else as plain values, so a
//! training checkpoint's nested dicts, lists, strings and numbers come through as well.
//! Objects of other classes are kept as their constructor call, never executed.

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

/// The object a `torch.save` file holds, tensors on the CPU.
pub fn read_torch_file(path: &Path) -> Result<Value> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut archive = zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(|e| {
        anyhow!(
            "{}: not a torch.save file of PyTorch 1.6 or later (a zip archive): {e}; older files can be \
             re-saved with torch.save in any recent PyTorch",
            path.display()
        )
    })?;
    let pickle_name = archive
        .file_names()
        .map(str::to_string)
        .find(|name| name.ends_with("data.pkl") && name.matches('/').count() == 1)
        .ok_or_else(|| anyhow!("{}: the archive has no data.pkl (not written by torch.save?)", path.display()))?;
    let prefix = pickle_name.trim_end_matches("data.pkl").to_string();
    if let Ok(mut order) = archive.by_name(&format!("{prefix}byteorder")) {
        let mut text = String::new();
        order.read_to_string(&mut text)?;
        if text.trim() != "little" {
            bail!("{}: tensors are stored {} endian; only little endian is read", path.display(), text.trim());
        }
    }
    let mut pickle = Vec::new();
    archive.by_name(&pickle_name)?.read_to_end(&mut pickle)?;
    let mut storages: HashMap<String, Tensor> = HashMap::new();
    let mut load_storage = |kind: Kind, key: &str| -> Result<Tensor> {
        if let Some(t) = storages.get(key) {
            return Ok(t.shallow_clone());
        }
        let mut bytes = Vec::new();
        archive
            .by_name(&format!("{prefix}data/{key}"))
            .with_context(|| format!("storage {key} is missing from the archive"))?
            .read_to_end(&mut bytes)?;
        let element = kind.elt_size_in_bytes();
        if bytes.len() % element != 0 {
            bail!("storage {key} has {} bytes, not a whole number of {kind:?} elements", bytes.len());
        }
        let tensor = Tensor::from_data_size(&bytes, &[(bytes.len() / element) as i64], kind);
        storages.insert(key.to_string(), tensor.shallow_clone());
        Ok(tensor)
    };
    Unpickler::new(&pickle, &mut load_storage).run().with_context(|| format!("cannot read {}", path.display()))
}

fn storage_kind(name: &str) -> Option<Kind> {
    Some(match name {
        "FloatStorage" => Kind::Float,
        "DoubleStorage" => Kind::Double,
        "HalfStorage" => Kind::Half,
        "BFloat16Storage" => Kind::BFloat16,
        "LongStorage" => Kind::Int64,
        "IntStorage" => Kind::Int,
        "ShortStorage" => Kind::Int16,
        "CharStorage" => Kind::Int8,
        "ByteStorage" => Kind::Uint8,
        "BoolStorage" => Kind::Bool,
        _ => return None,
    })
}

type StorageLoader<'a> = dyn FnMut(Kind, &str) -> Result<Tensor> + 'a;

struct Unpickler<'a, 'b> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    load_storage: &'a mut StorageLoader<'b>,
}

impl<'a, 'b> Unpickler<'a, 'b> {
    fn new(data: &'a [u8], load_storage: &'a mut StorageLoader<'b>) -> Self {
        Self { data, pos: 0, stack: Vec::new(), marks: Vec::new(), memo: HashMap::new(), load_storage }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let end = end.ok_or_else(|| anyhow!("the pickle ends early (truncated file?)"))?;
        let bytes = &self.data[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn line(&mut self) -> Result<String> {
        let rest = &self.data[self.pos..];
        let end = rest.iter().position(|&b| b == b'\n').ok_or_else(|| anyhow!("the pickle ends early"))?;
        let text = String::from_utf8_lossy(&rest[..end]).to_string();
        self.pos += end + 1;
        Ok(text)
    }

    fn pop(&mut self) -> Result<Value> {
        self.stack.pop().ok_or_else(|| anyhow!("malformed pickle: pop from an empty stack"))
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let mark = self.marks.pop().ok_or_else(|| anyhow!("malformed pickle: no mark"))?;
        if mark > self.stack.len() {
            bail!("malformed pickle: mark beyond the stack");
        }
        Ok(self.stack.split_off(mark))
    }

    fn top(&mut self) -> Result<&mut Value> {
        self.stack.last_mut().ok_or_else(|| anyhow!("malformed pickle: empty stack"))
    }

    fn string(&mut self, n: usize) -> Result<Value> {
        Ok(Value::Str(String::from_utf8_lossy(self.take(n)?).to_string()))
    }

    fn run(mut self) -> Result<Value> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    self.u8()?; // PROTO
                }
                0x95 => {
                    self.take(8)?; // FRAME
                }
                b'.' => return self.pop(),
                b'(' => self.marks.push(self.stack.len()),
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'J' => {
                    let v = i32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes"));
                    self.stack.push(Value::Int(v as i64));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(v as i64));
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes"));
                    self.stack.push(Value::Int(v as i64));
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    let bytes = self.take(n)?;
                    if n > 8 {
                        bail!("an integer of {n} bytes is too large");
                    }
                    let mut buffer = if bytes.last().is_some_and(|b| b & 0x80 != 0) { [0xff; 8] } else { [0; 8] };
                    buffer[..n].copy_from_slice(bytes);
                    self.stack.push(Value::Int(i64::from_le_bytes(buffer)));
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes"));
                    self.stack.push(Value::Float(v));
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let s = self.string(n)?;
                    self.stack.push(s);
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let s = self.string(n)?;
                    self.stack.push(s);
                }
                b'T' | b'B' => {
                    let n = self.u32()? as usize;
                    let bytes = self.take(n)?.to_vec();
                    self.stack.push(if op == b'T' {
                        Value::Str(String::from_utf8_lossy(&bytes).into())
                    } else {
                        Value::Bytes(bytes)
                    });
                }
                b'U' | b'C' => {
                    let n = self.u8()? as usize;
                    let bytes = self.take(n)?.to_vec();
                    self.stack.push(if op == b'U' {
                        Value::Str(String::from_utf8_lossy(&bytes).into())
                    } else {
                        Value::Bytes(bytes)
                    });
                }
                b')' => self.stack.push(Value::Tuple(Vec::new())),
                0x85 | 0x86 | 0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        bail!("malformed pickle: tuple of {n} from a shorter stack");
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Value::Tuple(items));
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(items));
                }
                b']' => self.stack.push(Value::List(Vec::new())),
                b'l' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::List(items));
                }
                b'}' => self.stack.push(Value::Dict(Vec::new())),
                b'd' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Dict(pairs(items)?));
                }
                b'a' => {
                    let item = self.pop()?;
                    match self.top()? {
                        Value::List(list) => list.push(item),
                        _ => bail!("malformed pickle: APPEND to a non-list"),
                    }
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    match self.top()? {
                        Value::List(list) => list.extend(items),
                        _ => bail!("malformed pickle: APPENDS to a non-list"),
                    }
                }
                b's' => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    set_items(self.top()?, vec![(key, value)])?;
                }
                b'u' => {
                    let items = pairs(self.pop_mark()?)?;
                    set_items(self.top()?, items)?;
                }
                b'q' => {
                    let index = self.u8()? as u32;
                    let value = self.top()?.clone();
                    self.memo.insert(index, value);
                }
                b'r' => {
                    let index = self.u32()?;
                    let value = self.top()?.clone();
                    self.memo.insert(index, value);
                }
                0x94 => {
                    let index = self.memo.len() as u32;
                    let value = self.top()?.clone();
                    self.memo.insert(index, value);
                }
                b'h' | b'j' => {
                    let index = if op == b'h' { self.u8()? as u32 } else { self.u32()? };
                    let value = self.memo.get(&index).ok_or_else(|| anyhow!("malformed pickle: memo {index} unset"))?;
                    self.stack.push(value.clone());
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.stack.push(Value::Global(module, name));
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => self.stack.push(Value::Global(m, n)),
                        _ => bail!("malformed pickle: STACK_GLOBAL needs two strings"),
                    }
                }
                b'Q' => {
                    let id = self.pop()?;
                    let value = self.persistent_load(id)?;
                    self.stack.push(value);
                }
                b'R' | 0x81 => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let value = self.call(callable, args)?;
                    self.stack.push(value);
                }
                b'b' => {
                    // BUILD: instance state (an OrderedDict's `_metadata`, say) is not needed.
                    self.pop()?;
                }
                other => bail!("unsupported pickle opcode 0x{other:02x} at byte {}", self.pos - 1),
            }
        }
    }

    /// torch.save's persistent ids: ('storage', storage type, key, location, numel).
    fn persistent_load(&mut self, id: Value) -> Result<Value> {
        let Value::Tuple(items) = id else { bail!("unexpected persistent id {id:?}") };
        match items.as_slice() {
            [Value::Str(tag), Value::Global(_, type_name), Value::Str(key), ..] if tag == "storage" => {
                let kind = storage_kind(type_name)
                    .ok_or_else(|| anyhow!("tensors of storage type {type_name} are not supported"))?;
                Ok(Value::Storage(kind, key.clone()))
            }
            _ => bail!("unexpected persistent id {items:?}"),
        }
    }

    fn call(&mut self, callable: Value, args: Value) -> Result<Value> {
        let Value::Global(module, name) = &callable else {
            return Ok(Value::Call(Box::new(callable), Box::new(args)));
        };
        let args = match args {
            Value::Tuple(items) => items,
            other => return Ok(Value::Call(Box::new(callable), Box::new(other))),
        };
        match (module.as_str(), name.as_str()) {
            ("collections", "OrderedDict") | ("builtins", "dict") | ("__builtin__", "dict") if args.is_empty() => {
                Ok(Value::Dict(Vec::new()))
            }
            ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => self.rebuild_tensor(&args),
            ("torch._utils", "_rebuild_parameter") | ("torch._utils", "_rebuild_parameter_with_state") => {
                args.into_iter().next().ok_or_else(|| anyhow!("_rebuild_parameter without data"))
            }
            _ => Ok(Value::Call(Box::new(callable), Box::new(Value::Tuple(args)))),
        }
    }

    /// `_rebuild_tensor_v2(storage, storage_offset, size, stride, …)`.
    fn rebuild_tensor(&mut self, args: &[Value]) -> Result<Value> {
        let ints = |v: &Value| -> Result<Vec<i64>> {
            match v {
                Value::Tuple(items) | Value::List(items) => items
                    .iter()
                    .map(|i| match i {
                        Value::Int(i) => Ok(*i),
                        other => bail!("a tensor size or stride holds {other:?}"),
                    })
                    .collect(),
                other => bail!("a tensor size or stride is {other:?}"),
            }
        };
        match args {
            [Value::Storage(kind, key), Value::Int(offset), size, stride, ..] => {
                let storage = (self.load_storage)(*kind, key)?;
                let (size, stride) = (ints(size)?, ints(stride)?);
                let needed = *offset
                    + size.iter().zip(&stride).map(|(s, st)| (s - 1).max(0) * st).sum::<i64>()
                    + i64::from(size.iter().all(|&s| s > 0));
                if needed > storage.numel() as i64 {
                    bail!("a tensor of size {size:?} reaches past its storage {key}");
                }
                Ok(Value::Tensor(storage.as_strided(&size, &stride, *offset).contiguous()))
            }
            _ => bail!("unexpected _rebuild_tensor arguments"),
        }
    }
}

fn pairs(items: Vec<Value>) -> Result<Vec<(Value, Value)>> {
    if items.len() % 2 != 0 {
        bail!("malformed pickle: an odd number of dict items");
    }
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut iter = items.into_iter();
    while let (Some(k), Some(v)) = (iter.next(), iter.next()) {
        out.push((k, v));
    }
    Ok(out)
}

fn set_items(target: &mut Value, items: Vec<(Value, Value)>) -> Result<()> {
    match target {
        Value::Dict(dict) => {
            dict.extend(items);
            Ok(())
        }
        // An object of a class this reader does not build: its items are not needed.
        Value::Call(..) => Ok(()),
        _ => bail!("malformed pickle: SETITEM on a non-dict"),
    }
}
