//! AdamW, Adam and SGD (momentum 0.9) written out in the same arithmetic as PyTorch's
//! single-tensor implementations, so their state (moments, step counts) can be saved in a
//! checkpoint and a resumed run continues exactly. Two groups: head and backbone, each
//! with its own learning rate. Parameters without a gradient (a frozen backbone) are
//! skipped, as in PyTorch.

use std::collections::HashMap;

use anyhow::{bail, Result};
use tch::{nn, Tensor};

use crate::config::OptimizerKind;
use crate::model::{BACKBONE_GROUP, HEAD_GROUP};

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;
const MOMENTUM: f64 = 0.9;

/// One trainable tensor with its own optimiser state, so a step walks a flat list without
/// looking names up.
struct Param {
    name: String,
    tensor: Tensor,
    group: usize,
    step: i64,
    /// exp_avg for Adam(W), momentum_buffer for SGD.
    first: Option<Tensor>,
    /// exp_avg_sq for Adam(W).
    second: Option<Tensor>,
    /// Work space (not state: never saved).
    scratch: Option<Tensor>,
}

pub struct Optimizer {
    kind: OptimizerKind,
    weight_decay: f64,
    lrs: [f64; 2],
    params: Vec<Param>,
}

impl Optimizer {
    /// Over the trainable variables of `vs`: `backbone.*` in the backbone group, the rest in the head group.
    pub fn new(kind: OptimizerKind, weight_decay: f64, vs: &nn::VarStore) -> Self {
        let mut params: Vec<Param> = vs
            .variables()
            .into_iter()
            .filter(|(name, t)| t.is_floating_point() && !crate::model::is_buffer(name))
            .map(|(name, tensor)| {
                let group = if name.starts_with("backbone.") { BACKBONE_GROUP } else { HEAD_GROUP };
                Param { name, tensor, group, step: 0, first: None, second: None, scratch: None }
            })
            .collect();
        params.sort_by(|a, b| a.name.cmp(&b.name));
        Self { kind, weight_decay, lrs: [0.0; 2], params }
    }

    pub fn set_lr(&mut self, group: usize, lr: f64) {
        self.lrs[group] = lr;
    }

    pub fn zero_grad(&mut self) {
        for p in &self.params {
            let mut grad = p.tensor.grad();
            if grad.defined() {
                let _ = grad.detach_();
                let _ = grad.zero_();
            }
        }
    }

    /// Scales gradients so their global L2 norm is at most `max_norm`
    /// (torch.nn.utils.clip_grad_norm_); returns the norm before clipping (a 0-dim tensor).
    /// On the CPU a norm within the limit leaves the gradients untouched; on an accelerator
    /// the clamped factor is applied on the device, without a host sync.
    pub fn clip_grad_norm(&self, max_norm: f64) -> Tensor {
        let grads: Vec<Tensor> = self.params.iter().map(|p| p.tensor.grad()).filter(Tensor::defined).collect();
        if grads.is_empty() {
            return Tensor::from(0.0f32);
        }
        tch::no_grad(|| {
            let norms: Vec<Tensor> = grads.iter().map(|g| g.norm()).collect();
            let total = Tensor::stack(&norms, 0).norm();
            if total.device() == tch::Device::Cpu {
                let coefficient = max_norm / (total.double_value(&[]) + 1e-6);
                if coefficient < 1.0 {
                    for g in &grads {
                        let _ = g.shallow_clone().g_mul_scalar_(coefficient);
                    }
                } // else PyTorch multiplies by the clamped 1.0: the same values.
            } else {
                let coefficient = ((&total + 1e-6).reciprocal() * max_norm).clamp_max(1.0);
                for g in &grads {
                    let _ = g.shallow_clone().g_mul_(&coefficient);
                }
            }
            total
        })
    }

    pub fn step(&mut self) {
        let (kind, weight_decay, lrs) = (self.kind, self.weight_decay, self.lrs);
        tch::no_grad(|| {
            for p in &mut self.params {
                let grad = p.tensor.grad();
                if !grad.defined() {
                    continue;
                }
                let lr = lrs[p.group];
                p.step += 1;
                let mut param = p.tensor.shallow_clone();
                match kind {
                    OptimizerKind::AdamW | OptimizerKind::Adam => {
                        // In place, through one scratch buffer per parameter: allocating
                        // temporaries for ~200 tensors every step cost more than the arithmetic.
                        let mut grad = grad;
                        if kind == OptimizerKind::Adam && weight_decay != 0.0 {
                            let _ = grad.g_add_(&(&param * weight_decay));
                        }
                        if kind == OptimizerKind::AdamW {
                            let _ = param.g_mul_scalar_(1.0 - lr * weight_decay);
                        }
                        let m = p.first.get_or_insert_with(|| param.zeros_like());
                        let _ = m.lerp_(&grad, 1.0 - BETA1);
                        let scratch = p.scratch.get_or_insert_with(|| param.zeros_like());
                        let _ = scratch.copy_(&grad);
                        let _ = scratch.g_mul_scalar_(1.0 - BETA2);
                        let v = p.second.get_or_insert_with(|| param.zeros_like());
                        let _ = v.g_mul_scalar_(BETA2);
                        let _ = v.addcmul_(&grad, scratch);
                        let bias1 = 1.0 - BETA1.powi(p.step as i32);
                        let bias2 = 1.0 - BETA2.powi(p.step as i32);
                        let step_size = lr / bias1;
                        // param -= step_size · m / (sqrt(v) / sqrt(bias2) + eps)
                        let _ = v.sqrt_out(scratch);
                        let _ = scratch.g_mul_scalar_(1.0 / bias2.sqrt());
                        let _ = scratch.g_add_scalar_(EPS);
                        let _ = scratch.g_mul_scalar_(-1.0 / step_size);
                        let _ = param.addcdiv_(m, scratch);
                    }
                    OptimizerKind::Sgd => {
                        let d_p = if weight_decay != 0.0 { &grad + &param * weight_decay } else { grad };
                        let buffer = match &mut p.first {
                            Some(buf) => {
                                let _ = buf.g_mul_scalar_(MOMENTUM);
                                let _ = buf.g_add_(&d_p);
                                buf.shallow_clone()
                            }
                            None => p.first.insert(d_p.copy()).shallow_clone(),
                        };
                        let _ = param.g_add_(&(buffer * -lr));
                    }
                }
            }
        });
    }

    /// State tensors for a checkpoint (`optimizer.first.<param>`, `optimizer.second.<param>`).
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out: Vec<(String, Tensor)> = Vec::new();
        for p in &self.params {
            if let Some(t) = &p.first {
                out.push((format!("optimizer.first.{}", p.name), t.shallow_clone()));
            }
            if let Some(t) = &p.second {
                out.push((format!("optimizer.second.{}", p.name), t.shallow_clone()));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Step counts of the parameters that have taken a step, by name (saved with the state).
    pub fn steps(&self) -> HashMap<String, i64> {
        self.params.iter().filter(|p| p.step > 0).map(|p| (p.name.clone(), p.step)).collect()
    }

    /// Restores what `state_tensors` and `steps` saved.
    pub fn load_state(&mut self, tensors: &[(String, Tensor)], steps: HashMap<String, i64>) -> Result<()> {
        let device = self.params.first().map(|p| p.tensor.device()).unwrap_or(tch::Device::Cpu);
        let index: HashMap<String, usize> = self.params.iter().enumerate().map(|(i, p)| (p.name.clone(), i)).collect();
        let find = |param: &str| -> Result<usize> {
            match index.get(param) {
                Some(&i) => Ok(i),
                None => bail!("checkpoint has optimizer state for `{param}`, which the model does not have"),
            }
        };
        for (name, t) in tensors {
            if let Some(param) = name.strip_prefix("optimizer.first.") {
                self.params[find(param)?].first = Some(t.to_device(device));
            } else if let Some(param) = name.strip_prefix("optimizer.second.") {
                self.params[find(param)?].second = Some(t.to_device(device));
            }
        }
        for (param, step) in steps {
            self.params[find(&param)?].step = step;
        }
        Ok(())
    }
}
