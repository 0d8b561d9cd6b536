//! The neighbours' opinion on each out-of-fold image: every finished fold's best model embeds
//! its own held-out images (the backbone's pooled features, the head's input), and each image
//! gets the labels of its nearest held-out neighbours in that space
//! (`eval::neighbours`). Embedded when the results are built, not stored: at the demo's
//! 64 px it costs seconds per fold.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use tch::Device;

use super::label_review::OutOfFold;
use crate::config::Config;
use crate::data::{ImageRecord, ImageSource};
use crate::eval::neighbours::neighbour_label_shares;
use crate::train::RunLayout;
use crate::ImageTypeClassifier;

const BATCH: usize = 64;

/// Per out-of-fold image, the share of each class among its `k` nearest neighbours; `None`
/// (with a warning saying why) when some fold's model or images cannot give every image an
/// embedding: a ranking half with and half without the neighbours would not be one ranking.
pub(super) fn neighbour_shares(
    oof: &[OutOfFold],
    run_dirs: &HashMap<usize, &Path>,
    labels: &[usize],
    config: &Config,
    k: usize,
    named: &dyn Fn(usize) -> String,
) -> Option<Vec<Vec<f64>>> {
    let mut embeddings: Vec<Option<Vec<f32>>> = vec![None; oof.len()];
    // Unreadable images: how many, and the first with why (one is enough to say what went wrong).
    let (mut unreadable, mut first_unreadable) = (0, None);
    let mut folds: Vec<usize> = oof.iter().map(|o| o.image.fold).collect();
    folds.sort_unstable();
    folds.dedup();
    for fold in folds {
        let rows: Vec<usize> = (0..oof.len()).filter(|&i| oof[i].image.fold == fold).collect();
        let records: Vec<ImageRecord> = rows.iter().map(|&i| oof[i].image.record()).collect();
        let embedded = run_dirs
            .get(&fold)
            .context("no finished run")
            .and_then(|run| embed(&RunLayout::of(run)?.best_model(), &records, config));
        match embedded {
            Ok(vectors) => rows.iter().zip(vectors).for_each(|(&i, vector)| match vector {
                Ok(v) => embeddings[i] = Some(v),
                Err(why) => {
                    unreadable += 1;
                    first_unreadable.get_or_insert((i, why));
                }
            }),
            Err(e) => {
                tracing::warn!(
                    "{}: its images cannot be embedded ({e:#}); label issues from the models' probabilities alone",
                    named(fold)
                );
                return None;
            }
        }
    }
    if let Some((first, why)) = first_unreadable {
        tracing::warn!(
            "{unreadable} out-of-fold image(s) could not be read again to embed (the first, held out in {}: {why}); label issues from the models' probabilities alone",
            named(oof[first].image.fold)
        );
        return None;
    }
    let embeddings: Vec<Vec<f32>> = embeddings.into_iter().flatten().collect();
    let groups: Vec<usize> = oof.iter().map(|o| o.image.fold).collect();
    Some(neighbour_label_shares(&embeddings, &groups, labels, config.data.class_names.len(), k))
}

/// The pooled backbone features of each record by the model in `model_file` (on the CPU), or
/// why an image cannot be read.
fn embed(model_file: &Path, records: &[ImageRecord], config: &Config) -> Result<Vec<Result<Vec<f32>, String>>> {
    let model = ImageTypeClassifier::load(model_file, Device::Cpu)?;
    // The config's thread count, or as many cores as other jobs leave: libtorch's spinning
    // threads beside another job would cost both.
    crate::threads::apply_config(&config.system);
    let source = ImageSource::from_config(&config.data);
    let mut out = Vec::with_capacity(records.len());
    for chunk in records.chunks(BATCH) {
        crate::threads::share_cores();
        let refs: Vec<&ImageRecord> = chunk.iter().collect();
        let loaded =
            crate::data::batch::load_images(&refs, &source, model.input_size(), config.system.decode_threads());
        let mut images: Vec<image::RgbImage> = Vec::with_capacity(loaded.len());
        let readable: Vec<Result<(), String>> = loaded
            .into_iter()
            .map(|image| image.map(|image| images.push(image)).map_err(|e| format!("{e:#}")))
            .collect();
        let mut features = if images.is_empty() {
            Vec::new().into_iter()
        } else {
            let batch = crate::model::input::to_normalized_batch(&images);
            let pooled = tch::no_grad(|| model.backbone_features(&batch, false));
            let width = pooled.size()[1] as usize;
            let flat = Vec::<f32>::try_from(pooled.contiguous().view([-1])).context("features to host")?;
            flat.chunks(width).map(<[f32]>::to_vec).collect::<Vec<_>>().into_iter()
        };
        out.extend(
            readable
                .into_iter()
                .map(|ok| ok.and_then(|()| features.next().ok_or_else(|| "no features came back".to_string()))),
        );
    }
    Ok(out)
}
