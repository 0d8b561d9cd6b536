//! Learning-rate schedules per epoch, as PyTorch's: CosineAnnealingLR (T_max = the
//! phase's epochs, eta_min 0), StepLR (10, ×0.1), ReduceLROnPlateau (×0.3,
//! `scheduler_patience`, on validation loss) or none, after a linear warm-up of
//! `warmup_epochs` (epoch e < w runs at (e+1)/(w+1) of the rate). A phase restarts at
//! unfreeze, when optimiser and schedule are rebuilt.

use serde::{Deserialize, Serialize};

use crate::config::Scheduler;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    kind: Scheduler,
    phase_epochs: usize,
    warmup_epochs: usize,
    plateau_patience: usize,
    plateau_factor: f64,
    plateau_best: Option<f64>,
    plateau_bad_epochs: usize,
}

impl LrSchedule {
    pub fn new(kind: Scheduler, phase_epochs: usize, warmup_epochs: usize, plateau_patience: usize) -> Self {
        Self {
            kind,
            phase_epochs: phase_epochs.max(1),
            warmup_epochs,
            plateau_patience,
            plateau_factor: 1.0,
            plateau_best: None,
            plateau_bad_epochs: 0,
        }
    }

    /// Multiplier of the base learning rate for the `epoch`-th epoch of the phase (0-based).
    pub fn factor(&self, epoch: usize) -> f64 {
        let warmup =
            if epoch < self.warmup_epochs { (epoch + 1) as f64 / (self.warmup_epochs + 1) as f64 } else { 1.0 };
        let base = match self.kind {
            Scheduler::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * epoch as f64 / self.phase_epochs as f64).cos()),
            Scheduler::Step => 0.1f64.powi((epoch / 10) as i32),
            Scheduler::Plateau => self.plateau_factor,
            Scheduler::None => 1.0,
        };
        warmup * base
    }

    /// ReduceLROnPlateau(mode min, factor 0.3, threshold 1e-4 relative) on validation loss.
    pub fn observe_val_loss(&mut self, val_loss: f64) {
        if self.kind != Scheduler::Plateau {
            return;
        }
        match self.plateau_best {
            Some(best) if val_loss >= best * (1.0 - 1e-4) => {
                self.plateau_bad_epochs += 1;
                if self.plateau_bad_epochs > self.plateau_patience {
                    self.plateau_factor *= 0.3;
                    self.plateau_bad_epochs = 0;
                }
            }
            _ => {
                self.plateau_best = Some(val_loss);
                self.plateau_bad_epochs = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f64], b: &[f64]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-12, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn cosine_follows_torch_cosine_annealing() {
        let s = LrSchedule::new(Scheduler::Cosine, 4, 0, 0);
        close(
            &(0..5).map(|e| s.factor(e)).collect::<Vec<_>>(),
            &[1.0, 0.8535533905932737, 0.5, 0.14644660940672627, 0.0],
        );
    }

    #[test]
    fn step_divides_by_ten_every_ten_epochs() {
        let s = LrSchedule::new(Scheduler::Step, 30, 0, 0);
        assert_eq!([0, 9, 10, 19, 20].map(|e| s.factor(e)), [1.0, 1.0, 0.1, 0.1, 0.1f64.powi(2)]);
    }

    #[test]
    fn plateau_cuts_by_0_3_after_patience_bad_epochs() {
        let mut s = LrSchedule::new(Scheduler::Plateau, 10, 0, 1);
        let mut factors = Vec::new();
        for loss in [1.0, 0.9, 0.95, 0.96, 0.97, 0.8, 0.85, 0.86] {
            s.observe_val_loss(loss);
            factors.push(s.factor(0));
        }
        // torch ReduceLROnPlateau(patience=1, factor=0.3): cuts after the 2nd bad epoch in a row.
        close(&factors, &[1.0, 1.0, 1.0, 0.3, 0.3, 0.3, 0.3, 0.09]);
    }

    #[test]
    fn warmup_is_linear_then_the_schedule() {
        let s = LrSchedule::new(Scheduler::None, 10, 3, 0);
        close(&(0..5).map(|e| s.factor(e)).collect::<Vec<_>>(), &[0.25, 0.5, 0.75, 1.0, 1.0]);
        let c = LrSchedule::new(Scheduler::Cosine, 4, 1, 0);
        close(&[c.factor(0), c.factor(1)], &[0.5, 0.8535533905932737]);
    }
}
