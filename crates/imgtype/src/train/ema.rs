//! An exponential moving average of the weights, updated after every step; with
//! `training.use_ema` it is what is validated and saved. The decay warms up as in timm's
//! ModelEmaV3 (`training.ema_warmup`): after n updates it is min(ema_decay, 1 - (1 + n)^-3/4),
//! so the average follows the model closely at first (0.80 after 7 updates, 0.97 after 100)
//! and a short run's EMA is not mostly its random initial weights.

use std::path::Path;

use tch::Tensor;

use crate::model::ImageTypeClassifier;

/// timm's `warmup_power` for runs of thousands of steps (it reaches 0.999 after 10k updates).
const WARMUP_POWER: f64 = 0.75;

pub struct Ema {
    pub model: ImageTypeClassifier,
    /// (average, live tensor) for every floating tensor, weights and BatchNorm statistics,
    /// paired once so an update walks a list.
    pairs: Vec<(Tensor, Tensor)>,
    decay: f64,
    warmup: bool,
    /// Updates so far (saved with the training state, so a resumed run continues the warm-up).
    pub updates: u64,
}

impl Ema {
    /// An average starting at `model`'s current weights, with `training.ema_decay` and
    /// `training.ema_warmup`.
    pub fn new(model: &ImageTypeClassifier, decay: f64, warmup: bool) -> Self {
        let mut average = ImageTypeClassifier::new(model.config(), model.device());
        average.load_tensors(&model.snapshot(), Path::new("model")).expect("same architecture");
        let live = model.vs.variables();
        let pairs = average
            .vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.is_floating_point())
            .map(|(name, t)| (t, live[&name].shallow_clone()))
            .collect();
        Self { model: average, pairs, decay, warmup, updates: 0 }
    }

    /// The decay of update number `n + 1` (after `n` updates).
    pub fn decay_after(&self, n: u64) -> f64 {
        ema_decay_after(self.decay, self.warmup, n)
    }

    /// Every floating tensor becomes `decay · average + (1 - decay) · model`.
    pub fn update(&mut self) {
        let decay = self.decay_after(self.updates);
        self.updates += 1;
        tch::no_grad(|| {
            for (average, live) in &mut self.pairs {
                let _ = average.lerp_(live, 1.0 - decay);
            }
        });
    }
}

/// The EMA decay after `n` updates: `decay`, or with warm-up min(decay, 1 - (1 + n)^-3/4).
pub fn ema_decay_after(decay: f64, warmup: bool, n: u64) -> f64 {
    if !warmup {
        return decay;
    }
    decay.min(1.0 - (1.0 + n as f64).powf(-WARMUP_POWER))
}
