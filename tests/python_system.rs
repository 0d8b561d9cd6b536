//! A user of the Python system switches in one step: its shipped config.json runs as it is
//! (only the CDN address points at a 127.0.0.1 stand-in), ImageNet weights come from
//! torch.hub's cache with no Python and no request, images come from the CDN because
//! `data.is_remote` is true and `base_image_path` is "" (unset), and every key the Python
//! system defines is recognised.

use std::process::Command;

use imgtype_testkit::{ok, only_entry, read_json, repo_root, run, run_python, FileServer};

const DIVIDE: &str = env!("CARGO_BIN_EXE_divide");
const TRAIN: &str = env!("CARGO_BIN_EXE_train");

#[test]
fn the_python_systems_config_trains_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let sample = std::fs::read_to_string(repo_root().join("image_data.csv")).unwrap();
    let subset: String = sample.lines().take(25).map(|l| format!("{l}\n")).collect();
    std::fs::write(work.join("image_data.csv"), subset).unwrap();
    ok(run(work, DIVIDE, &["--input-file", "image_data.csv", "--random-state", "5"]));

    // torchvision's weights file, as a user who ran the Python system has it cached.
    let made = work.join("made");
    run_python("tests/python/make_imagenet_weights.py", &[&made]);
    let name = std::fs::read_to_string(made.join("name.txt")).unwrap();
    let torch_home = work.join("torch_home");
    let checkpoints = torch_home.join("hub/checkpoints");
    std::fs::create_dir_all(&checkpoints).unwrap();
    std::fs::copy(made.join("serve").join(&name), checkpoints.join("efficientnet_b0_rwightman-7f5810bc.pth")).unwrap();

    let cdn = FileServer::serve(&repo_root().join("sample_images"));
    let shipped = std::fs::read_to_string(repo_root().join("tests/data/python_system_config.json")).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&shipped).unwrap();
    assert_eq!(config["data"]["base_image_path"], "", "the shipped config leaves the folder unset");
    config["data"]["base_image_url"] = cdn.base_url.clone().into();
    std::fs::write(work.join("config.json"), serde_json::to_string_pretty(&config).unwrap()).unwrap();

    let output = Command::new(TRAIN)
        .args(["--config", "config.json", "--epochs", "1"])
        .current_dir(work)
        .env("TORCH_HOME", &torch_home)
        .env_remove("S3_CLOUDFRONT_DOMAIN")
        .output()
        .unwrap();
    let output = ok(output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("unknown config key"), "every key of the Python config is known:\n{stderr}");
    for key in ["data.filter_categories", "model.unfreeze_backbone_epoch", "system.pin_memory", "logging.wandb_entity"]
    {
        assert!(
            stderr.contains(&format!("`{key}` (a key of the Python system's config) has no effect here")),
            "{key}:\n{stderr}"
        );
    }
    assert!(stderr.contains("efficientnet_b0_rwightman-7f5810bc.pth (cached)"), "{stderr}");
    assert!(stderr.contains("loaded") && stderr.contains("backbone tensors"), "{stderr}");
    assert!(!stderr.contains("skipping unreadable image"), "images come from the CDN:\n{stderr}");
    assert!(cdn.hits() > 0, "the CDN was asked for images");

    let run_dir = only_entry(&work.join("results"));

    // Nothing cached and nothing to download: the run does not start (no random fallback).
    config["model"]["pretrained_url"] = format!("{}/efficientnet_b0_absent-12345678.pth", cdn.base_url).into();
    std::fs::write(work.join("offline.json"), serde_json::to_string_pretty(&config).unwrap()).unwrap();
    let output = Command::new(TRAIN)
        .args(["--config", "offline.json", "--epochs", "1"])
        .current_dir(work)
        .env("TORCH_HOME", work.join("empty_torch_home"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("efficientnet_b0_absent-12345678.pth") && stderr.contains("hub/checkpoints"), "{stderr}");
    assert_eq!(std::fs::read_dir(work.join("results")).unwrap().count(), 1, "no second run folder");
    let saved = read_json(&run_dir.join("config.json"));
    assert_eq!(saved["data"]["is_remote"], true);
    assert_eq!(saved["data"]["base_image_path"], serde_json::Value::Null);
    assert_eq!(saved["augmentation"]["image_size"], 256);
    let evaluation = read_json(&run_dir.join("evaluation_results.json"));
    for key in ["accuracy", "precision_macro", "recall_weighted", "f1_macro", "f1_weighted"] {
        assert!(evaluation["metrics"][key].is_number(), "{key} in {evaluation}");
    }
}

/// A MobileNet backbone end to end: torchvision's ImageNet file for it from torch.hub's
/// cache, frozen then unfrozen training, and `test` on the run.
#[test]
fn a_mobilenet_backbone_trains_from_its_torchvision_weights_and_tests() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let sample = std::fs::read_to_string(repo_root().join("image_data.csv")).unwrap();
    let subset: String = sample.lines().take(25).map(|l| format!("{l}\n")).collect();
    std::fs::write(work.join("products.csv"), subset).unwrap();
    ok(run(work, DIVIDE, &["--input-file", "products.csv", "--random-state", "5"]));
    let made = work.join("made");
    run_python("tests/python/mobilenet_reference.py", &[&made]);
    let checkpoints = work.join("torch_home/hub/checkpoints");
    std::fs::create_dir_all(&checkpoints).unwrap();
    std::fs::copy(made.join("mobilenet_v3_small_weights.pth"), checkpoints.join("mobilenet_v3_small-047dcff4.pth"))
        .unwrap();
    let config = serde_json::json!({
        "data": {"base_image_path": repo_root().join("sample_images")},
        "model": {"backbone": "mobilenet_v3_small", "freeze_backbone_epochs": 1},
        "training": {"batch_size": 16, "epochs": 2, "learning_rate": 0.002},
        "augmentation": {"image_size": 64},
        "system": {"num_workers": 2, "device": "cpu"}
    });
    std::fs::write(work.join("config.json"), config.to_string()).unwrap();
    let output = ok(Command::new(TRAIN)
        .args(["--config", "config.json"])
        .current_dir(work)
        .env("TORCH_HOME", work.join("torch_home"))
        .output()
        .unwrap());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("mobilenet_v3_small-047dcff4.pth (cached)") && stderr.contains("backbone unfrozen"),
        "{stderr}"
    );
    let run_dir = only_entry(&work.join("results"));
    let history = read_json(&run_dir.join("logs/training_results.json"));
    assert_eq!(history["history"][0]["backbone_frozen"], true);
    let test_out = ok(run(work, env!("CARGO_BIN_EXE_test"), &["--model-path", run_dir.to_str().unwrap()]));
    assert!(String::from_utf8_lossy(&test_out.stdout).contains("test       accuracy"));
    let saved = read_json(&run_dir.join("config.json"));
    assert_eq!(saved["model"]["backbone"], "mobilenet_v3_small");
}
