//! Model EMA: every floating tensor moves to decay · ema + (1 - decay) · model, the decay
//! warming up with the number of updates (timm's ModelEmaV3).

use imgtype::train::{ema_decay_after, Ema};
use imgtype::{Config, ImageTypeClassifier};
use tch::Device;

#[test]
fn ema_update_blends_weights_and_batchnorm_statistics() {
    let mut config = Config::default();
    config.training.ema_warmup = false;
    config.training.ema_decay = 0.9;
    tch::manual_seed(1);
    let model = ImageTypeClassifier::new(&config, Device::Cpu);
    let mut ema = Ema::new(&model, config.training.ema_decay, config.training.ema_warmup);
    // The average and the model then differ: move the model.
    tch::no_grad(|| {
        for (_, mut t) in model.vs.variables() {
            if t.is_floating_point() {
                let _ = t.g_add_scalar_(1.0);
            }
        }
    });
    let before: Vec<(String, tch::Tensor)> = ema.model.vs.variables().into_iter().map(|(n, t)| (n, t.copy())).collect();
    ema.update();
    let after = ema.model.vs.variables();
    let weights = model.vs.variables();
    for (name, old) in &before {
        let expected = old * 0.9 + &weights[name] * 0.1;
        let diff = (&after[name] - expected).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "{name}: {diff}");
    }
    assert_eq!(ema.updates, 1);
}

#[test]
fn the_decay_warms_up_as_timm_model_ema_v3() {
    // timm: 1 - (1 + step / gamma) ** -power, gamma 1, power 3/4, clamped to the decay.
    for (n, expected) in [(0u64, 0.0), (7, 1.0 - 8f64.powf(-0.75)), (100, 1.0 - 101f64.powf(-0.75))] {
        assert!((ema_decay_after(0.999, true, n) - expected).abs() < 1e-12, "{n}");
    }
    assert_eq!(ema_decay_after(0.999, true, 1_000_000), 0.999, "capped at ema_decay");
    assert_eq!(ema_decay_after(0.999, false, 0), 0.999, "no warm-up: the decay from the start");

    // The first update copies the model: decay 0.
    let config = Config::default();
    tch::manual_seed(1);
    let model = ImageTypeClassifier::new(&config, Device::Cpu);
    let mut ema = Ema::new(&model, config.training.ema_decay, config.training.ema_warmup);
    tch::no_grad(|| {
        let _ = model.vs.variables()["classifier.1.weight"].shallow_clone().fill_(0.25);
    });
    ema.update();
    let w = ema.model.vs.variables()["classifier.1.weight"].mean(tch::Kind::Float).double_value(&[]);
    assert!((w - 0.25).abs() < 1e-7, "after the first warm-up update the average is the model: {w}");
}
