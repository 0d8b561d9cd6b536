//! Reading a config: the file (capped), JSON with line and column in syntax errors, objects
//! where the config has sections, the `augmentation.strength` preset, serde with the path of
//! a key whose value has the wrong type, unknown and inert keys collected, then the checks.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::{python_keys, Config, Strength};

/// A parsed config, the dotted paths of keys it did not recognise, and the keys of the
/// Python system's config it set that have no effect here (with why).
#[derive(Debug)]
pub struct LoadedConfig {
    pub config: Config,
    pub unknown_keys: Vec<String>,
    pub inert_keys: Vec<(String, &'static str)>,
}

/// Where a command looks for its config when `--config` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "config.json";

impl Config {
    /// The config a command runs with, and the file it came from: `path`, else
    /// [`DEFAULT_CONFIG_FILE`] in the working folder when present, else the defaults. `train`
    /// and `divide` alike.
    pub fn load_or_default(path: Option<&Path>) -> Result<(Config, Option<PathBuf>)> {
        if let Some(path) = path {
            return Ok((Config::load(path)?, Some(path.to_path_buf())));
        }
        let default = PathBuf::from(DEFAULT_CONFIG_FILE);
        // A link to nothing is a config meant and missing, not no config.
        if std::fs::symlink_metadata(&default).is_err() {
            return Ok((Config::default(), None));
        }
        tracing::info!("settings from {DEFAULT_CONFIG_FILE} in the working folder (--config names another)");
        let config = Config::load(&default).with_context(|| {
            format!("{DEFAULT_CONFIG_FILE} is in the working folder, and is read when no --config is given")
        })?;
        Ok((config, Some(default)))
    }

    /// Reads, parses and validates a config file. Unknown keys are logged as warnings.
    pub fn load(path: &Path) -> Result<Config> {
        // A config is a few kilobytes; the cap keeps `--config /dev/zero` from reading forever.
        let cap = crate::fsutil::ByteCap { max_bytes: 16 << 20, name: "the 16 MiB a config file may have" };
        let bytes = crate::fsutil::read_capped(path, &format!("config file {}", path.display()), cap)?;
        let text = String::from_utf8(bytes)
            .map_err(|_| anyhow::anyhow!("config file {} is not UTF-8 text", path.display()))?;
        let loaded = Self::parse(&text).with_context(|| format!("invalid config file {}", path.display()))?;
        for key in &loaded.unknown_keys {
            tracing::warn!("{}: unknown config key `{key}` is ignored (typo?)", path.display());
        }
        for (key, why) in &loaded.inert_keys {
            tracing::info!(
                "{}: `{key}` (a key of the Python system's config) has no effect here: {why}",
                path.display()
            );
        }
        if loaded.config.data.is_remote == Some(true) && loaded.config.data.base_image_path.is_some() {
            tracing::warn!(
                "{}: data.is_remote is true, so relative image keys are fetched from the CDN and \
                 data.base_image_path is not used",
                path.display()
            );
        }
        Ok(loaded.config)
    }

    /// Parses and validates JSON text (syntax errors carry line and column). An
    /// `augmentation.strength` preset fills the augmentation keys the text leaves out.
    pub fn parse(text: &str) -> Result<LoadedConfig> {
        let mut value: serde_json::Value = serde_json::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        let defaults = serde_json::to_value(Config::default()).expect("config serialises");
        check_objects(&value, &defaults, "")?;
        apply_strength_preset(&mut value);
        let mut unknown_keys = Vec::new();
        let config: Config = {
            let mut record_unknown = |path: serde_ignored::Path<'_>| unknown_keys.push(path.to_string());
            let tracked = serde_ignored::Deserializer::new(&value, &mut record_unknown);
            serde_path_to_error::deserialize(tracked).map_err(|e| {
                let key = e.path().to_string();
                if key == "." {
                    anyhow::anyhow!("{}", e.inner())
                } else {
                    anyhow::anyhow!("{key}: {}", e.inner())
                }
            })?
        };
        config.validate()?;
        let (inert, unknown): (Vec<String>, Vec<String>) =
            unknown_keys.into_iter().partition(|key| python_keys::inert_reason(key).is_some());
        let inert_keys = inert.into_iter().map(|key| {
            let why = python_keys::inert_reason(&key).expect("partitioned on it");
            (key, why)
        });
        Ok(LoadedConfig { config, unknown_keys: unknown, inert_keys: inert_keys.collect() })
    }
}

/// Fails where the text has something other than an object where the config has a section
/// or a group of settings: serde would read an array positionally as the struct's fields
/// (`"augmentation": [64]` as `image_size` 64) and a top-level `[]` as all defaults.
fn check_objects(value: &serde_json::Value, defaults: &serde_json::Value, path: &str) -> Result<()> {
    let serde_json::Value::Object(expected) = defaults else { return Ok(()) };
    let serde_json::Value::Object(given) = value else {
        let what = match value {
            serde_json::Value::Array(_) => "an array",
            serde_json::Value::String(_) => "a string",
            serde_json::Value::Number(_) => "a number",
            serde_json::Value::Bool(_) => "a boolean",
            serde_json::Value::Null => "null",
            serde_json::Value::Object(_) => unreachable!("matched above"),
        };
        let place = if path.is_empty() { "the config".to_string() } else { format!("`{path}`") };
        anyhow::bail!("{place} must be a JSON object {{…}}, not {what}");
    };
    for (key, default) in expected {
        if let Some(child) = given.get(key) {
            let child_path = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
            check_objects(child, default, &child_path)?;
        }
    }
    Ok(())
}

/// Fills the augmentation keys the text leaves out from its `strength` preset. A strength
/// that is not a preset is left for deserialisation to refuse.
fn apply_strength_preset(value: &mut serde_json::Value) {
    let Some(augmentation) = value.get_mut("augmentation").and_then(|a| a.as_object_mut()) else { return };
    let Some(strength) = augmentation.get("strength").and_then(|s| serde_json::from_value::<Strength>(s.clone()).ok())
    else {
        return;
    };
    let serde_json::Value::Object(preset) = serde_json::to_value(strength.settings()).expect("preset serialises")
    else {
        unreachable!("a struct serialises to an object")
    };
    // A preset stands for the augmentation switches, not for the image size or itself.
    for (key, value) in preset.into_iter().filter(|(key, _)| key != "image_size" && key != "strength") {
        augmentation.entry(key).or_insert(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LogLevel, Scheduler};

    #[test]
    fn defaults_validate() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn unknown_keys_are_reported_with_their_path() {
        let loaded = Config::parse(r#"{"training": {"epochs": 3, "learnig_rate": 0.1}, "extra": 1}"#).unwrap();
        assert_eq!(loaded.config.training.epochs, 3);
        assert_eq!(loaded.unknown_keys, vec!["training.learnig_rate".to_string(), "extra".to_string()]);
    }

    #[test]
    fn only_objects_where_the_config_has_sections() {
        for (text, expected) in [
            ("[]", "the config must be a JSON object {…}, not an array"),
            (r#"{"augmentation": [64]}"#, "`augmentation` must be a JSON object {…}, not an array"),
            (r#"{"data": "x"}"#, "`data` must be a JSON object {…}, not a string"),
            (r#"{"training": null}"#, "`training` must be a JSON object {…}, not null"),
            ("3", "the config must be a JSON object {…}, not a number"),
        ] {
            let err = Config::parse(text).unwrap_err().to_string();
            assert_eq!(err, expected, "{text}");
        }
        Config::parse(r#"{"augmentation": {"image_size": 64}}"#).unwrap();
    }

    #[test]
    fn syntax_error_has_line_and_column() {
        let err = Config::parse("{\n  \"training\": {\"epochs\": 3,}\n}").unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("column"), "{err}");
    }

    fn error_of(json: &str) -> String {
        format!("{:#}", Config::parse(json).unwrap_err())
    }

    #[test]
    fn invalid_values_name_key_and_value() {
        let cases = [
            (r#"{"data": {"train_ratio": 1.5}}"#, "data.train_ratio", "1.5"),
            (r#"{"data": {"train_ratio": 0.5}}"#, "must be 1", "0.5"),
            (r#"{"training": {"epochs": 0}}"#, "training.epochs", "0"),
            (r#"{"training": {"optimizer": "adagrad"}}"#, "training.optimizer", "adagrad"),
            (r#"{"training": {"scheduler": "cyclic"}}"#, "training.scheduler", "cyclic"),
            (r#"{"model": {"backbone": "resnet50"}}"#, "model.backbone", "resnet50"),
            (r#"{"validation": {"metric": "auc"}}"#, "validation.metric", "auc"),
            (r#"{"training": {"learning_rate": -0.001}}"#, "training.learning_rate", "-0.001"),
            (r#"{"data": {"class_names": []}}"#, "data.class_names", "empty"),
            (r#"{"data": {"class_names": ["a", "b", "a"]}}"#, "data.class_names", "`a`"),
            (r#"{"system": {"device": "tpu"}}"#, "system.device", "tpu"),
            (r#"{"training": {"focal_gamma": {"care_label": 2.0}}}"#, "training.focal_gamma", "detail_shot"),
            (r#"{"inference": {"class_thresholds": {"shoe": 0.5}}}"#, "inference.class_thresholds", "shoe"),
        ];
        for (json, key, value) in cases {
            let err = error_of(json);
            assert!(err.contains(key) && err.contains(value), "{json}: {err}");
        }
    }

    #[test]
    fn a_value_outside_a_choice_names_the_allowed_values() {
        for (json, key, allowed) in [
            (r#"{"training": {"optimizer": "adagrad"}}"#, "training.optimizer", ["adamw", "adam", "sgd"]),
            (r#"{"validation": {"metric": "auc"}}"#, "validation.metric", ["val_loss", "accuracy", "f1_macro"]),
            (r#"{"augmentation": {"strength": "extreme"}}"#, "augmentation.strength", ["none", "light", "strong"]),
        ] {
            let err = error_of(json);
            assert!(err.contains(key) && allowed.iter().all(|a| err.contains(a)), "{json}: {err}");
        }
    }

    #[test]
    fn python_spellings_parse_to_the_same_config() {
        let python =
            Config::parse(r#"{"training": {"scheduler": "reduce_on_plateau"}, "logging": {"log_level": "INFO"}}"#)
                .unwrap()
                .config;
        assert_eq!(python.training.scheduler, Scheduler::Plateau);
        assert_eq!(python.logging.log_level, LogLevel::Info);
    }

    #[test]
    fn wrong_type_names_the_field() {
        let err = error_of(r#"{"training": {"epochs": "ten"}}"#);
        assert!(err.contains("training.epochs") && err.contains("invalid type"), "{err}");
    }

    #[test]
    fn focal_gamma_accepts_number_list_and_map() {
        for g in ["2.0", "[1, 2, 3, 4]", r#"{"care_label": 1, "detail_shot": 2, "full_shot": 2, "neck_label": 3}"#] {
            Config::parse(&format!(r#"{{"training": {{"focal_gamma": {g}}}}}"#)).unwrap();
        }
    }

    #[test]
    fn strength_presets_fill_unset_keys_only() {
        let none = Config::parse(r#"{"augmentation": {"strength": "none"}}"#).unwrap().config.augmentation;
        assert!(!none.horizontal_flip && none.rotation == 0.0 && !none.color_jitter && !none.random_erasing);
        let strong =
            Config::parse(r#"{"augmentation": {"strength": "strong", "color_jitter": false}}"#).unwrap().config;
        let a = strong.augmentation;
        assert!(a.random_erasing && a.mixup_alpha > 0.0 && a.cutmix_alpha > 0.0 && a.rotation == 20.0);
        assert!(!a.color_jitter, "an explicit key beats the preset");
        let err = format!("{:#}", Config::parse(r#"{"augmentation": {"strength": "extreme"}}"#).unwrap_err());
        assert!(err.contains("augmentation.strength") && err.contains("extreme"), "{err}");
    }

    #[test]
    fn hidden_dim_null_means_640() {
        let loaded = Config::parse(r#"{"model": {"hidden_dim": null}}"#).unwrap();
        assert_eq!(loaded.config.model.effective_hidden_dim(), 640);
    }

    /// `system.num_workers` is one rule wherever images are decoded: N threads, 0 every core.
    #[test]
    fn decode_threads_are_num_workers_or_every_core() {
        let mut config = Config::default();
        config.system.num_workers = 3;
        assert_eq!(config.system.decode_threads(), 3);
        config.system.num_workers = 0;
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(config.system.decode_threads(), cores);
    }
}
