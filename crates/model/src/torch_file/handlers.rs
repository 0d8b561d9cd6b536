//! One small function per pickle opcode, on the machine of `pickle.rs` (its stack, memo and
//! budget), and the few globals `torch.save` writes that are run rather than kept.

use anyhow::{anyhow, bail, Result};

use super::opcode::Opcode;
use super::pickle::{check_depth, Node, Unpickler};
use super::view::{check_view, storage_kind};
use super::Value;

impl Unpickler<'_, '_> {
    pub(super) fn bin_int(&mut self) -> Result<()> {
        let v = i32::from_le_bytes(self.array()?);
        self.push_leaf(Value::Int(v as i64))
    }

    pub(super) fn bin_int1(&mut self) -> Result<()> {
        let v = self.u8()?;
        self.push_leaf(Value::Int(v as i64))
    }

    pub(super) fn bin_int2(&mut self) -> Result<()> {
        let v = u16::from_le_bytes(self.array()?);
        self.push_leaf(Value::Int(v as i64))
    }

    pub(super) fn long1(&mut self) -> Result<()> {
        let n = self.u8()? as usize;
        let bytes = self.take(n)?;
        if n > 8 {
            bail!("an integer of {n} bytes is too large");
        }
        let mut buffer = if bytes.last().is_some_and(|b| b & 0x80 != 0) { [0xff; 8] } else { [0; 8] };
        buffer[..n].copy_from_slice(bytes);
        self.push_leaf(Value::Int(i64::from_le_bytes(buffer)))
    }

    pub(super) fn bin_float(&mut self) -> Result<()> {
        let v = f64::from_be_bytes(self.array()?);
        self.push_leaf(Value::Float(v))
    }

    pub(super) fn text(&mut self, n: usize) -> Result<()> {
        let text = String::from_utf8_lossy(self.take(n)?).to_string();
        self.push_leaf(Value::Str(text))
    }

    pub(super) fn text_u32(&mut self) -> Result<()> {
        let n = self.u32()? as usize;
        self.text(n)
    }

    pub(super) fn text_u8(&mut self) -> Result<()> {
        let n = self.u8()? as usize;
        self.text(n)
    }

    pub(super) fn bytes_u32(&mut self) -> Result<()> {
        let n = self.u32()? as usize;
        let bytes = self.take(n)?.to_vec();
        self.push_leaf(Value::Bytes(bytes))
    }

    pub(super) fn bytes_u8(&mut self) -> Result<()> {
        let n = self.u8()? as usize;
        let bytes = self.take(n)?.to_vec();
        self.push_leaf(Value::Bytes(bytes))
    }

    pub(super) fn small_tuple(&mut self, op: Opcode) -> Result<()> {
        let n = match op {
            Opcode::Tuple1 => 1,
            Opcode::Tuple2 => 2,
            _ => 3,
        };
        if self.stack.len() < n {
            bail!("malformed pickle: tuple of {n} from a shorter stack");
        }
        let items = self.stack.split_off(self.stack.len() - n);
        self.push_container(items, |values| Ok(Value::Tuple(values)))
    }

    pub(super) fn tuple_from_mark(&mut self) -> Result<()> {
        let items = self.pop_mark()?;
        self.push_container(items, |values| Ok(Value::Tuple(values)))
    }

    pub(super) fn list_from_mark(&mut self) -> Result<()> {
        let items = self.pop_mark()?;
        self.push_container(items, |values| Ok(Value::List(values)))
    }

    pub(super) fn dict_from_mark(&mut self) -> Result<()> {
        let items = self.pop_mark()?;
        self.push_container(items, |values| Ok(Value::Dict(pairs(values)?)))
    }

    pub(super) fn append(&mut self) -> Result<()> {
        let item = self.pop()?;
        match self.grow_top(item.depth, item.size)? {
            Value::List(list) => list.push(item.value),
            _ => bail!("malformed pickle: APPEND to a non-list"),
        }
        Ok(())
    }

    pub(super) fn appends(&mut self) -> Result<()> {
        let items = self.pop_mark()?;
        let (depth, size) = depth_and_size(&items);
        match self.grow_top(depth, size)? {
            Value::List(list) => list.extend(items.into_iter().map(|n| n.value)),
            _ => bail!("malformed pickle: APPENDS to a non-list"),
        }
        Ok(())
    }

    pub(super) fn set_item(&mut self) -> Result<()> {
        let value = self.pop()?;
        let key = self.pop()?;
        let (depth, size) = depth_and_size(&[key.clone_shallow(), value.clone_shallow()]);
        set_items(self.grow_top(depth, size)?, vec![(key.value, value.value)])
    }

    pub(super) fn set_items(&mut self) -> Result<()> {
        let items = self.pop_mark()?;
        let (depth, size) = depth_and_size(&items);
        let items = pairs(items.into_iter().map(|n| n.value).collect())?;
        set_items(self.grow_top(depth, size)?, items)
    }

    pub(super) fn memo_put(&mut self, index: u32) -> Result<()> {
        let top = self.stack.last().ok_or_else(|| anyhow!("malformed pickle: empty stack"))?.clone();
        self.count(top.size)?;
        self.memo.insert(index, top);
        Ok(())
    }

    pub(super) fn memo_get(&mut self, index: u32) -> Result<()> {
        let node = self.memo.get(&index).ok_or_else(|| anyhow!("malformed pickle: memo {index} unset"))?;
        let size = node.size;
        self.count(size)?;
        let node = self.memo[&index].clone();
        self.stack.push(node);
        Ok(())
    }

    pub(super) fn global(&mut self) -> Result<()> {
        let module = self.line()?;
        let name = self.line()?;
        self.push_leaf(Value::Global(module, name))
    }

    pub(super) fn stack_global(&mut self) -> Result<()> {
        let name = self.pop()?.value;
        let module = self.pop()?.value;
        match (module, name) {
            (Value::Str(m), Value::Str(n)) => self.push_leaf(Value::Global(m, n)),
            _ => bail!("malformed pickle: STACK_GLOBAL needs two strings"),
        }
    }

    /// torch.save's persistent ids: ('storage', storage type, key, location, numel).
    pub(super) fn persistent_id(&mut self) -> Result<()> {
        let id = self.pop()?.value;
        let Value::Tuple(items) = id else { bail!("unexpected persistent id (not a tuple)") };
        match items.as_slice() {
            [Value::Str(tag), Value::Global(_, type_name), Value::Str(key), ..] if tag == "storage" => {
                let kind = storage_kind(type_name)
                    .ok_or_else(|| anyhow!("tensors of storage type {type_name} are not supported"))?;
                self.push_leaf(Value::Storage(kind, key.clone()))
            }
            _ => bail!("unexpected persistent id (not a storage)"),
        }
    }

    pub(super) fn reduce(&mut self) -> Result<()> {
        let args = self.pop()?;
        let callable = self.pop()?;
        let depth = args.depth.max(callable.depth) + 1;
        check_depth(depth)?;
        let size = args.size + callable.size + 1;
        let value = self.call(callable.value, args.value)?;
        self.count(1)?;
        self.stack.push(Node { value, depth, size });
        Ok(())
    }

    /// The few globals torch.save writes are run; any other call is kept, never executed.
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

    /// `_rebuild_tensor_v2(storage, storage_offset, size, stride, …)`, the view checked to lie
    /// inside its storage before tch sees it.
    fn rebuild_tensor(&mut self, args: &[Value]) -> Result<Value> {
        let [Value::Storage(kind, key), Value::Int(offset), size, stride, ..] = args else {
            bail!("unexpected _rebuild_tensor arguments");
        };
        let (size, stride) = (int_list(size)?, int_list(stride)?);
        let storage = (self.load_storage)(*kind, key)?;
        let available = storage.numel() as i64;
        check_view(*offset, &size, &stride, available).map_err(|e| anyhow!("tensor on storage {key}: {e}"))?;
        let tensor = storage.f_as_strided(&size, &stride, *offset)?.f_contiguous()?;
        Ok(Value::Tensor(tensor))
    }
}

fn depth_and_size(nodes: &[Node]) -> (u32, u64) {
    (nodes.iter().map(|n| n.depth).max().unwrap_or(0), nodes.iter().map(|n| n.size).sum())
}

fn int_list(value: &Value) -> Result<Vec<i64>> {
    match value {
        Value::Tuple(items) | Value::List(items) => items
            .iter()
            .map(|i| match i {
                Value::Int(i) => Ok(*i),
                _ => bail!("a tensor size or stride holds a value that is not an integer"),
            })
            .collect(),
        _ => bail!("a tensor size or stride is not a tuple of integers"),
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
