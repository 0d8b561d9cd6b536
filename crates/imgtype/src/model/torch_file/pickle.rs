//! The pickle machine: one named opcode per instruction, one small function per opcode (as
//! candle's `pickle.rs`), run in a loop over the bytes: nothing recurses on the input's
//! nesting. Every value on the stack carries its nesting depth and its size in values, so a
//! pickle that nests deeper than [`MAX_DEPTH`] or that copies memo entries into more than
//! [`MAX_VALUES`] values in all (a "billion laughs" of memo references) is refused before it
//! is built; tensors are checked against their storage before any tch call.

use std::collections::HashMap;

use anyhow::{anyhow, bail, Result};
use tch::{Kind, Tensor};

use super::Value;

/// Deepest nesting of lists, tuples, dicts and calls accepted. A state dict nests 3 deep, a
/// training checkpoint about 6; Python's own unpickler stops near 1000.
pub const MAX_DEPTH: u32 = 200;
/// Most values (each element of each container, memo copies included) one pickle may build.
pub const MAX_VALUES: u64 = 2_000_000;
/// Most dimensions of a tensor.
const MAX_DIMS: usize = 16;

/// Loads a storage (element type, key in the archive) as a flat CPU tensor.
pub type StorageLoader<'a> = dyn FnMut(Kind, &str) -> Result<Tensor> + 'a;

/// The opcodes of pickle protocols 0–5 that `torch.save` writes (and a few neighbours).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opcode {
    Proto,
    Frame,
    Stop,
    Mark,
    None,
    NewTrue,
    NewFalse,
    BinInt,
    BinInt1,
    BinInt2,
    Long1,
    BinFloat,
    BinUnicode,
    ShortBinUnicode,
    BinString,
    BinBytes,
    ShortBinString,
    ShortBinBytes,
    EmptyTuple,
    Tuple1,
    Tuple2,
    Tuple3,
    Tuple,
    EmptyList,
    List,
    EmptyDict,
    Dict,
    Append,
    Appends,
    SetItem,
    SetItems,
    BinPut,
    LongBinPut,
    Memoize,
    BinGet,
    LongBinGet,
    Global,
    StackGlobal,
    BinPersId,
    Reduce,
    NewObj,
    Build,
}

impl Opcode {
    fn from_byte(byte: u8) -> Option<Self> {
        use Opcode::*;
        Some(match byte {
            0x80 => Proto,
            0x95 => Frame,
            b'.' => Stop,
            b'(' => Mark,
            b'N' => None,
            0x88 => NewTrue,
            0x89 => NewFalse,
            b'J' => BinInt,
            b'K' => BinInt1,
            b'M' => BinInt2,
            0x8a => Long1,
            b'G' => BinFloat,
            b'X' => BinUnicode,
            0x8c => ShortBinUnicode,
            b'T' => BinString,
            b'B' => BinBytes,
            b'U' => ShortBinString,
            b'C' => ShortBinBytes,
            b')' => EmptyTuple,
            0x85 => Tuple1,
            0x86 => Tuple2,
            0x87 => Tuple3,
            b't' => Tuple,
            b']' => EmptyList,
            b'l' => List,
            b'}' => EmptyDict,
            b'd' => Dict,
            b'a' => Append,
            b'e' => Appends,
            b's' => SetItem,
            b'u' => SetItems,
            b'q' => BinPut,
            b'r' => LongBinPut,
            0x94 => Memoize,
            b'h' => BinGet,
            b'j' => LongBinGet,
            b'c' => Global,
            0x93 => StackGlobal,
            b'Q' => BinPersId,
            b'R' => Reduce,
            0x81 => NewObj,
            b'b' => Build,
            _ => return Option::None,
        })
    }
}

/// A value with what it costs: how deep it nests and how many values it holds.
#[derive(Clone)]
struct Node {
    value: Value,
    depth: u32,
    size: u64,
}

impl Node {
    fn leaf(value: Value) -> Self {
        Self { value, depth: 0, size: 1 }
    }
}

pub struct Unpickler<'a, 'b> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Node>,
    marks: Vec<usize>,
    memo: HashMap<u32, Node>,
    /// Values built so far, memo copies included.
    built: u64,
    load_storage: &'a mut StorageLoader<'b>,
}

impl<'a, 'b> Unpickler<'a, 'b> {
    pub fn new(data: &'a [u8], load_storage: &'a mut StorageLoader<'b>) -> Self {
        Self { data, pos: 0, stack: Vec::new(), marks: Vec::new(), memo: HashMap::new(), built: 0, load_storage }
    }

    /// Runs the pickle to its STOP and returns the object it built.
    pub fn run(mut self) -> Result<Value> {
        loop {
            let at = self.pos;
            let byte = self.u8()?;
            let op = Opcode::from_byte(byte)
                .ok_or_else(|| anyhow!("unsupported pickle opcode 0x{byte:02x} at byte {at}"))?;
            if op == Opcode::Stop {
                return Ok(self.pop()?.value);
            }
            self.step(op).map_err(|e| e.context(format!("pickle opcode {op:?} at byte {at}")))?;
        }
    }

    fn step(&mut self, op: Opcode) -> Result<()> {
        use Opcode::*;
        match op {
            Proto => self.skip(1),
            Frame => self.skip(8),
            Stop => unreachable!("handled by run"),
            Mark => {
                self.marks.push(self.stack.len());
                Ok(())
            }
            None => self.push_leaf(Value::None),
            NewTrue => self.push_leaf(Value::Bool(true)),
            NewFalse => self.push_leaf(Value::Bool(false)),
            BinInt => self.bin_int(),
            BinInt1 => self.bin_int1(),
            BinInt2 => self.bin_int2(),
            Long1 => self.long1(),
            BinFloat => self.bin_float(),
            BinUnicode | BinString => self.text_u32(),
            ShortBinUnicode | ShortBinString => self.text_u8(),
            BinBytes => self.bytes_u32(),
            ShortBinBytes => self.bytes_u8(),
            EmptyTuple => self.push_leaf(Value::Tuple(Vec::new())),
            Tuple1 | Tuple2 | Tuple3 => self.small_tuple(op),
            Tuple => self.tuple_from_mark(),
            EmptyList => self.push_leaf(Value::List(Vec::new())),
            List => self.list_from_mark(),
            EmptyDict => self.push_leaf(Value::Dict(Vec::new())),
            Dict => self.dict_from_mark(),
            Append => self.append(),
            Appends => self.appends(),
            SetItem => self.set_item(),
            SetItems => self.set_items(),
            BinPut => {
                let index = self.u8()? as u32;
                self.memo_put(index)
            }
            LongBinPut => {
                let index = self.u32()?;
                self.memo_put(index)
            }
            Memoize => self.memo_put(self.memo.len() as u32),
            BinGet => {
                let index = self.u8()? as u32;
                self.memo_get(index)
            }
            LongBinGet => {
                let index = self.u32()?;
                self.memo_get(index)
            }
            Global => self.global(),
            StackGlobal => self.stack_global(),
            BinPersId => self.persistent_id(),
            Reduce | NewObj => self.reduce(),
            // BUILD: instance state (an OrderedDict's `_metadata`, say) is not needed.
            Build => self.pop().map(drop),
        }
    }

    // Reading the bytes.

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let end = end.ok_or_else(|| anyhow!("the pickle ends early (truncated file?)"))?;
        let bytes = &self.data[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn skip(&mut self, n: usize) -> Result<()> {
        self.take(n).map(drop)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn line(&mut self) -> Result<String> {
        let rest = &self.data[self.pos..];
        let end = rest.iter().position(|&b| b == b'\n').ok_or_else(|| anyhow!("the pickle ends early"))?;
        let text = String::from_utf8_lossy(&rest[..end]).to_string();
        self.pos += end + 1;
        Ok(text)
    }

    // The stack, with the depth and size budget.

    fn count(&mut self, size: u64) -> Result<()> {
        self.built = self.built.saturating_add(size);
        if self.built > MAX_VALUES {
            bail!("the pickle builds more than {MAX_VALUES} values (a pickle bomb?)");
        }
        Ok(())
    }

    fn push_leaf(&mut self, value: Value) -> Result<()> {
        self.count(1)?;
        self.stack.push(Node::leaf(value));
        Ok(())
    }

    /// A container of `children`, made by `make`, within the depth limit.
    fn push_container(&mut self, children: Vec<Node>, make: impl FnOnce(Vec<Value>) -> Result<Value>) -> Result<()> {
        let depth = children.iter().map(|c| c.depth + 1).max().unwrap_or(0);
        check_depth(depth)?;
        let size = 1 + children.iter().map(|c| c.size).sum::<u64>();
        self.count(1)?;
        let value = make(children.into_iter().map(|c| c.value).collect())?;
        self.stack.push(Node { value, depth, size });
        Ok(())
    }

    fn pop(&mut self) -> Result<Node> {
        self.stack.pop().ok_or_else(|| anyhow!("malformed pickle: pop from an empty stack"))
    }

    fn pop_mark(&mut self) -> Result<Vec<Node>> {
        let mark = self.marks.pop().ok_or_else(|| anyhow!("malformed pickle: no mark"))?;
        if mark > self.stack.len() {
            bail!("malformed pickle: mark beyond the stack");
        }
        Ok(self.stack.split_off(mark))
    }

    /// The top of the stack, grown by `added` (children of depth `child_depth`).
    fn grow_top(&mut self, child_depth: u32, added: u64) -> Result<&mut Value> {
        let top = self.stack.last_mut().ok_or_else(|| anyhow!("malformed pickle: empty stack"))?;
        top.depth = top.depth.max(child_depth + 1);
        check_depth(top.depth)?;
        top.size = top.size.saturating_add(added);
        Ok(&mut top.value)
    }

    // One function per opcode.

    fn bin_int(&mut self) -> Result<()> {
        let v = i32::from_le_bytes(self.array()?);
        self.push_leaf(Value::Int(v as i64))
    }

    fn bin_int1(&mut self) -> Result<()> {
        let v = self.u8()?;
        self.push_leaf(Value::Int(v as i64))
    }

    fn bin_int2(&mut self) -> Result<()> {
        let v = u16::from_le_bytes(self.array()?);
        self.push_leaf(Value::Int(v as i64))
    }

    fn long1(&mut self) -> Result<()> {
        let n = self.u8()? as usize;
        let bytes = self.take(n)?;
        if n > 8 {
            bail!("an integer of {n} bytes is too large");
        }
        let mut buffer = if bytes.last().is_some_and(|b| b & 0x80 != 0) { [0xff; 8] } else { [0; 8] };
        buffer[..n].copy_from_slice(bytes);
        self.push_leaf(Value::Int(i64::from_le_bytes(buffer)))
    }

    fn bin_float(&mut self) -> Result<()> {
        let v = f64::from_be_bytes(self.array()?);
        self.push_leaf(Value::Float(v))
    }

    fn text(&mut self, n: usize) -> Result<()> {
        let text = String::from_utf8_lossy(self.take(n)?).to_string();
        self.push_leaf(Value::Str(text))
    }

    fn text_u32(&mut self) -> Result<()> {
        let n = self.u32()? as usize;
        self.text(n)
    }

    fn text_u8(&mut self) -> Result<()> {
        let n = self.u8()? as usize;
        self.text(n)
    }

    fn bytes_u32(&mut self) -> Result<()> {
        let n = self.u32()? as usize;
        let bytes = self.take(n)?.to_vec();
        self.push_leaf(Value::Bytes(bytes))
    }

    fn bytes_u8(&mut self) -> Result<()> {
        let n = self.u8()? as usize;
        let bytes = self.take(n)?.to_vec();
        self.push_leaf(Value::Bytes(bytes))
    }

    fn small_tuple(&mut self, op: Opcode) -> Result<()> {
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

    fn tuple_from_mark(&mut self) -> Result<()> {
        let items = self.pop_mark()?;
        self.push_container(items, |values| Ok(Value::Tuple(values)))
    }

    fn list_from_mark(&mut self) -> Result<()> {
        let items = self.pop_mark()?;
        self.push_container(items, |values| Ok(Value::List(values)))
    }

    fn dict_from_mark(&mut self) -> Result<()> {
        let items = self.pop_mark()?;
        self.push_container(items, |values| Ok(Value::Dict(pairs(values)?)))
    }

    fn append(&mut self) -> Result<()> {
        let item = self.pop()?;
        match self.grow_top(item.depth, item.size)? {
            Value::List(list) => list.push(item.value),
            _ => bail!("malformed pickle: APPEND to a non-list"),
        }
        Ok(())
    }

    fn appends(&mut self) -> Result<()> {
        let items = self.pop_mark()?;
        let (depth, size) = depth_and_size(&items);
        match self.grow_top(depth, size)? {
            Value::List(list) => list.extend(items.into_iter().map(|n| n.value)),
            _ => bail!("malformed pickle: APPENDS to a non-list"),
        }
        Ok(())
    }

    fn set_item(&mut self) -> Result<()> {
        let value = self.pop()?;
        let key = self.pop()?;
        let (depth, size) = depth_and_size(&[key.clone_shallow(), value.clone_shallow()]);
        set_items(self.grow_top(depth, size)?, vec![(key.value, value.value)])
    }

    fn set_items(&mut self) -> Result<()> {
        let items = self.pop_mark()?;
        let (depth, size) = depth_and_size(&items);
        let items = pairs(items.into_iter().map(|n| n.value).collect())?;
        set_items(self.grow_top(depth, size)?, items)
    }

    fn memo_put(&mut self, index: u32) -> Result<()> {
        let top = self.stack.last().ok_or_else(|| anyhow!("malformed pickle: empty stack"))?.clone();
        self.count(top.size)?;
        self.memo.insert(index, top);
        Ok(())
    }

    fn memo_get(&mut self, index: u32) -> Result<()> {
        let node = self.memo.get(&index).ok_or_else(|| anyhow!("malformed pickle: memo {index} unset"))?;
        let size = node.size;
        self.count(size)?;
        let node = self.memo[&index].clone();
        self.stack.push(node);
        Ok(())
    }

    fn global(&mut self) -> Result<()> {
        let module = self.line()?;
        let name = self.line()?;
        self.push_leaf(Value::Global(module, name))
    }

    fn stack_global(&mut self) -> Result<()> {
        let name = self.pop()?.value;
        let module = self.pop()?.value;
        match (module, name) {
            (Value::Str(m), Value::Str(n)) => self.push_leaf(Value::Global(m, n)),
            _ => bail!("malformed pickle: STACK_GLOBAL needs two strings"),
        }
    }

    /// torch.save's persistent ids: ('storage', storage type, key, location, numel).
    fn persistent_id(&mut self) -> Result<()> {
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

    fn reduce(&mut self) -> Result<()> {
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

impl Node {
    /// Depth and size only (for budget sums); the value is not copied.
    fn clone_shallow(&self) -> Node {
        Node { value: Value::None, depth: self.depth, size: self.size }
    }
}

fn check_depth(depth: u32) -> Result<()> {
    if depth > MAX_DEPTH {
        bail!("the pickle nests deeper than {MAX_DEPTH} levels");
    }
    Ok(())
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

/// A strided view of `available` elements: non-negative offset, sizes and strides of equal
/// count, every element inside the storage, and no more elements than the storage holds
/// (an expanded view would be materialised by `contiguous`). Checked arithmetic throughout.
pub fn check_view(offset: i64, size: &[i64], stride: &[i64], available: i64) -> std::result::Result<(), String> {
    if size.len() != stride.len() {
        return Err(format!("{} sizes but {} strides", size.len(), stride.len()));
    }
    if size.len() > MAX_DIMS {
        return Err(format!("{} dimensions (at most {MAX_DIMS})", size.len()));
    }
    if offset < 0 || size.iter().chain(stride).any(|&v| v < 0) {
        return Err(format!("negative offset, size or stride (offset {offset}, size {size:?}, stride {stride:?})"));
    }
    let overflow = || format!("size {size:?} with stride {stride:?} overflows");
    let numel = size.iter().try_fold(1i64, |n, &s| n.checked_mul(s)).ok_or_else(overflow)?;
    if numel == 0 {
        return if offset <= available { Ok(()) } else { Err(format!("offset {offset} is past the storage")) };
    }
    let last = size
        .iter()
        .zip(stride)
        .try_fold(offset, |end, (&s, &st)| end.checked_add((s - 1).checked_mul(st)?))
        .ok_or_else(overflow)?;
    if last >= available {
        return Err(format!("size {size:?}, stride {stride:?} at offset {offset} reach past its {available} elements"));
    }
    if numel > available {
        return Err(format!("{numel} elements from a storage of {available} (an expanded view)"));
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn run(pickle: &[u8]) -> Result<Value> {
        let mut no_storage = |_: Kind, key: &str| -> Result<Tensor> { bail!("no storage {key}") };
        Unpickler::new(pickle, &mut no_storage).run()
    }

    #[test]
    fn deep_nesting_is_refused_without_recursion() {
        let mut pickle = vec![0x80, 2];
        pickle.extend(std::iter::repeat_n(b']', 1_000_000));
        pickle.extend(std::iter::repeat_n(b'a', 999_999));
        pickle.push(b'.');
        let err = format!("{:#}", run(&pickle).unwrap_err());
        assert!(err.contains("deeper than 200"), "{err}");
        let mut tuples = vec![0x80, 2, b'N'];
        tuples.extend(std::iter::repeat_n(0x85, 1_000_000));
        tuples.push(b'.');
        assert!(format!("{:#}", run(&tuples).unwrap_err()).contains("deeper than 200"));
    }

    #[test]
    fn memo_copies_count_against_the_budget() {
        // A list of 10 copies of the memoised list before it, 30 times: 10^30 values.
        let mut pickle = vec![0x80, 2, b']', b'N', b'a', b'q', 0];
        for level in 0..30u8 {
            pickle.push(b'(');
            pickle.extend(std::iter::repeat_n([b'h', level], 10).flatten());
            pickle.extend([b'l', b'q', level + 1]);
        }
        pickle.push(b'.');
        assert!(pickle.len() < 1000);
        let started = std::time::Instant::now();
        let err = format!("{:#}", run(&pickle).unwrap_err());
        assert!(err.contains("more than 2000000 values"), "{err}");
        assert!(started.elapsed().as_secs() < 10);
    }

    #[test]
    fn views_outside_their_storage_are_refused() {
        assert!(check_view(0, &[2, 3], &[3, 1], 6).is_ok());
        assert!(check_view(0, &[0], &[1], 0).is_ok());
        assert!(check_view(5, &[1], &[1], 6).is_ok());
        for (offset, size, stride) in [
            (-8i64, vec![2i64], vec![1i64]),
            (0, vec![2], vec![-1]),
            (0, vec![-5], vec![1]),
            (0, vec![1 << 62], vec![1]),
            (0, vec![1 << 40, 1 << 40], vec![1, 1]),
            (0, vec![1 << 40], vec![0]),
            (6, vec![1], vec![1]),
            (0, vec![2, 3], vec![3]),
            (0, vec![2], vec![i64::MAX]),
        ] {
            assert!(check_view(offset, &size, &stride, 6).is_err(), "{offset} {size:?} {stride:?}");
        }
    }

    #[test]
    fn unknown_opcodes_name_their_byte() {
        let err = format!("{:#}", run(&[0x80, 2, 0xff]).unwrap_err());
        assert!(err.contains("opcode 0xff at byte 2"), "{err}");
    }
}
