//! ImageNet weights as torch.hub gets them, without Python at run time: a torchvision
//! `torch.save`d state dict served from 127.0.0.1 is downloaded into `$TORCH_HOME`'s cache,
//! checked against the hash in its name, read by libtorch, and gives torchvision's features.
//! One test function: it sets TORCH_HOME for the whole process.
#![cfg(feature = "remote")]

use std::collections::HashMap;

use imgtype::config::ModelConfig;
use imgtype::model::pretrained::{hub_checkpoint_dir, resolve_weights_file};
use imgtype::{Config, ImageTypeClassifier};
use imgtype_testkit::{run_python, FileServer};
use tch::{Device, Tensor};

#[test]
fn imagenet_weights_are_downloaded_checked_cached_and_match_torchvision() {
    let dir = tempfile::tempdir().unwrap();
    run_python("tests/python/make_imagenet_weights.py", &[&dir.path()]);
    let name = std::fs::read_to_string(dir.path().join("name.txt")).unwrap();
    let server = FileServer::serve(&dir.path().join("serve"));
    let torch_home = dir.path().join("torch_home");
    std::env::set_var("TORCH_HOME", &torch_home);
    assert_eq!(hub_checkpoint_dir(), torch_home.join("hub").join("checkpoints"));

    let model_config = |file: &str| ModelConfig {
        pretrained: true,
        pretrained_url: Some(format!("{}/{file}", server.base_url)),
        ..ModelConfig::default()
    };

    // First run: downloaded into the cache, one request.
    let path = resolve_weights_file(&model_config(&name)).unwrap().unwrap();
    assert_eq!(path, hub_checkpoint_dir().join(&name));
    assert_eq!(server.hits(), 1);
    // Second run: the cache, no request.
    assert_eq!(resolve_weights_file(&model_config(&name)).unwrap().unwrap(), path);
    assert_eq!(server.hits(), 1, "the cached file is reused");

    // The backbone then computes torchvision's features.
    let mut config = Config::default();
    config.model.stochastic_depth_prob = 0.0;
    let mut model = ImageTypeClassifier::new(&config, Device::Cpu);
    imgtype::model::load_backbone_weights(&mut model, &path).unwrap();
    let reference: HashMap<String, Tensor> =
        imgtype::model::file::read_safetensors(&dir.path().join("reference.safetensors"))
            .unwrap()
            .0
            .into_iter()
            .collect();
    let features = tch::no_grad(|| model.backbone_features(&reference["input"], false));
    let diff = (features - &reference["features"]).abs().max().double_value(&[]);
    println!("backbone features vs torchvision: max |diff| = {diff:e}");
    assert!(diff <= 1e-4, "features differ from torchvision's by {diff}");

    // A download whose bytes do not match the hash in its name is refused and not kept.
    let err = format!("{:#}", resolve_weights_file(&model_config("efficientnet_b0_bad-00000000.pth")).unwrap_err());
    assert!(err.contains("corrupt") && err.contains("00000000"), "{err}");
    assert!(!hub_checkpoint_dir().join("efficientnet_b0_bad-00000000.pth").exists());
    let leftovers: Vec<_> = std::fs::read_dir(hub_checkpoint_dir()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from(&name)], "no temp file left behind");

    // Nothing cached and nothing to download: an error that says where to put the file.
    let err = format!("{:#}", resolve_weights_file(&model_config("efficientnet_b0_absent-12345678.pth")).unwrap_err());
    assert!(
        err.contains("efficientnet_b0_absent-12345678.pth")
            && err.contains(&hub_checkpoint_dir().display().to_string()),
        "{err}"
    );
    assert!(err.contains("pretrained_weights") && err.contains("model.pretrained to false"), "{err}");

    // A local .pth named by pretrained_weights is used as it is.
    let local = ModelConfig { pretrained_weights: Some(path.clone()), ..model_config("unused-0.pth") };
    assert_eq!(resolve_weights_file(&local).unwrap().unwrap(), path);
    let hits = server.hits();
    assert_eq!(resolve_weights_file(&ModelConfig { pretrained: false, ..local }).unwrap(), None);
    assert_eq!(server.hits(), hits);
}
