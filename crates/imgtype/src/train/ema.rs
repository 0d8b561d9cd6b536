//! An exponential moving average of the weights (timm's ModelEmaV2), updated after every
//! step; with `training.use_ema` it is what is validated and saved.

use std::path::Path;

use crate::config::Config;
use crate::model::ImageTypeClassifier;

/// A second model holding a copy of `model`'s current weights.
pub(super) fn copy_of(model: &ImageTypeClassifier, config: &Config) -> ImageTypeClassifier {
    let mut ema = ImageTypeClassifier::new(config, model.device());
    ema.load_tensors(&model.snapshot(), Path::new("model")).expect("same architecture");
    ema
}

/// Every floating tensor (weights and BatchNorm statistics) becomes
/// `decay · ema + (1 - decay) · model`.
pub fn update_ema(ema: &mut ImageTypeClassifier, model: &ImageTypeClassifier, decay: f64) {
    let source = model.vs.variables();
    tch::no_grad(|| {
        for (name, mut target) in ema.vs.variables() {
            if target.is_floating_point() {
                let _ = target.lerp_(&source[&name], 1.0 - decay);
            }
        }
    });
}
