//! Model EMA: every floating tensor moves to decay · ema + (1 - decay) · model.
#![cfg(feature = "train")]

use imgtype::train::update_ema;
use imgtype::{Config, ImageTypeClassifier};
use tch::Device;

#[test]
fn ema_update_blends_weights_and_batchnorm_statistics() {
    let config = Config::default();
    tch::manual_seed(1);
    let model = ImageTypeClassifier::new(&config, Device::Cpu);
    tch::manual_seed(2);
    let mut ema = ImageTypeClassifier::new(&config, Device::Cpu);
    tch::no_grad(|| {
        let _ = ema.vs.variables()["backbone.features.0.1.running_mean"].shallow_clone().fill_(1.0);
    });
    let before = ema.vs.variables();
    let before: Vec<(String, tch::Tensor)> = before.into_iter().map(|(n, t)| (n, t.copy())).collect();
    update_ema(&mut ema, &model, 0.9);
    let after = ema.vs.variables();
    let weights = model.vs.variables();
    for (name, old) in &before {
        let expected = old * 0.9 + &weights[name] * 0.1;
        let diff = (&after[name] - expected).abs().max().double_value(&[]);
        assert!(diff < 1e-6, "{name}: {diff}");
    }
    let mean = after["backbone.features.0.1.running_mean"].mean(tch::Kind::Float).double_value(&[]);
    assert!((mean - 0.9).abs() < 1e-6, "running mean 1.0 blended with 0.0 at decay 0.9: {mean}");
}
