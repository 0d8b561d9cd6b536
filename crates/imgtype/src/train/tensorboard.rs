//! TensorBoard event files (`events.out.tfevents.*`), so `tensorboard --logdir results`
//! shows the runs and `wandb sync --sync-tensorboard` can push them to Weights & Biases.
//! Each record is TFRecord-framed (length, masked CRC-32C) and holds an `Event` protobuf
//! with scalar summaries; the few protobuf fields needed are encoded here by hand.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

fn varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn length_delimited(field: u64, bytes: &[u8], out: &mut Vec<u8>) {
    varint((field << 3) | 2, out);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// `Event { wall_time = 1, step = 2, file_version = 3 | summary = 5 }`.
fn event(wall_time: f64, step: i64, body: EventBody) -> Vec<u8> {
    let mut out = Vec::new();
    varint((1 << 3) | 1, &mut out);
    out.extend_from_slice(&wall_time.to_le_bytes());
    varint(2 << 3, &mut out);
    varint(step as u64, &mut out);
    match body {
        EventBody::FileVersion(version) => length_delimited(3, version.as_bytes(), &mut out),
        EventBody::Scalars(values) => {
            // Summary { repeated Value value = 1 }, Value { tag = 1, simple_value = 2 }
            let mut summary = Vec::new();
            for (tag, value) in values {
                let mut v = Vec::new();
                length_delimited(1, tag.as_bytes(), &mut v);
                varint((2 << 3) | 5, &mut v);
                v.extend_from_slice(&(*value as f32).to_le_bytes());
                length_delimited(1, &v, &mut summary);
            }
            length_delimited(5, &summary, &mut out);
        }
    }
    out
}

enum EventBody<'a> {
    FileVersion(&'a str),
    Scalars(&'a [(&'a str, f64)]),
}

fn masked_crc(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(bytes);
    (crc.rotate_right(15)).wrapping_add(0xa282_ead8)
}

pub struct EventWriter {
    file: File,
    path: PathBuf,
}

impl EventWriter {
    /// Starts a new event file in `dir` (each run or resume gets its own; TensorBoard merges them).
    pub fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let host =
            std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "host".into());
        let now = chrono::Utc::now();
        let name = format!("events.out.tfevents.{}.{host}.{}", now.timestamp(), std::process::id());
        let path = dir.join(name);
        let file = File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        let mut writer = Self { file, path };
        writer.write_record(&event(wall_time(), 0, EventBody::FileVersion("brain.Event:2")))?;
        Ok(writer)
    }

    /// Writes scalars for one step and flushes, so a live TensorBoard sees them.
    pub fn scalars(&mut self, step: i64, values: &[(&str, f64)]) -> Result<()> {
        let finite: Vec<(&str, f64)> = values.iter().copied().filter(|(_, v)| v.is_finite()).collect();
        self.write_record(&event(wall_time(), step, EventBody::Scalars(&finite)))
    }

    fn write_record(&mut self, data: &[u8]) -> Result<()> {
        let length = (data.len() as u64).to_le_bytes();
        let mut record = Vec::with_capacity(data.len() + 16);
        record.extend_from_slice(&length);
        record.extend_from_slice(&masked_crc(&length).to_le_bytes());
        record.extend_from_slice(data);
        record.extend_from_slice(&masked_crc(data).to_le_bytes());
        self.file.write_all(&record).with_context(|| format!("cannot write {}", self.path.display()))?;
        self.file.flush()?;
        Ok(())
    }
}

fn wall_time() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_is_crc32c() {
        // The CRC-32C check value; files written here are read back by the tensorboard
        // package in tests/train_features.rs.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn varints_encode_as_protobuf() {
        let mut out = Vec::new();
        varint(300, &mut out);
        assert_eq!(out, [0xac, 0x02]);
    }
}
