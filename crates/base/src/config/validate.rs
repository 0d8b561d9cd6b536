//! Checks of values that parse but make no sense (ratios that do not sum to 1, a negative
//! learning rate, a class threshold for an unknown class); each error names the key and
//! the value.

use anyhow::{bail, Result};

use super::{AugmentationConfig, Config, DataConfig, FocalGamma, InferenceConfig, ModelConfig, TrainingConfig};

impl Config {
    pub fn validate(&self) -> Result<()> {
        validate_data(&self.data)?;
        validate_model(&self.model)?;
        validate_training(&self.training, &self.data.class_names)?;
        validate_augmentation(&self.augmentation)?;
        if self.validation.val_frequency == 0 {
            bail!("validation.val_frequency must be at least 1, got 0");
        }
        validate_inference(&self.inference, &self.data.class_names)?;
        for (key, path) in
            [("paths.log_dir", &self.paths.log_dir), ("paths.checkpoint_dir", &self.paths.checkpoint_dir)]
        {
            if path.is_absolute() || path.as_os_str().is_empty() {
                bail!("{key} names a folder inside each run folder; got `{}`", path.display());
            }
        }
        for (key, path) in [
            ("data.csv_path", &self.data.csv_path),
            ("paths.data_dir", &self.paths.data_dir),
            ("paths.result_dir", &self.paths.result_dir),
            ("paths.test_result_dir", &self.paths.test_result_dir),
            ("paths.model_dir", &self.paths.model_dir),
        ] {
            if path.as_os_str().is_empty() {
                bail!("{key} is empty; give a path (relative paths are from the working folder)");
            }
        }
        if self.logging.log_frequency == 0 {
            bail!("logging.log_frequency must be at least 1, got 0");
        }
        if self.system.num_workers > MAX_WORKERS {
            bail!("system.num_workers is at most {MAX_WORKERS}, got {}", self.system.num_workers);
        }
        if let Some(threads) = self.system.num_threads {
            check_count("system.num_threads", threads, MAX_WORKERS)?;
        }
        Ok(())
    }
}

/// Whether train, validation and test ratios add up to 1 (within rounding): the one rule for
/// the config's `data` section and `divide`'s options.
pub fn ratios_sum_to_one(ratios: [f64; 3]) -> bool {
    (ratios.iter().sum::<f64>() - 1.0).abs() <= 1e-6
}

fn validate_data(d: &DataConfig) -> Result<()> {
    for (key, value) in
        [("data.train_ratio", d.train_ratio), ("data.val_ratio", d.val_ratio), ("data.test_ratio", d.test_ratio)]
    {
        check_unit_interval(key, value)?;
    }
    if !ratios_sum_to_one([d.train_ratio, d.val_ratio, d.test_ratio]) {
        let sum = d.train_ratio + d.val_ratio + d.test_ratio;
        bail!(
            "data.train_ratio + data.val_ratio + data.test_ratio must be 1, got {} + {} + {} = {sum}",
            d.train_ratio,
            d.val_ratio,
            d.test_ratio
        );
    }
    check_unit_interval("data.max_bad_image_ratio", d.max_bad_image_ratio)?;
    check_positive("data.download_timeout_secs", d.download_timeout_secs)?;
    if d.download_timeout_secs > MAX_DOWNLOAD_TIMEOUT_SECS {
        bail!(
            "data.download_timeout_secs is at most {MAX_DOWNLOAD_TIMEOUT_SECS} (an hour), got {}",
            shown(d.download_timeout_secs)
        );
    }
    if d.max_image_bytes == 0 {
        bail!("data.max_image_bytes must be at least 1, got 0");
    }
    if d.download_retries > MAX_DOWNLOAD_RETRIES {
        bail!("data.download_retries is at most {MAX_DOWNLOAD_RETRIES}, got {}", d.download_retries);
    }
    if let Some(url) = &d.base_image_url {
        crate::keys::parse_url(url).map_err(|e| anyhow::anyhow!("data.base_image_url: {e:#}"))?;
    }
    if d.max_image_pixels == Some(0) {
        bail!("data.max_image_pixels must be at least 1 (or null for no limit), got 0");
    }
    if d.class_names.is_empty() {
        bail!("data.class_names is empty: list the classes in the model's output order");
    }
    if d.class_names.len() < 2 {
        bail!("data.class_names needs at least 2 classes, got {:?}", d.class_names);
    }
    let mut seen = std::collections::HashSet::new();
    for name in &d.class_names {
        if name.trim().is_empty() {
            bail!("data.class_names contains an empty name");
        }
        if name.trim().eq_ignore_ascii_case(RESERVED_CLASS_NAME) {
            bail!(
                "data.class_names contains `{name}`: `{RESERVED_CLASS_NAME}` marks an image that could not be \
                 predicted in every output, so no class may be called that"
            );
        }
        if !seen.insert(name) {
            bail!("data.class_names lists `{name}` more than once");
        }
    }
    Ok(())
}

fn validate_model(m: &ModelConfig) -> Result<()> {
    check_unit_interval_open("model.dropout_rate", m.dropout_rate)?;
    check_unit_interval_open("model.stochastic_depth_prob", m.stochastic_depth_prob)?;
    if let Some(h) = m.hidden_dim {
        if !(1..=MAX_HIDDEN_DIM).contains(&h) {
            bail!("model.hidden_dim must be between 1 and {MAX_HIDDEN_DIM} (or null), got {h}");
        }
    }
    Ok(())
}

fn validate_training(t: &TrainingConfig, class_names: &[String]) -> Result<()> {
    check_count("training.epochs", t.epochs, MAX_EPOCHS)?;
    check_count("training.batch_size", t.batch_size, MAX_BATCH_SIZE)?;
    check_positive("training.learning_rate", t.learning_rate)?;
    check_at_most("training.learning_rate", t.learning_rate, MAX_RATE)?;
    if let Some(lr) = t.backbone_lr {
        check_non_negative("training.backbone_lr", lr)?;
        check_at_most("training.backbone_lr", lr, MAX_RATE)?;
    }
    check_non_negative("training.weight_decay", t.weight_decay)?;
    check_at_most("training.weight_decay", t.weight_decay, MAX_RATE)?;
    check_non_negative("training.min_delta", t.min_delta)?;
    if let Some(clip) = t.gradient_clip_norm {
        check_non_negative("training.gradient_clip_norm", clip)?;
    }
    check_unit_interval_open("training.label_smoothing", t.label_smoothing)?;
    check_unit_interval_open("training.ema_decay", t.ema_decay)?;
    check_non_negative("training.focal_alpha", t.focal_alpha)?;
    validate_focal_gamma(&t.focal_gamma, class_names)
}

fn validate_focal_gamma(gamma: &FocalGamma, class_names: &[String]) -> Result<()> {
    match gamma {
        FocalGamma::Scalar(g) => check_non_negative("training.focal_gamma", *g),
        FocalGamma::PerClass(gs) => {
            if gs.len() != class_names.len() {
                bail!(
                    "training.focal_gamma lists {} values but data.class_names has {} classes",
                    gs.len(),
                    class_names.len()
                );
            }
            gs.iter().try_for_each(|g| check_non_negative("training.focal_gamma", *g))
        }
        FocalGamma::ByClass(map) => {
            for name in class_names {
                if !map.contains_key(name) {
                    bail!("training.focal_gamma has no value for class `{name}` (every class needs one)");
                }
            }
            for (name, g) in map {
                if !class_names.contains(name) {
                    bail!("training.focal_gamma names `{name}`, which is not in data.class_names");
                }
                check_non_negative(&format!("training.focal_gamma.{name}"), *g)?;
            }
            Ok(())
        }
    }
}

fn validate_augmentation(a: &AugmentationConfig) -> Result<()> {
    if !(16..=1024).contains(&a.image_size) {
        bail!("augmentation.image_size must be between 16 and 1024 pixels, got {}", a.image_size);
    }
    if !(0.0..=180.0).contains(&a.rotation) {
        bail!("augmentation.rotation must be between 0 and 180 degrees, got {}", a.rotation);
    }
    for (key, value) in [
        ("augmentation.brightness", a.brightness),
        ("augmentation.contrast", a.contrast),
        ("augmentation.saturation", a.saturation),
    ] {
        check_non_negative(key, value)?;
        check_at_most(key, value, MAX_RATE)?;
    }
    if !(0.0..=0.5).contains(&a.hue) {
        bail!("augmentation.hue must be between 0 and 0.5, got {}", a.hue);
    }
    check_unit_interval("augmentation.random_erasing_prob", a.random_erasing_prob)?;
    check_non_negative("augmentation.mixup_alpha", a.mixup_alpha)?;
    check_at_most("augmentation.mixup_alpha", a.mixup_alpha, MAX_BETA_ALPHA)?;
    check_non_negative("augmentation.cutmix_alpha", a.cutmix_alpha)?;
    check_at_most("augmentation.cutmix_alpha", a.cutmix_alpha, MAX_BETA_ALPHA)
}

fn validate_inference(i: &InferenceConfig, class_names: &[String]) -> Result<()> {
    if i.max_batch_delay_ms > 10_000 {
        bail!("inference.max_batch_delay_ms is at most 10000 (10 s; a few ms is usual), got {}", i.max_batch_delay_ms);
    }
    check_count("inference.batch_size", i.batch_size, MAX_BATCH_SIZE)?;
    check_unit_interval("inference.confidence_threshold", i.confidence_threshold)?;
    if !(MIN_TEMPERATURE..=MAX_TEMPERATURE).contains(&i.temperature) {
        bail!(
            "inference.temperature must be between {MIN_TEMPERATURE} and {MAX_TEMPERATURE} (1 leaves the logits as \
             they are; a smaller one overflows fp32 logits into NaN probabilities), got {}",
            shown(i.temperature)
        );
    }
    for (name, threshold) in &i.class_thresholds {
        if !class_names.contains(name) {
            bail!("inference.class_thresholds names `{name}`, which is not in data.class_names");
        }
        check_unit_interval(&format!("inference.class_thresholds.{name}"), *threshold)?;
    }
    Ok(())
}

/// What outputs write in place of a class for an image that could not be predicted.
pub const RESERVED_CLASS_NAME: &str = "ERROR";

/// Sizes a file can set that something is allocated or spawned from: checked before either.
pub const MAX_BATCH_SIZE: usize = 4096;
pub const MAX_EPOCHS: usize = 100_000;
pub const MAX_WORKERS: usize = 256;
pub const MAX_HIDDEN_DIM: i64 = 16_384;
pub const MAX_DOWNLOAD_RETRIES: u32 = 100;
pub const MAX_DOWNLOAD_TIMEOUT_SECS: f64 = 3600.0;

/// A number as a person reads it: plain, or in exponent form when that is shorter (1e-310
/// is 300 digits long in plain form).
fn shown(value: f64) -> String {
    let plain = value.to_string();
    if plain.len() > 16 {
        format!("{value:e}")
    } else {
        plain
    }
}
/// `inference.temperature`'s range: fp32 logits of a sane model (|logit| < 10⁴) divided by
/// 0.01 stay far from overflowing; calibration fits within 0.05–20.
pub const MIN_TEMPERATURE: f64 = 0.01;
pub const MAX_TEMPERATURE: f64 = 100.0;

fn check_count(key: &str, value: usize, max: usize) -> Result<()> {
    if !(1..=max).contains(&value) {
        bail!("{key} must be between 1 and {max}, got {value}");
    }
    Ok(())
}

fn check_unit_interval(key: &str, value: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&value) {
        bail!("{key} must be between 0 and 1, got {value}");
    }
    Ok(())
}

fn check_unit_interval_open(key: &str, value: f64) -> Result<()> {
    if !(0.0..1.0).contains(&value) {
        bail!("{key} must be in [0, 1), got {value}");
    }
    Ok(())
}

fn check_positive(key: &str, value: f64) -> Result<()> {
    if !(value > 0.0 && value.is_finite()) {
        bail!("{key} must be a positive number, got {value}");
    }
    Ok(())
}

/// Learning rates, weight decay and colour jitter: far above anything that trains (0.1 is
/// already large); beyond it a run only diverges to NaN.
const MAX_RATE: f64 = 10.0;
/// Mixup's and CutMix's Beta(α, α): at 100 it already always draws ≈ 0.5; far above it the
/// sampler overflows.
const MAX_BETA_ALPHA: f64 = 100.0;

fn check_at_most(key: &str, value: f64, max: f64) -> Result<()> {
    if value > max {
        bail!("{key} must be at most {max}, got {value}");
    }
    Ok(())
}

fn check_non_negative(key: &str, value: f64) -> Result<()> {
    if !(value >= 0.0 && value.is_finite()) {
        bail!("{key} must not be negative, got {value}");
    }
    Ok(())
}
