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

struct Param {
    name: String,
    tensor: Tensor,
    group: usize,
}

pub struct Optimizer {
    kind: OptimizerKind,
    weight_decay: f64,
    lrs: [f64; 2],
    params: Vec<Param>,
    steps: HashMap<String, i64>,
    /// exp_avg / exp_avg_sq for Adam(W), momentum_buffer for SGD, by parameter name.
    first: HashMap<String, Tensor>,
    second: HashMap<String, Tensor>,
    /// Per-parameter work space (not state: never saved).
    scratch: HashMap<String, Tensor>,
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
                Param { name, tensor, group }
            })
            .collect();
        params.sort_by(|a, b| a.name.cmp(&b.name));
        Self {
            kind,
            weight_decay,
            lrs: [0.0; 2],
            params,
            steps: HashMap::new(),
            first: HashMap::new(),
            second: HashMap::new(),
            scratch: HashMap::new(),
        }
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
    /// (torch.nn.utils.clip_grad_norm_); returns the norm before clipping.
    pub fn clip_grad_norm(&self, max_norm: f64) -> f64 {
        let grads: Vec<Tensor> = self.params.iter().map(|p| p.tensor.grad()).filter(Tensor::defined).collect();
        if grads.is_empty() {
            return 0.0;
        }
        let total = tch::no_grad(|| {
            let norms: Vec<Tensor> = grads.iter().map(|g| g.norm()).collect();
            Tensor::stack(&norms, 0).norm().double_value(&[])
        });
        let coefficient = max_norm / (total + 1e-6);
        if coefficient >= 1.0 {
            return total; // PyTorch multiplies by the clamped 1.0: the same values.
        }
        tch::no_grad(|| {
            for g in &grads {
                let _ = g.shallow_clone().g_mul_scalar_(coefficient);
            }
        });
        total
    }

    pub fn step(&mut self) {
        tch::no_grad(|| {
            for p in &self.params {
                let grad = p.tensor.grad();
                if !grad.defined() {
                    continue;
                }
                let lr = self.lrs[p.group];
                let step = self.steps.entry(p.name.clone()).or_insert(0);
                *step += 1;
                let mut param = p.tensor.shallow_clone();
                match self.kind {
                    OptimizerKind::AdamW | OptimizerKind::Adam => {
                        // In place, through one scratch buffer per parameter: allocating
                        // temporaries for ~200 tensors every step cost more than the arithmetic.
                        let mut grad = grad;
                        if self.kind == OptimizerKind::Adam && self.weight_decay != 0.0 {
                            let _ = grad.g_add_(&(&param * self.weight_decay));
                        }
                        if self.kind == OptimizerKind::AdamW {
                            let _ = param.g_mul_scalar_(1.0 - lr * self.weight_decay);
                        }
                        let m = self.first.entry(p.name.clone()).or_insert_with(|| param.zeros_like());
                        let _ = m.lerp_(&grad, 1.0 - BETA1);
                        let scratch = self.scratch.entry(p.name.clone()).or_insert_with(|| param.zeros_like());
                        let _ = scratch.copy_(&grad);
                        let _ = scratch.g_mul_scalar_(1.0 - BETA2);
                        let v = self.second.entry(p.name.clone()).or_insert_with(|| param.zeros_like());
                        let _ = v.g_mul_scalar_(BETA2);
                        let _ = v.addcmul_(&grad, scratch);
                        let bias1 = 1.0 - BETA1.powi(*step as i32);
                        let bias2 = 1.0 - BETA2.powi(*step as i32);
                        let step_size = lr / bias1;
                        // param -= step_size · m / (sqrt(v) / sqrt(bias2) + eps)
                        let _ = v.sqrt_out(scratch);
                        let _ = scratch.g_mul_scalar_(1.0 / bias2.sqrt());
                        let _ = scratch.g_add_scalar_(EPS);
                        let _ = scratch.g_mul_scalar_(-1.0 / step_size);
                        let _ = param.addcdiv_(m, scratch);
                    }
                    OptimizerKind::Sgd => {
                        let d_p = if self.weight_decay != 0.0 { &grad + &param * self.weight_decay } else { grad };
                        let buffer = match self.first.get_mut(&p.name) {
                            Some(buf) => {
                                let _ = buf.g_mul_scalar_(MOMENTUM);
                                let _ = buf.g_add_(&d_p);
                                buf.shallow_clone()
                            }
                            None => {
                                let buf = d_p.copy();
                                self.first.insert(p.name.clone(), buf.shallow_clone());
                                buf
                            }
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
        for (prefix, map) in [("optimizer.first.", &self.first), ("optimizer.second.", &self.second)] {
            for (name, t) in map {
                out.push((format!("{prefix}{name}"), t.shallow_clone()));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    pub fn steps(&self) -> &HashMap<String, i64> {
        &self.steps
    }

    /// Restores what `state_tensors` and `steps` saved.
    pub fn load_state(&mut self, tensors: &[(String, Tensor)], steps: HashMap<String, i64>) -> Result<()> {
        let device = self.params.first().map(|p| p.tensor.device()).unwrap_or(tch::Device::Cpu);
        let known: std::collections::HashSet<&str> = self.params.iter().map(|p| p.name.as_str()).collect();
        for (name, t) in tensors {
            let (map, param) = if let Some(param) = name.strip_prefix("optimizer.first.") {
                (&mut self.first, param)
            } else if let Some(param) = name.strip_prefix("optimizer.second.") {
                (&mut self.second, param)
            } else {
                continue;
            };
            if !known.contains(param) {
                bail!("checkpoint has optimizer state for `{param}`, which the model does not have");
            }
            map.insert(param.to_string(), t.to_device(device));
        }
        self.steps = steps;
        Ok(())
    }
}
