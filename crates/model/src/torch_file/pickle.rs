//! The pickle machine: one named opcode per instruction, one small function per opcode (as
//! candle's `pickle.rs`), run in a loop over the bytes: nothing recurses on the input's
//! nesting. Every value on the stack carries its nesting depth and its size in values, so a
//! pickle that nests deeper than [`MAX_DEPTH`] or that copies memo entries into more than
//! [`MAX_VALUES`] values in all (a "billion laughs" of memo references) is refused before it
//! is built; tensors are checked against their storage before any tch call.

use std::collections::HashMap;

use anyhow::{anyhow, bail, Result};
use tch::{Kind, Tensor};

use super::opcode::Opcode;
use super::Value;

/// Deepest nesting of lists, tuples, dicts and calls accepted. A state dict nests 3 deep, a
/// training checkpoint about 6; Python's own unpickler stops near 1000.
pub const MAX_DEPTH: u32 = 200;
/// Most values (each element of each container, memo copies included) one pickle may build.
pub const MAX_VALUES: u64 = 2_000_000;

/// Loads a storage (element type, key in the archive) as a flat CPU tensor.
pub type StorageLoader<'a> = dyn FnMut(Kind, &str) -> Result<Tensor> + 'a;

/// A value with what it costs: how deep it nests and how many values it holds.
#[derive(Clone)]
pub(super) struct Node {
    pub(super) value: Value,
    pub(super) depth: u32,
    pub(super) size: u64,
}

impl Node {
    pub(super) fn leaf(value: Value) -> Self {
        Self { value, depth: 0, size: 1 }
    }
}

pub struct Unpickler<'a, 'b> {
    data: &'a [u8],
    pos: usize,
    pub(super) stack: Vec<Node>,
    marks: Vec<usize>,
    pub(super) memo: HashMap<u32, Node>,
    /// Values built so far, memo copies included.
    built: u64,
    pub(super) load_storage: &'a mut StorageLoader<'b>,
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

    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let end = end.ok_or_else(|| anyhow!("the pickle ends early (truncated file?)"))?;
        let bytes = &self.data[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    pub(super) fn skip(&mut self, n: usize) -> Result<()> {
        self.take(n).map(drop)
    }

    pub(super) fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }

    pub(super) fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    pub(super) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(super) fn line(&mut self) -> Result<String> {
        let rest = &self.data[self.pos..];
        let end = rest.iter().position(|&b| b == b'\n').ok_or_else(|| anyhow!("the pickle ends early"))?;
        let text = String::from_utf8_lossy(&rest[..end]).to_string();
        self.pos += end + 1;
        Ok(text)
    }

    // The stack, with the depth and size budget.

    pub(super) fn count(&mut self, size: u64) -> Result<()> {
        self.built = self.built.saturating_add(size);
        if self.built > MAX_VALUES {
            bail!("the pickle builds more than {MAX_VALUES} values (a pickle bomb?)");
        }
        Ok(())
    }

    pub(super) fn push_leaf(&mut self, value: Value) -> Result<()> {
        self.count(1)?;
        self.stack.push(Node::leaf(value));
        Ok(())
    }

    /// A container of `children`, made by `make`, within the depth limit.
    pub(super) fn push_container(
        &mut self,
        children: Vec<Node>,
        make: impl FnOnce(Vec<Value>) -> Result<Value>,
    ) -> Result<()> {
        let depth = children.iter().map(|c| c.depth + 1).max().unwrap_or(0);
        check_depth(depth)?;
        let size = 1 + children.iter().map(|c| c.size).sum::<u64>();
        self.count(1)?;
        let value = make(children.into_iter().map(|c| c.value).collect())?;
        self.stack.push(Node { value, depth, size });
        Ok(())
    }

    pub(super) fn pop(&mut self) -> Result<Node> {
        self.stack.pop().ok_or_else(|| anyhow!("malformed pickle: pop from an empty stack"))
    }

    pub(super) fn pop_mark(&mut self) -> Result<Vec<Node>> {
        let mark = self.marks.pop().ok_or_else(|| anyhow!("malformed pickle: no mark"))?;
        if mark > self.stack.len() {
            bail!("malformed pickle: mark beyond the stack");
        }
        Ok(self.stack.split_off(mark))
    }

    /// The top of the stack, grown by `added` (children of depth `child_depth`).
    pub(super) fn grow_top(&mut self, child_depth: u32, added: u64) -> Result<&mut Value> {
        let top = self.stack.last_mut().ok_or_else(|| anyhow!("malformed pickle: empty stack"))?;
        top.depth = top.depth.max(child_depth + 1);
        check_depth(top.depth)?;
        top.size = top.size.saturating_add(added);
        Ok(&mut top.value)
    }
}

impl Node {
    /// Depth and size only (for budget sums); the value is not copied.
    pub(super) fn clone_shallow(&self) -> Node {
        Node { value: Value::None, depth: self.depth, size: self.size }
    }
}

pub(super) fn check_depth(depth: u32) -> Result<()> {
    if depth > MAX_DEPTH {
        bail!("the pickle nests deeper than {MAX_DEPTH} levels");
    }
    Ok(())
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
    fn unknown_opcodes_name_their_byte() {
        let err = format!("{:#}", run(&[0x80, 2, 0xff]).unwrap_err());
        assert!(err.contains("opcode 0xff at byte 2"), "{err}");
    }
}
