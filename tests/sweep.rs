//! `train --sweep`: experiments from a list and a grid, each a run folder of the sweep
//! folder; the results table and best config; an interrupted sweep resumed, and three
//! job-array members plus `--summarize`, give the same table as one straight run; a bad
//! dotted key is refused before anything runs.

use std::os::unix::ffi::OsStringExt;
use std::path::Path;

use imgtype_testkit::{copy_dir, ok, read_csv, read_json, repo_root, run, run_interrupted, sample_images};

const TRAIN: &str = env!("CARGO_BIN_EXE_train");
const DIVIDE: &str = env!("CARGO_BIN_EXE_divide");

/// A work folder with split CSVs of 22 products, a tiny base config and a sweep file of
/// one named experiment and a 2-value grid.
fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let sample = std::fs::read_to_string(repo_root().join("image_data.csv")).unwrap();
    let subset: String = sample.lines().take(23).map(|l| format!("{l}\n")).collect();
    std::fs::write(work.join("products.csv"), subset).unwrap();
    ok(run(work, DIVIDE, &["--input-file", "products.csv", "--random-state", "4"]));
    let base = serde_json::json!({
        "data": {"base_image_path": sample_images()},
        "model": {"pretrained": false, "freeze_backbone_epochs": 0, "backbone": "mobilenet_v3_small"},
        "training": {"batch_size": 16, "epochs": 2, "learning_rate": 0.002, "backbone_lr": 0.002},
        "augmentation": {"image_size": 32},
        "logging": {"log_frequency": 1},
        "system": {"num_workers": 1, "num_threads": 1, "device": "cpu", "seed": 5}
    });
    std::fs::write(work.join("base.json"), base.to_string()).unwrap();
    let sweep = serde_json::json!({
        "base_config": "base.json",
        "experiments": [{"name": "focal", "overrides": {"training.focal_loss": true, "training.focal_gamma": {"care_label": 1.0, "detail_shot": 2.0, "full_shot": 2.0, "neck_label": 3.0}}}],
        "grid": {"training.learning_rate": [0.001, 0.004]},
        "max_experiments": 4,
        "seed": 1
    });
    std::fs::write(work.join("sweep.json"), sweep.to_string()).unwrap();
    dir
}

/// The run folder of an experiment (beside it, `models/` holds the copy of its best model).
fn run_folder_of(experiment_dir: &Path) -> std::path::PathBuf {
    let runs: Vec<_> = std::fs::read_dir(experiment_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("run_"))
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    runs[0].clone()
}

/// The results table without its timing columns.
fn table(sweep_dir: &Path) -> Vec<Vec<String>> {
    let (header, rows) = read_csv(&sweep_dir.join("sweep_results.csv"));
    let keep: Vec<usize> = header
        .iter()
        .enumerate()
        .filter(|(_, h)| *h != "seconds" && *h != "images_per_second")
        .map(|(i, _)| i)
        .collect();
    rows.iter().map(|r| keep.iter().map(|&i| r[i].clone()).collect()).collect()
}

#[test]
fn a_sweep_runs_resumes_spreads_over_members_and_summarizes_alike() {
    let dir = setup();
    let work = dir.path();

    // Straight.
    let out = ok(run(work, TRAIN, &["--sweep", "sweep.json", "--sweep-dir", "straight"]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("3 experiment(s) run") && stdout.contains("best:"), "{stdout}");
    let straight = work.join("straight");
    let (header, rows) = read_csv(&straight.join("sweep_results.csv"));
    assert_eq!(rows.len(), 3);
    for column in [
        "experiment",
        "status",
        "val_f1_weighted",
        "val_accuracy",
        "test_accuracy",
        "epochs_run",
        "f1_care_label",
        "overrides",
    ] {
        assert!(header.contains(&column.to_string()), "{column} in {header:?}");
    }
    let names: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    for name in ["focal", "grid_000", "grid_001"] {
        assert!(names.contains(&name), "{names:?}");
        let run_dir = run_folder_of(&straight.join(name));
        assert!(run_dir.join("model/best_model.safetensors").is_file(), "{name} is a normal run folder");
    }
    assert!(rows.iter().all(|r| r[1] == "finished"));
    let scores: Vec<f64> = rows.iter().map(|r| r[2].parse().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "sorted by validation F1: {scores:?}");
    let focal = read_json(&run_folder_of(&straight.join("focal")).join("config.json"));
    assert_eq!(focal["training"]["focal_loss"], true);
    assert_eq!(focal["training"]["focal_gamma"]["neck_label"], 3.0);
    let best = read_json(&straight.join("best_config.json"));
    let winner = &rows[0][0];
    let expected_lr = match winner.as_str() {
        "grid_000" => 0.001,
        "grid_001" => 0.004,
        _ => 0.002,
    };
    assert_eq!(best["training"]["learning_rate"].as_f64().unwrap(), expected_lr, "winner {winner}");
    assert!(straight.join("sweep_comparison.png").is_file());
    let straight_table = table(&straight);

    // Interrupted inside the second experiment, then the same command again.
    let mut experiments_started = 0;
    let (code, _, log) = run_interrupted(work, TRAIN, &["--sweep", "sweep.json", "--sweep-dir", "resumed"], |line| {
        if line.contains("INFO experiment ") {
            experiments_started += 1;
        }
        experiments_started == 2 && line.contains("epoch 1/2 1/")
    });
    assert_eq!(code, Some(130), "{log}");
    // `train --resume` of the sweep folder continues it from its plan, without the sweep file,
    // on the plan's device and to the end.
    copy_dir(&work.join("resumed"), &work.join("resumed_from_plan"));
    for (option, value) in [("--device", "cpu"), ("--stop-after", "1")] {
        let out = run(work, TRAIN, &["--resume", "resumed_from_plan", option, value]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(&format!("{option} with --resume of a sweep folder")),
            "{stderr}"
        );
    }
    std::fs::rename(work.join("sweep.json"), work.join("sweep.json.aside")).unwrap();
    let out = ok(run(work, TRAIN, &["--resume", "resumed_from_plan"]));
    std::fs::rename(work.join("sweep.json.aside"), work.join("sweep.json")).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("1 finished earlier"), "{stdout}");
    assert_eq!(table(&work.join("resumed_from_plan")), straight_table, "resumed from its plan, same table");
    // Resumed from another working folder, the plan's relative `paths.data_dir` leads elsewhere:
    // refused, saying where it was looked for.
    std::fs::create_dir_all(work.join("elsewhere")).unwrap();
    let out = run(&work.join("elsewhere"), TRAIN, &["--resume", "../resumed_from_plan"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let elsewhere = work.join("elsewhere").canonicalize().unwrap();
    let says = format!("the split files in data (relative to the working folder {})", elsewhere.display());
    assert!(!out.status.success() && stderr.contains(&says), "{stderr}");
    // A plan edited so that it would train outside its folder, or over its own files, is
    // refused before anything runs, naming the plan and what is wrong.
    let plan = read_json(&work.join("resumed_from_plan/sweep_plan.json"));
    std::fs::create_dir_all(work.join("userres/run_20260101_000000_deadbeef")).unwrap();
    std::fs::write(work.join("userres/run_20260101_000000_deadbeef/notes.txt"), "precious").unwrap();
    for (edit, says) in [
        ("../userres", "experiment name `../userres` must be letters, digits"),
        ("..", "experiment name `..` must be letters"),
        ("sweep_results.csv", "experiment name `sweep_results.csv` is the name of a file the sweep folder holds"),
        ("grid_000", "two experiments are named `grid_000`"),
        ("epochs=0", "`epochs` is 0, not between 1 and 100000"),
    ] {
        let mut edited = plan.clone();
        match edit.strip_prefix("epochs=") {
            Some(epochs) => edited["epochs"] = epochs.parse::<u64>().unwrap().into(),
            None => edited["experiments"][0]["name"] = edit.into(),
        }
        std::fs::create_dir_all(work.join("edited_plan")).unwrap();
        std::fs::write(work.join("edited_plan/sweep_plan.json"), edited.to_string()).unwrap();
        let out = run(work, TRAIN, &["--resume", "edited_plan"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("edited_plan/sweep_plan.json is not a sweep plan"),
            "{stderr}"
        );
        assert!(stderr.contains(says), "{edit}: {stderr}");
        assert_eq!(std::fs::read_dir(work.join("edited_plan")).unwrap().count(), 1, "{edit}: nothing written");
    }
    assert!(work.join("userres/run_20260101_000000_deadbeef/notes.txt").is_file());
    // A plan that is no regular file (a FIFO) is named, not taken for a run folder without one.
    std::fs::remove_file(work.join("edited_plan/sweep_plan.json")).unwrap();
    let fifo = std::ffi::CString::new(work.join("edited_plan/sweep_plan.json").into_os_string().into_vec()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let out = run(work, TRAIN, &["--resume", "edited_plan"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("edited_plan/sweep_plan.json is not a sweep plan"), "{stderr}");
    assert!(stderr.contains("not a regular file"), "{stderr}");
    std::fs::remove_file(work.join("edited_plan/sweep_plan.json")).unwrap();
    // An experiment's folder that is a link out of the sweep folder is refused: its runs would
    // be trained or removed there.
    std::fs::write(work.join("edited_plan/sweep_plan.json"), plan.to_string()).unwrap();
    std::os::unix::fs::symlink("../userres", work.join("edited_plan/focal")).unwrap();
    let out = run(work, TRAIN, &["--resume", "edited_plan"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("edited_plan/focal is a symbolic link"), "{stderr}");
    assert!(work.join("userres/run_20260101_000000_deadbeef/notes.txt").is_file());
    let out = ok(run(work, TRAIN, &["--sweep", "sweep.json", "--sweep-dir", "resumed"]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("1 finished earlier"), "{stdout}");
    assert_eq!(table(&work.join("resumed")), straight_table, "resumed sweep, same table");

    // Three members of a job array, then --summarize.
    for member in ["0/3", "1/3", "2/3"] {
        ok(run(work, TRAIN, &["--sweep", "sweep.json", "--sweep-dir", "array", "--member", member]));
        if member == "0/3" {
            let partial = ok(run(work, TRAIN, &["--summarize", "array"]));
            let text = String::from_utf8_lossy(&partial.stdout);
            assert!(text.contains("not finished:"), "{text}");
        }
    }
    ok(run(work, TRAIN, &["--summarize", "array"]));
    assert_eq!(table(&work.join("array")), straight_table, "members + summarize, same table");

    // Another experiment's run copied in is refused before anything trains, naming the key
    // that differs; --summarize counts it as damaged and still ranks the others.
    let swapped = work.join("swapped");
    copy_dir(&straight, &swapped);
    std::fs::remove_dir_all(swapped.join("grid_000")).unwrap();
    copy_dir(&swapped.join("focal"), &swapped.join("grid_000"));
    let before = std::fs::read(swapped.join("sweep_results.csv")).unwrap();
    let out = run(work, TRAIN, &["--sweep", "sweep.json", "--sweep-dir", "swapped"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let differs = "was not trained as planned (`training.learning_rate` is 0.002 in its config.json, 0.001 in \
                   swapped/sweep_plan.json";
    assert!(!out.status.success() && stderr.contains("swapped/grid_000/run_") && stderr.contains(differs), "{stderr}");
    assert_eq!(std::fs::read(swapped.join("sweep_results.csv")).unwrap(), before, "nothing ran or was written");
    let out = ok(run(work, TRAIN, &["--summarize", "swapped"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("experiment grid_000: swapped/grid_000/run_") && stderr.contains(differs), "{stderr}");
    let statuses: Vec<(String, String)> =
        read_csv(&swapped.join("sweep_results.csv")).1.into_iter().map(|r| (r[0].clone(), r[1].clone())).collect();
    assert!(statuses.contains(&("grid_000".into(), "damaged".into())), "{statuses:?}");
    assert_eq!(statuses.iter().filter(|(_, status)| status == "finished").count(), 2, "{statuses:?}");
    // A run not as planned beside the one counted (here a later finished run copied in from
    // another experiment) makes the experiment damaged too, as it would stop a rerun.
    let hidden = work.join("hidden");
    copy_dir(&straight, &hidden);
    copy_dir(&run_folder_of(&hidden.join("grid_000")), &hidden.join("focal/run_29991231_000000_deadbeef"));
    let out = ok(run(work, TRAIN, &["--summarize", "hidden"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let named = "experiment focal: hidden/focal/run_29991231_000000_deadbeef was not trained as planned";
    assert!(stderr.contains(named), "{stderr}");
    let statuses = read_csv(&hidden.join("sweep_results.csv")).1;
    assert!(statuses.iter().any(|r| r[0] == "focal" && r[1] == "damaged"), "{statuses:?}");
    // A plan whose base config was edited: every experiment is damaged, and the earlier
    // winner's best_config.json is removed, not left to be trained as the best.
    let edited = work.join("edited");
    copy_dir(&straight, &edited);
    let mut plan = read_json(&edited.join("sweep_plan.json"));
    plan["base_config"]["training"]["epochs"] = 3.into();
    std::fs::write(edited.join("sweep_plan.json"), plan.to_string()).unwrap();
    let out = ok(run(work, TRAIN, &["--summarize", "edited"]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("edited/best_config.json (an earlier winner's) removed"));
    assert!(!edited.join("best_config.json").exists());
    // One that is not a plan at all is refused, naming it: a value out of range, or of a wrong type.
    plan["base_config"]["training"]["epochs"] = 1_000_000.into();
    std::fs::write(edited.join("sweep_plan.json"), plan.to_string()).unwrap();
    let out = run(work, TRAIN, &["--summarize", "edited"]);
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("edited/sweep_plan.json is not a sweep plan")
    );
    plan["base_config"]["training"]["learning_rate"] = "0.002".into();
    std::fs::write(edited.join("sweep_plan.json"), plan.to_string()).unwrap();
    let out = run(work, TRAIN, &["--summarize", "edited"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("edited/sweep_plan.json is not a sweep plan"), "{stderr}");
    // A sweep folder moved elsewhere is the same sweep: its runs still count.
    std::fs::rename(work.join("array"), work.join("moved")).unwrap();
    ok(run(work, TRAIN, &["--summarize", "moved"]));
    assert_eq!(table(&work.join("moved")), straight_table, "moved, same table");
}

/// An experiment interrupted after its first checkpoint is resumed, not started over, also
/// when `paths.checkpoint_dir` is not the default folder.
#[test]
fn an_interrupted_experiment_resumes_from_a_custom_checkpoint_folder() {
    let dir = setup();
    let work = dir.path();
    let mut base: serde_json::Value = read_json(&work.join("base.json"));
    base["paths"] = serde_json::json!({"checkpoint_dir": "saved_states"});
    std::fs::write(work.join("base.json"), base.to_string()).unwrap();
    let sweep = serde_json::json!({"base_config": "base.json", "experiments": [{"name": "only", "overrides": {}}]});
    std::fs::write(work.join("one.json"), sweep.to_string()).unwrap();
    let args = ["--sweep", "one.json", "--sweep-dir", "custom"];
    let (code, _, log) = run_interrupted(work, TRAIN, &args, |line| line.contains("epoch 2/2 1/"));
    assert_eq!(code, Some(130), "{log}");
    let interrupted = run_folder_of(&work.join("custom/only"));
    assert!(interrupted.join("saved_states/latest_checkpoint.safetensors").is_file());
    let out = ok(run(work, TRAIN, &args));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("resuming"), "{stderr}");
    assert_eq!(run_folder_of(&work.join("custom/only")), interrupted, "the same run folder, resumed");
}

#[test]
fn a_bad_dotted_key_or_value_is_refused_before_anything_runs() {
    let dir = setup();
    let work = dir.path();
    for (overrides, expected) in [
        (serde_json::json!({"training.learnig_rate": 0.1}), "training.learnig_rate"),
        (serde_json::json!({"training.epochs": "ten"}), "training.epochs"),
    ] {
        let sweep = serde_json::json!({"base_config": "base.json", "experiments": [
            {"name": "fine", "overrides": {}},
            {"name": "typo", "overrides": overrides}
        ]});
        std::fs::write(work.join("bad.json"), sweep.to_string()).unwrap();
        let out = run(work, TRAIN, &["--sweep", "bad.json"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(stderr.contains("typo") && stderr.contains(expected), "{stderr}");
        assert!(!work.join("tuning_results").exists(), "nothing ran");
    }
}

/// `test --fit-thresholds` on a trained model: thresholds from the validation split never
/// lower the validation figure, the copy of the model carries them, and `test` with that
/// copy decides with them.
#[test]
fn fitted_thresholds_do_not_lower_the_validation_metric() {
    let dir = setup();
    let work = dir.path();
    let base =
        std::fs::read_to_string(work.join("base.json")).unwrap().replace("mobilenet_v3_small", "efficientnet_b0");
    std::fs::write(work.join("b0.json"), base).unwrap();
    ok(run(work, TRAIN, &["--config", "b0.json"]));
    let run_dir = imgtype_testkit::only_entry(&work.join("results"));
    let out = ok(run(
        work,
        env!("CARGO_BIN_EXE_test"),
        &["--model-path", run_dir.to_str().unwrap(), "--fit-thresholds", "--json"],
    ));
    let fit: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (before, after) = (fit["validation_before"].as_f64().unwrap(), fit["validation_after"].as_f64().unwrap());
    assert!(after >= before, "{fit}");
    assert!(fit["test_before"].is_number() && fit["test_after"].is_number(), "{fit}");
    let model_file = std::path::PathBuf::from(fit["model_file"].as_str().unwrap());
    assert_eq!(model_file, run_dir.join("model/best_model_thresholds.safetensors"));
    let model = imgtype::ImageTypeClassifier::load(&model_file, tch::Device::Cpu).unwrap();
    let stored: serde_json::Value = serde_json::to_value(&model.config().inference.class_thresholds).unwrap();
    assert_eq!(stored, fit["thresholds"], "the copy carries the fitted thresholds");
    // Refitting the copy finds nothing better: the fit reached a fixed point.
    let again = ok(run(
        work,
        env!("CARGO_BIN_EXE_test"),
        &[
            "--model-path",
            model_file.to_str().unwrap(),
            "--fit-thresholds",
            "--json",
            "--output-path",
            "again.safetensors",
        ],
    ));
    let again: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again["validation_before"], fit["validation_after"], "{again}");
}
