//! Helpers shared by this crate's integration tests.

use imgtype::ImageTypeClassifier;

/// BatchNorm statistics and affine parameters as after training (a fresh model's are 0 and 1),
/// so that folding, export and parity checks are exercised on values that matter. Tensors are
/// drawn for in name order (`variables()` is a hash map), so a seed gives the same model.
pub fn set_trained_statistics(model: &ImageTypeClassifier) {
    let mut variables: Vec<_> = model.vs.variables().into_iter().collect();
    variables.sort_by(|a, b| a.0.cmp(&b.0));
    tch::no_grad(|| {
        for (name, mut t) in variables {
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
