//! Each default lives in one place, the `Default` impls (augmentation: the `medium`
//! preset). The README's key table and strength table, and the shipped `config.json`,
//! are checked against them here; a failure prints the rows the README should have.

use std::collections::BTreeMap;

use imgtype::config::{Config, Strength};
use serde_json::Value;

fn readme() -> String {
    std::fs::read_to_string(imgtype_testkit::repo_root().join("README.md")).unwrap()
}

/// `section.key` → default value, for every key of the config.
fn default_keys() -> BTreeMap<String, Value> {
    let mut keys = BTreeMap::new();
    let Value::Object(sections) = serde_json::to_value(Config::default()).unwrap() else { panic!("config object") };
    for (section, value) in sections {
        let Value::Object(entries) = value else { panic!("{section} is not a section") };
        for (key, value) in entries {
            keys.insert(format!("{section}.{key}"), value);
        }
    }
    keys
}

/// The README rows `| \`key\` | \`default as JSON\` | meaning |` of the configuration table.
fn readme_keys(readme: &str) -> BTreeMap<String, String> {
    let section = readme.split("## Configuration").nth(1).expect("README has a Configuration section");
    let mut rows = BTreeMap::new();
    for line in section.lines().skip_while(|l| !l.starts_with("| key")).skip(2) {
        if !line.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let key = cells[1].trim_matches('`').to_string();
        let default = cells[2].trim_matches('`').to_string();
        assert!(rows.insert(key.clone(), default).is_none(), "README lists `{key}` twice");
    }
    rows
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

#[test]
fn readme_key_table_matches_the_defaults() {
    let defaults = default_keys();
    let readme = readme_keys(&readme());
    let expected: String =
        defaults.iter().map(|(k, v)| format!("| `{k}` | `{}` | … |\n", serde_json::to_string(v).unwrap())).collect();
    let listed: Vec<&String> = readme.keys().collect();
    assert_eq!(listed, defaults.keys().collect::<Vec<_>>(), "README keys differ; one row per key:\n{expected}");
    for (key, value) in &defaults {
        let written: Value = serde_json::from_str(&readme[key])
            .unwrap_or_else(|e| panic!("README default of `{key}` is not JSON ({e}): {}", readme[key]));
        assert!(same(&written, value), "README says `{key}` defaults to {written}, the code to {value}");
    }
}

#[test]
fn shipped_config_differs_from_the_defaults_only_where_it_says() {
    let text = std::fs::read_to_string(imgtype_testkit::repo_root().join("config.json")).unwrap();
    let loaded = Config::parse(&text).unwrap();
    assert!(loaded.unknown_keys.is_empty(), "{:?}", loaded.unknown_keys);
    let shipped: Value = serde_json::from_str(&text).unwrap();
    let defaults = default_keys();
    for (section, entries) in shipped.as_object().unwrap() {
        for (key, value) in entries.as_object().unwrap() {
            let dotted = format!("{section}.{key}");
            // The bundled sample's folder, so `train` runs on it from the repository root.
            if dotted == "data.base_image_path" {
                assert_eq!(value, "sample_images");
                continue;
            }
            assert!(
                same(value, &defaults[&dotted]),
                "config.json sets `{dotted}` = {value}, the default is {}",
                defaults[&dotted]
            );
        }
    }
}

/// The strength table: `| name | flip | rotation | jitter (b/c/s/h) | erasing (p) | mixup | cutmix |`.
#[test]
fn readme_strength_table_matches_the_presets() {
    let readme = readme();
    let on_off = |on: bool| if on { "on" } else { "off" };
    for strength in Strength::ALL {
        let a = strength.settings();
        let name = serde_json::to_value(strength).unwrap().as_str().unwrap().to_string();
        let label = if strength == Strength::default() { format!("{name} (default)") } else { name };
        let row = format!(
            "| {label} | {} | {} | {} ({}/{}/{}/{}) | {} (p {}) | {} | {} |",
            on_off(a.horizontal_flip),
            a.rotation,
            on_off(a.color_jitter),
            a.brightness,
            a.contrast,
            a.saturation,
            a.hue,
            on_off(a.random_erasing),
            a.random_erasing_prob,
            a.mixup_alpha,
            a.cutmix_alpha
        );
        assert!(readme.lines().any(|l| l == row), "README's strength table lacks the row\n{row}");
    }
}

/// Every key, given a value of the wrong type, is refused with an error naming the key.
#[test]
fn every_key_with_a_wrong_type_is_refused_naming_it() {
    for (key, default) in default_keys() {
        let (section, name) = key.split_once('.').unwrap();
        let mut wrong = vec![serde_json::json!({"nested": true})];
        wrong.push(match default {
            Value::String(_) => serde_json::json!(7),
            // Optional keys (paths, URLs, numbers): no optional key is a boolean.
            Value::Null if key == "data.is_remote" => serde_json::json!("?"),
            Value::Null => serde_json::json!(true),
            _ => serde_json::json!("?"),
        });
        for value in wrong {
            let text = serde_json::json!({ section: { name: value.clone() } }).to_string();
            let err = format!("{:#}", Config::parse(&text).expect_err(&format!("{key} = {value} is accepted")));
            assert!(err.contains(&key), "{key} = {value}: {err}");
        }
    }
}

/// The README lists every key of the Python system's config that has no effect here, with
/// the reason the log line gives.
#[test]
fn readme_lists_the_python_keys_without_effect() {
    let readme = readme();
    for (key, why) in imgtype::config::python_keys::inert_keys() {
        let row = format!("| `{key}` | {why} |");
        assert!(readme.lines().any(|l| l == row), "README lacks the row\n{row}");
    }
}

/// The Python system's shipped config.json (a verbatim copy): every key is known, its
/// empty strings are unset, and what it sets has the Python system's meaning.
#[test]
fn the_python_systems_config_parses_with_every_key_known() {
    let path = imgtype_testkit::repo_root().join("tests/data/python_system_config.json");
    let loaded = Config::parse(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(loaded.unknown_keys.is_empty(), "{:?}", loaded.unknown_keys);
    let inert: Vec<&str> = loaded.inert_keys.iter().map(|(k, _)| k.as_str()).collect();
    assert!(inert.contains(&"data.filter_categories") && inert.contains(&"system.prefetch_factor"), "{inert:?}");
    assert!(inert.iter().all(|k| imgtype::config::python_keys::inert_reason(k).is_some()));
    let c = loaded.config;
    assert_eq!(c.data.base_image_path, None, "\"\" is unset");
    assert_eq!(c.data.base_image_url, None, "\"\" is unset");
    assert_eq!(c.data.is_remote, Some(true));
    assert_eq!(c.augmentation.image_size, 256);
    assert!(c.system.mixed_precision && c.model.pretrained && c.logging.use_wandb);
    assert_eq!(c.model.freeze_backbone_epochs, 3);
}
