//! Helpers shared by this crate's integration tests.

use imgtype::ImageTypeClassifier;

/// BatchNorm statistics and affine parameters as after training (a fresh model's are 0 and 1),
/// so that folding, export and parity checks are exercised on values that matter.
pub fn set_trained_statistics(model: &ImageTypeClassifier) {
    tch::no_grad(|| {
        for (name, mut t) in model.vs.variables() {
            if name.ends_with("running_var") {
                let _ = t.uniform_(0.5, 2.0);
            } else if name.ends_with("running_mean") {
                let _ = t.uniform_(-0.3, 0.3);
            } else if name.contains(".1.weight") && t.dim() == 1 {
                let _ = t.uniform_(0.5, 1.5);
            } else if name.contains(".1.bias") && t.dim() == 1 {
                let _ = t.uniform_(-0.2, 0.2);
            }
        }
    });
}
