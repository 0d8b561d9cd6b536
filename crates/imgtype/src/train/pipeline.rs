//! The training input pipeline: a background thread decodes, augments and batches the
//! images of an epoch (decoding spread over `system.num_workers` threads) while the
//! model trains on the previous batch; at most `PREFETCH` batches wait in the queue.
//! All randomness comes from (seed, epoch, position), so a batch is the same whatever
//! the thread timing, and a run resumed mid-epoch sees the batches it would have seen.

use std::sync::mpsc::sync_channel;
use std::sync::Arc;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

use crate::config::{AugmentationConfig, Config};
use crate::data::augment::{augment_image, mix_batch};
use crate::data::batch::load_images;
use crate::data::{ImageRecord, ImageSource};
use crate::model::input::to_normalized_batch;

pub const PREFETCH: usize = 2;

/// A seed for one (purpose, epoch, item) triple, from the run's seed (splitmix64 mixing).
pub fn derive_seed(seed: u64, a: u64, b: u64) -> u64 {
    let mut z = seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const SHUFFLE: u64 = u64::MAX;
const MIX: u64 = u64::MAX - 1;

/// The order of the train split in `epoch`.
pub fn epoch_order(len: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(derive_seed(seed, epoch as u64, SHUFFLE)));
    order
}

pub struct Batch {
    pub index: usize,
    /// Normalised images `[n, 3, H, W]`.
    pub images: Tensor,
    /// Class indices `[n]`.
    pub labels: Tensor,
    /// Class probabilities `[n, C]` when mixup / cutmix mixed the batch.
    pub soft_targets: Option<Tensor>,
    /// Images of this batch that could not be read (path, reason).
    pub skipped: Vec<(String, String)>,
}

pub struct EpochPlan {
    pub records: Arc<Vec<ImageRecord>>,
    pub labels: Arc<Vec<i64>>,
    pub num_classes: i64,
    pub epoch: usize,
    pub first_batch: usize,
}

/// How batches are made, read once from the config: the run's seed, images per batch, the
/// input size and the augmentations, the decode threads and where they run
/// (`system.num_workers`: 0 decodes in the training thread on every core).
#[derive(Debug, Clone)]
pub struct BatchRecipe {
    pub seed: u64,
    pub batch_size: usize,
    pub image_size: u32,
    pub augmentation: AugmentationConfig,
    pub decode_threads: usize,
    /// Batches made in the training thread between steps, not by background threads.
    pub in_training_thread: bool,
}

impl BatchRecipe {
    pub fn new(config: &Config) -> Self {
        Self {
            seed: config.system.seed,
            batch_size: config.training.batch_size,
            image_size: config.augmentation.image_size,
            augmentation: config.augmentation.clone(),
            decode_threads: config.system.decode_threads(),
            in_training_thread: config.system.num_workers == 0,
        }
    }
}

/// How many batches an epoch of `len` images has: see [`batch_range`].
pub fn batch_count(len: usize, batch_size: usize) -> usize {
    match len.div_ceil(batch_size) {
        n if n > 1 && len % batch_size == 1 => n - 1,
        n => n,
    }
}

/// The positions in the epoch's order of batch `index`: `batch_size` images, except that a
/// last image left alone joins the batch before it. A batch of one image would update the
/// BatchNorm running statistics with a variance of a single value (NaN where a layer's map
/// is 1×1, as at the end of the backbone at 32 px): PyTorch refuses such a batch, and every
/// later evaluation would be NaN.
pub fn batch_range(index: usize, len: usize, batch_size: usize) -> Option<(usize, usize)> {
    let count = batch_count(len, batch_size);
    if index >= count {
        return None;
    }
    let start = index * batch_size;
    let end = if index + 1 == count { len } else { start + batch_size };
    Some((start, end))
}

/// Builds the batches of one epoch in order, from `first_batch`.
pub struct EpochBatches {
    plan: EpochPlan,
    recipe: Arc<BatchRecipe>,
    source: ImageSource,
    order: Vec<usize>,
    next: usize,
    decode_threads: usize,
}

impl EpochBatches {
    pub fn new(plan: EpochPlan, recipe: Arc<BatchRecipe>, source: ImageSource, decode_threads: usize) -> Self {
        let order = epoch_order(plan.records.len(), recipe.seed, plan.epoch);
        let next = plan.first_batch;
        Self { plan, recipe, source, order, next, decode_threads: decode_threads.max(1) }
    }

    fn build(&self, index: usize, chunk: &[usize]) -> Batch {
        let recipe = &self.recipe;
        let (seed, batch_size, epoch) = (recipe.seed, recipe.batch_size, self.plan.epoch as u64);
        let refs: Vec<&ImageRecord> = chunk.iter().map(|&i| &self.plan.records[i]).collect();
        let loaded = load_images(&refs, &self.source, recipe.image_size, self.decode_threads);
        let mut images = Vec::with_capacity(chunk.len());
        let mut labels = Vec::with_capacity(chunk.len());
        let mut skipped = Vec::new();
        for ((&i, result), position) in chunk.iter().zip(loaded).zip(index * batch_size..) {
            match result {
                Ok(mut image) => {
                    let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(seed, epoch, position as u64));
                    augment_image(&mut image, &recipe.augmentation, &mut rng);
                    images.push(image);
                    labels.push(self.plan.labels[i]);
                }
                Err(reason) => skipped.push((self.plan.records[i].image_path.clone(), reason)),
            }
        }
        if images.is_empty() {
            return Batch {
                index,
                images: Tensor::zeros([0], (Kind::Float, tch::Device::Cpu)),
                labels: Tensor::zeros([0], (Kind::Int64, tch::Device::Cpu)),
                soft_targets: None,
                skipped,
            };
        }
        let tensor = to_normalized_batch(&images);
        let labels = Tensor::from_slice(&labels);
        let mixing = recipe.augmentation.mixup_alpha > 0.0 || recipe.augmentation.cutmix_alpha > 0.0;
        if mixing && images.len() > 1 {
            let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(seed ^ MIX, epoch, index as u64));
            let one_hot = labels.one_hot(self.plan.num_classes).to_kind(Kind::Float);
            let (mixed, soft) = mix_batch(&tensor, &one_hot, &recipe.augmentation, &mut rng);
            return Batch { index, images: mixed, labels, soft_targets: Some(soft), skipped };
        }
        Batch { index, images: tensor, labels, soft_targets: None, skipped }
    }
}

/// A batch, or why it could not be built (a bug that panicked while building it: the
/// run stops with that error instead of silently training on a shorter epoch).
pub type BatchResult = Result<Batch, String>;

impl Iterator for EpochBatches {
    type Item = BatchResult;

    fn next(&mut self) -> Option<BatchResult> {
        let (start, end) = batch_range(self.next, self.order.len(), self.recipe.batch_size)?;
        let chunk = self.order[start..end].to_vec();
        let index = self.next;
        self.next += 1;
        let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.build(index, &chunk)));
        Some(built.map_err(|panic| {
            format!("batch {} could not be built: {}", index + 1, crate::data::decode::panic_message(&panic))
        }))
    }
}

/// The batches of an epoch: with `system.num_workers` ≥ 1, made by that many background
/// decode threads, at most `PREFETCH` batches ahead; with 0, made in the training thread
/// between steps (decoding on all cores), which is faster where there are only a couple of
/// cores for libtorch to share.
pub fn epoch_batches(
    plan: EpochPlan,
    recipe: Arc<BatchRecipe>,
    source: ImageSource,
) -> Box<dyn Iterator<Item = BatchResult>> {
    let workers = recipe.decode_threads;
    if recipe.in_training_thread {
        return Box::new(EpochBatches::new(plan, recipe, source, workers));
    }
    let (sender, receiver) = sync_channel(PREFETCH);
    let epoch = plan.epoch;
    let batches = EpochBatches::new(plan, recipe, source, workers);
    std::thread::Builder::new()
        .name(format!("batches-epoch-{}", epoch + 1))
        .spawn(move || {
            // Tensor work here is small; a second OpenMP team would spin against the training thread's.
            tch::set_num_threads(1);
            // Below the training threads: a decode burst should fill idle time, not stall the
            // step's OpenMP team (whose threads wait for each other).
            #[cfg(target_os = "linux")]
            unsafe {
                libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10);
            }
            for batch in batches {
                if sender.send(batch).is_err() {
                    return;
                }
            }
        })
        .expect("start the batch thread");
    Box::new(receiver.into_iter())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_last_image_alone_joins_the_batch_before_it() {
        let ranges = |len| (0..).map_while(|i| batch_range(i, len, 4)).collect::<Vec<_>>();
        assert_eq!(ranges(9), vec![(0, 4), (4, 9)]);
        assert_eq!(ranges(10), vec![(0, 4), (4, 8), (8, 10)]);
        assert_eq!(ranges(8), vec![(0, 4), (4, 8)]);
        assert_eq!(ranges(1), vec![(0, 1)]);
        assert_eq!(ranges(0), vec![]);
        assert_eq!(batch_count(9, 4), 2);
    }

    #[test]
    fn orders_are_permutations_fixed_by_seed_and_epoch() {
        let a = epoch_order(50, 42, 0);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_eq!(a, epoch_order(50, 42, 0));
        assert_ne!(a, epoch_order(50, 42, 1));
        assert_ne!(a, epoch_order(50, 43, 0));
    }
}
