//! Losses: cross-entropy with class weights and label smoothing, or focal loss
//! (alpha, per-class gamma), optionally class-weighted.

use anyhow::Result;
use tch::{Kind, Reduction, Tensor};

use crate::config::{Config, FocalGamma};

/// Balanced class weights `n_samples / (n_classes · count_c)`; a class with no sample gets 0.
pub fn balanced_class_weights(counts: &[usize]) -> Vec<f64> {
    let n: usize = counts.iter().sum();
    let k = counts.len() as f64;
    counts.iter().map(|&c| if c == 0 { 0.0 } else { n as f64 / (k * c as f64) }).collect()
}

pub enum Loss {
    CrossEntropy { weights: Option<Tensor>, label_smoothing: f64 },
    Focal { weights: Option<Tensor>, alpha: f64, gamma: Tensor },
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
        Ok(Loss::Focal { weights, alpha: t.focal_alpha, gamma })
    }

    /// Mean loss of `logits [N, C]` against class indices `targets [N]`.
    pub fn compute(&self, logits: &Tensor, targets: &Tensor) -> Tensor {
        match self {
            Loss::CrossEntropy { weights, label_smoothing } => {
                logits.cross_entropy_loss(targets, weights.as_ref(), Reduction::Mean, -100, *label_smoothing)
            }
            Loss::Focal { weights, alpha, gamma } => {
                let log_probs = logits.log_softmax(-1, Kind::Float);
                let log_pt = log_probs.gather(1, &targets.unsqueeze(1), false).squeeze_dim(1);
                let pt = log_pt.exp();
                let gamma_t = gamma.index_select(0, targets);
                let modulating = (pt.ones_like() - &pt).clamp_min(0.0).pow(&gamma_t);
                let mut loss = -(modulating * log_pt) * *alpha;
                if let Some(w) = weights {
                    loss = loss * w.index_select(0, targets);
                }
                loss.mean(Kind::Float)
            }
        }
    }
}
