//! The sweep file and the experiments it stands for. Every experiment's config is built and
//! checked before anything runs: a dotted key that is not in the config, or a value the
//! config refuses, is an error naming the experiment and the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::Config;

/// `sweep.json`: a base config and either named experiments or a grid (or both).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepFile {
    /// The config every experiment starts from (relative to the sweep file's folder).
    pub base_config: PathBuf,
    /// Named experiments, each a set of dotted-key overrides (`"training.focal_gamma": 2.0`).
    #[serde(default)]
    pub experiments: Vec<NamedExperiment>,
    /// Key → values; every combination is an experiment (`grid_000`, …).
    #[serde(default)]
    pub grid: BTreeMap<String, Vec<Value>>,
    /// At most this many grid combinations, drawn at random (seeded) when there are more.
    pub max_experiments: Option<usize>,
    #[serde(default = "default_seed")]
    pub seed: u64,
}

fn default_seed() -> u64 {
    42
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NamedExperiment {
    pub name: String,
    #[serde(default)]
    pub overrides: BTreeMap<String, Value>,
}

/// One experiment, ready to run.
#[derive(Debug, Clone)]
pub struct Experiment {
    pub name: String,
    pub overrides: BTreeMap<String, Value>,
    pub config: Config,
}

/// How long each experiment trains: `--epochs N` (the Python tuning script's rule, patience
/// max(N / 2, 5)) or `--quick-test` (the preset `train --quick-test` applies to one run).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochsOverride {
    Epochs(usize),
    QuickTest,
}

impl EpochsOverride {
    pub(super) fn apply(self, config: &mut Config) {
        match self {
            EpochsOverride::Epochs(epochs) => {
                config.training.epochs = epochs;
                config.training.patience = (epochs / 2).max(5);
            }
            EpochsOverride::QuickTest => config.apply_quick_test(),
        }
    }
}

/// Reads `path` and builds every experiment's config, in order: the named experiments, then
/// the grid's combinations.
pub fn plan(path: &Path, epochs: Option<EpochsOverride>) -> Result<(SweepFile, Config, Vec<Experiment>)> {
    let text =
        crate::fsutil::read_text_capped(path, &format!("sweep file {}", path.display()), crate::fsutil::JSON_FILE_CAP)?;
    let sweep: SweepFile =
        serde_json::from_str(&text).with_context(|| format!("{}: not a valid sweep file", path.display()))?;
    let base_path = path.parent().unwrap_or(Path::new(".")).join(&sweep.base_config);
    let base = Config::load(&base_path).with_context(|| format!("{}: base_config", path.display()))?;
    let mut named: Vec<NamedExperiment> = sweep.experiments.clone();
    named.extend(grid_experiments(&sweep)?);
    if named.is_empty() {
        bail!("{}: no experiments (give `experiments`, `grid`, or both)", path.display());
    }
    check_experiment_names(named.iter().map(|e| e.name.as_str())).with_context(|| format!("{}", path.display()))?;
    let mut experiments = Vec::with_capacity(named.len());
    for experiment in named {
        let mut config = apply_overrides(&base, &experiment.overrides)
            .with_context(|| format!("{}: experiment `{}`", path.display(), experiment.name))?;
        if let Some(epochs) = epochs {
            epochs.apply(&mut config);
        }
        experiments.push(Experiment { name: experiment.name, overrides: experiment.overrides, config });
    }
    Ok((sweep, base, experiments))
}

/// The files a sweep folder holds beside its experiments' folders.
const SWEEP_FILES: [&str; 5] =
    ["sweep_plan.json", "sweep_results.csv", "sweep_results.json", "best_config.json", "sweep_comparison.png"];

/// Names become folder names of the sweep folder: letters, digits, `-`, `_`, `.`, `=` only,
/// not starting with `.` (so never `..`), each once, none a file the sweep folder holds.
pub(super) fn check_experiment_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<()> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-_.=".contains(c);
    let mut seen = std::collections::HashSet::new();
    for name in names {
        if name.is_empty() || name.starts_with('.') || !name.chars().all(allowed) || name.len() > 200 {
            bail!(
                "experiment name `{}` must be letters, digits, `-`, `_`, `.` or `=`, not starting with `.` (it names \
                 a folder)",
                name.escape_debug()
            );
        }
        if SWEEP_FILES.contains(&name) {
            bail!("experiment name `{name}` is the name of a file the sweep folder holds");
        }
        if !seen.insert(name) {
            bail!("two experiments are named `{name}`");
        }
    }
    Ok(())
}

/// Every combination of the grid's values (keys in sorted order), down to `max_experiments`
/// drawn at random with `seed`, kept in grid order.
fn grid_experiments(sweep: &SweepFile) -> Result<Vec<NamedExperiment>> {
    if sweep.grid.is_empty() {
        return Ok(Vec::new());
    }
    if let Some((key, _)) = sweep.grid.iter().find(|(_, values)| values.is_empty()) {
        bail!("grid key `{key}` has no values");
    }
    let mut combinations: Vec<BTreeMap<String, Value>> = vec![BTreeMap::new()];
    for (key, values) in &sweep.grid {
        combinations = combinations
            .into_iter()
            .flat_map(|partial| {
                values.iter().map(move |v| {
                    let mut next = partial.clone();
                    next.insert(key.clone(), v.clone());
                    next
                })
            })
            .collect();
    }
    let mut indices: Vec<usize> = (0..combinations.len()).collect();
    if let Some(max) = sweep.max_experiments.filter(|&m| m < combinations.len()) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(sweep.seed);
        indices.shuffle(&mut rng);
        indices.truncate(max);
        indices.sort_unstable();
    }
    Ok(indices
        .into_iter()
        .map(|i| NamedExperiment { name: format!("grid_{i:03}"), overrides: combinations[i].clone() })
        .collect())
}

/// `base` with each dotted key set to its value. A key must name an existing config key
/// (the sections' keys with their defaults); the result must be a valid config.
pub fn apply_overrides(base: &Config, overrides: &BTreeMap<String, Value>) -> Result<Config> {
    let mut json = serde_json::to_value(base).expect("a config serialises");
    for (key, value) in overrides {
        set_dotted(&mut json, key, value.clone())?;
    }
    let loaded = Config::parse(&json.to_string())?;
    if let Some(key) = loaded.unknown_keys.first() {
        bail!("`{key}` is not a config key");
    }
    Ok(loaded.config)
}

fn set_dotted(json: &mut Value, key: &str, value: Value) -> Result<()> {
    let parts: Vec<&str> = key.split('.').collect();
    if parts.len() != 2 {
        bail!("`{key}` is not a dotted config key (section.key, as `training.learning_rate`)");
    }
    let Some(section) = json.get_mut(parts[0]).and_then(Value::as_object_mut) else {
        bail!("`{key}`: there is no config section `{}`", parts[0]);
    };
    match section.get_mut(parts[1]) {
        Some(slot) => *slot = value,
        None => bail!("`{key}` is not a config key"),
    }
    Ok(())
}

/// The base config file's JSON with `overrides` applied: what `best_config.json` holds.
pub fn overridden_json(base: &Config, overrides: &BTreeMap<String, Value>) -> Result<Value> {
    let mut json = serde_json::to_value(base).expect("a config serialises");
    for (key, value) in overrides {
        set_dotted(&mut json, key, value.clone())?;
    }
    Ok(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_must_name_existing_keys_with_valid_values() {
        let base = Config::default();
        let ok =
            apply_overrides(&base, &[("training.learning_rate".to_string(), serde_json::json!(0.01))].into()).unwrap();
        assert_eq!(ok.training.learning_rate, 0.01);
        for (key, value, expected) in [
            ("training.learnig_rate", serde_json::json!(0.1), "training.learnig_rate"),
            ("trainer.epochs", serde_json::json!(3), "trainer"),
            ("training.epochs", serde_json::json!("ten"), "training.epochs"),
            ("epochs", serde_json::json!(3), "dotted"),
        ] {
            let err = format!("{:#}", apply_overrides(&base, &[(key.to_string(), value)].into()).unwrap_err());
            assert!(err.contains(expected), "{key}: {err}");
        }
    }

    /// `--quick-test` is one preset: a sweep's experiments get what `train --quick-test` gives
    /// one run, over each experiment's own overrides.
    #[test]
    fn quick_test_is_the_one_preset_for_runs_and_sweeps() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("base.json"), r#"{"training": {"epochs": 40, "patience": 9}}"#).unwrap();
        let sweep = r#"{"base_config": "base.json", "experiments": [{"name": "lr", "overrides": {"training.learning_rate": 0.01}}]}"#;
        std::fs::write(dir.path().join("sweep.json"), sweep).unwrap();
        let (_, base, experiments) = plan(&dir.path().join("sweep.json"), Some(EpochsOverride::QuickTest)).unwrap();
        let mut one_run = base.clone();
        one_run.apply_quick_test();
        let config = &experiments[0].config;
        assert_eq!((config.training.epochs, config.training.patience, config.model.freeze_backbone_epochs), (5, 3, 2));
        let quick = |c: &Config| (c.training.epochs, c.training.patience, c.model.freeze_backbone_epochs);
        assert_eq!(quick(config), quick(&one_run));
        assert_eq!(config.training.learning_rate, 0.01);
        let (_, _, experiments) = plan(&dir.path().join("sweep.json"), Some(EpochsOverride::Epochs(4))).unwrap();
        assert_eq!((experiments[0].config.training.epochs, experiments[0].config.training.patience), (4, 5));
    }
}
