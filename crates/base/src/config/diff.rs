//! Which keys two configs differ in: a folder that refuses a command because it was started
//! with another config says where, not only that.

use serde_json::Value;

use super::Config;

/// Keys listed in a description before "and N more".
const LISTED: usize = 3;

/// The dotted keys (`training.epochs`) whose values differ between `a` and `b`, in the
/// config's order, each with its two values as JSON (`None`: an entry of a map the other has,
/// as a class of `inference.class_thresholds`).
pub fn differing_keys(a: &Config, b: &Config) -> Vec<(String, Option<Value>, Option<Value>)> {
    let (a, b) = (json(a), json(b));
    let mut found = Vec::new();
    walk(String::new(), Some(&a), Some(&b), &mut found);
    found
}

/// `` `training.epochs` is 12 in A, 6 in B `` for each differing key (the first three, then
/// how many more), joined by "; "; `None` when the configs are the same.
pub fn describe_differences(a: &Config, a_is: &str, b: &Config, b_is: &str) -> Option<String> {
    if a == b {
        return None;
    }
    let keys = differing_keys(a, b);
    let shown = |value: &Option<Value>| value.as_ref().map_or("absent".to_string(), Value::to_string);
    let mut parts: Vec<String> = keys
        .iter()
        .take(LISTED)
        .map(|(key, x, y)| format!("`{key}` is {} in {a_is}, {} in {b_is}", shown(x), shown(y)))
        .collect();
    match keys.len() {
        // Equal as JSON yet not as values: a NaN, which JSON writes as null.
        0 => parts.push(format!("a number that is not a number differs between {a_is} and {b_is}")),
        n if n > LISTED => parts.push(format!("and {} more key(s)", n - LISTED)),
        _ => {}
    }
    Some(parts.join("; "))
}

fn json(config: &Config) -> Value {
    // Serializing plain structs of numbers, strings and paths cannot fail.
    serde_json::to_value(config).unwrap_or(Value::Null)
}

fn walk(key: String, a: Option<&Value>, b: Option<&Value>, found: &mut Vec<(String, Option<Value>, Option<Value>)>) {
    match (a, b) {
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            for name in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                let inner = if key.is_empty() { name.clone() } else { format!("{key}.{name}") };
                walk(inner, x.get(name), y.get(name), found);
            }
        }
        _ if a != b => found.push((key, a.cloned(), b.cloned())),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_each_differing_key_with_both_values() {
        let a = Config::default();
        let mut b = Config::default();
        assert_eq!(describe_differences(&a, "A", &b, "B"), None);
        b.training.epochs = a.training.epochs + 3;
        b.system.seed = 7;
        b.data.class_names = vec!["x".into(), "y".into()];
        let keys: Vec<String> = differing_keys(&a, &b).into_iter().map(|(k, _, _)| k).collect();
        assert_eq!(keys, ["data.class_names", "training.epochs", "system.seed"]);
        let text = describe_differences(&a, "the plan", &b, "this command").unwrap();
        assert!(
            text.contains(&format!(
                "`training.epochs` is {} in the plan, {} in this command",
                a.training.epochs, b.training.epochs
            )),
            "{text}"
        );
        assert!(text.contains(r#"`data.class_names` is ["care_label","detail_shot","full_shot","neck_label"] in the plan, ["x","y"] in this command"#), "{text}");
        b.inference.class_thresholds.insert("x".into(), 0.9);
        let text = describe_differences(&a, "A", &b, "B").unwrap();
        assert!(text.contains("`inference.class_thresholds.x` is absent in A, 0.9 in B"), "{text}");
        b.paths.data_dir = "elsewhere".into();
        let text = describe_differences(&a, "A", &b, "B").unwrap();
        assert!(text.ends_with("; and 2 more key(s)"), "{text}");
    }

    #[test]
    fn a_difference_in_the_last_bit_of_a_number_is_named() {
        let a = Config::default();
        let mut b = Config::default();
        b.training.learning_rate = f64::from_bits(a.training.learning_rate.to_bits() + 1);
        let text = describe_differences(&a, "A", &b, "B").unwrap();
        assert!(text.starts_with("`training.learning_rate` is 0.0001 in A, 0.00010000000000000002 in B"), "{text}");
    }
}
