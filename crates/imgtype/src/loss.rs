//! Losses: cross-entropy with class weights and label smoothing, or focal loss
//! (alpha, per-class gamma), optionally class-weighted. Hard targets follow PyTorch's
//! `cross_entropy` exactly (a weighted mean divides by the summed weights); soft targets
//! (mixup / cutmix) average over the batch, as PyTorch does for probability targets.

use anyhow::Result;
use tch::{Kind, Reduction, Tensor};

use crate::config::{Config, FocalGamma};

/// Balanced class weights `n_samples / (n_classes · count_c)`; a class with no sample gets 0.
pub fn balanced_class_weights(counts: &[usize]) -> Vec<f64> {
    let n: usize = counts.iter().sum();
    let k = counts.len() as f64;
    counts.iter().map(|&c| if c == 0 { 0.0 } else { n as f64 / (k * c as f64) }).collect()
}

/// Class indices `[N]` (i64), or class probabilities `[N, C]` (float) after mixing.
pub enum Targets<'a> {
    Hard(&'a Tensor),
    Soft(&'a Tensor),
}

pub enum Loss {
    CrossEntropy {
        weights: Option<Tensor>,
        label_smoothing: f64,
    },
    /// With `label_smoothing` ε the targets become (1 - ε) · t + ε / C first, as PyTorch's
    /// cross-entropy smooths them, so the key means the same with either loss.
    Focal {
        weights: Option<Tensor>,
        alpha: f64,
        gamma: Tensor,
        label_smoothing: f64,
    },
}

impl Loss {
    /// The loss a config asks for; `train_counts` are the train split's images per class.
    pub fn from_config(config: &Config, train_counts: &[usize], device: tch::Device) -> Result<Self> {
        let t = &config.training;
        let weights = t
            .use_class_weights
            .then(|| Tensor::from_slice(&balanced_class_weights(train_counts)).to_kind(Kind::Float).to_device(device));
        if !t.focal_loss {
            return Ok(Loss::CrossEntropy { weights, label_smoothing: t.label_smoothing });
        }
        let names = &config.data.class_names;
        let gammas: Vec<f64> = match &t.focal_gamma {
            FocalGamma::Scalar(g) => vec![*g; names.len()],
            FocalGamma::PerClass(gs) => gs.clone(),
            FocalGamma::ByClass(map) => names.iter().map(|n| map[n]).collect(),
        };
        let gamma = Tensor::from_slice(&gammas).to_kind(Kind::Float).to_device(device);
        Ok(Loss::Focal { weights, alpha: t.focal_alpha, gamma, label_smoothing: t.label_smoothing })
    }

    /// Where its tensors live: logits and targets must be there too.
    pub fn device(&self) -> tch::Device {
        match self {
            Loss::CrossEntropy { weights, .. } => weights.as_ref().map_or(tch::Device::Cpu, |w| w.device()),
            Loss::Focal { gamma, .. } => gamma.device(),
        }
    }

    /// Mean loss of `logits [N, C]`.
    pub fn compute(&self, logits: &Tensor, targets: Targets) -> Tensor {
        match (self, targets) {
            (Loss::CrossEntropy { weights, label_smoothing }, Targets::Hard(t) | Targets::Soft(t)) => {
                logits.cross_entropy_loss(t, weights.as_ref(), Reduction::Mean, -100, *label_smoothing)
            }
            (Loss::Focal { label_smoothing, .. }, Targets::Hard(t)) if *label_smoothing > 0.0 => {
                let one_hot = t.one_hot(logits.size()[1]).to_kind(Kind::Float);
                self.compute(logits, Targets::Soft(&one_hot))
            }
            (Loss::Focal { weights, alpha, gamma, .. }, Targets::Hard(t)) => {
                let log_pt = logits.log_softmax(-1, Kind::Float).gather(1, &t.unsqueeze(1), false).squeeze_dim(1);
                let pt = log_pt.exp();
                let modulating = (pt.ones_like() - &pt).clamp_min(0.0).pow(&gamma.index_select(0, t));
                let mut loss = -(modulating * log_pt) * *alpha;
                if let Some(w) = weights {
                    loss = loss * w.index_select(0, t);
                }
                loss.mean(Kind::Float)
            }
            (Loss::Focal { weights, alpha, gamma, label_smoothing }, Targets::Soft(t)) => {
                // Σ_c t_c · α (1 - p_c)^γ_c · (-log p_c) · w_c: the hard-target focal loss for one-hot t.
                let classes = logits.size()[1] as f64;
                let smoothed;
                let t = if *label_smoothing > 0.0 {
                    smoothed = t * (1.0 - label_smoothing) + label_smoothing / classes;
                    &smoothed
                } else {
                    t
                };
                let log_p = logits.log_softmax(-1, Kind::Float);
                let p = log_p.exp();
                let modulating = (p.ones_like() - &p).clamp_min(0.0).pow(&gamma.unsqueeze(0));
                let mut per_class = -(modulating * log_p) * t * *alpha;
                if let Some(w) = weights {
                    per_class = per_class * w.unsqueeze(0);
                }
                per_class.sum_dim_intlist(1, false, Kind::Float).mean(Kind::Float)
            }
        }
    }
}
