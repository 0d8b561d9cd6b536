//! The decision rule, one for every place a class is chosen (training's validation and test
//! evaluation, `test`, the API): among classes whose probability reaches its
//! `inference.class_thresholds` entry the most probable wins, else plain argmax.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub struct DecisionRule {
    /// Minimum probability per class, in class order (0 where none is set).
    thresholds: Vec<f64>,
}

impl DecisionRule {
    /// From `inference.class_thresholds` (class name → minimum probability).
    pub fn new(class_thresholds: &BTreeMap<String, f64>, class_names: &[String]) -> Self {
        let thresholds = class_names.iter().map(|name| class_thresholds.get(name).copied().unwrap_or(0.0)).collect();
        Self { thresholds }
    }

    /// With these minimum probabilities, in class order.
    pub fn from_thresholds(thresholds: Vec<f64>) -> Self {
        Self { thresholds }
    }

    pub fn thresholds(&self) -> &[f64] {
        &self.thresholds
    }

    /// The chosen class index for one image's probabilities.
    pub fn decide(&self, probabilities: &[f64]) -> usize {
        let best_of = |allowed: &dyn Fn(usize) -> bool| {
            (0..probabilities.len())
                .filter(|&c| allowed(c))
                // Ties go to the first class, as argmax in PyTorch and the top-k order.
                .max_by(|&a, &b| probabilities[a].total_cmp(&probabilities[b]).then(b.cmp(&a)))
        };
        let passes = |c: usize| probabilities[c] >= self.thresholds.get(c).copied().unwrap_or(0.0);
        best_of(&passes).or_else(|| best_of(&|_| true)).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imgtype_base::config::Config;

    #[test]
    fn a_threshold_moves_the_choice_only_when_the_argmax_fails_it() {
        let mut config = Config::default();
        config.inference.class_thresholds.insert("full_shot".into(), 0.6);
        let rule = DecisionRule::new(&config.inference.class_thresholds, &config.data.class_names);
        assert_eq!(rule.decide(&[0.1, 0.35, 0.55, 0.0]), 1, "full_shot below its threshold: next best");
        assert_eq!(rule.decide(&[0.1, 0.2, 0.7, 0.0]), 2);
        let all_high = Config {
            inference: imgtype_base::config::InferenceConfig {
                class_thresholds: [
                    ("care_label".to_string(), 0.9),
                    ("detail_shot".to_string(), 0.9),
                    ("full_shot".to_string(), 0.9),
                    ("neck_label".to_string(), 0.9),
                ]
                .into(),
                ..Default::default()
            },
            ..Config::default()
        };
        let strict = DecisionRule::new(&all_high.inference.class_thresholds, &all_high.data.class_names);
        assert_eq!(strict.decide(&[0.1, 0.2, 0.6, 0.1]), 2, "none passes: plain argmax");
    }
}
