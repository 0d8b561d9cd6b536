//! `train --cross-validate K`: folds over every image of the three split files, each a run
//! folder; out-of-fold predictions from the one model that did not train on an image; label
//! issues that find labels planted wrong, by the same confident learning as cleanlab on the
//! same file; an interrupted cross-validation resumed, and job-array members plus
//! `--summarize`, give what one straight run gives.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use imgtype_testkit::{copy_dir, ok, read_csv, read_json, repo_root, run, run_interrupted, sample_images};

const TRAIN: &str = env!("CARGO_BIN_EXE_train");
const DIVIDE: &str = env!("CARGO_BIN_EXE_divide");
const SPLITS: [&str; 3] = ["train_data.csv", "validation_data.csv", "test_data.csv"];

/// `products` first products of the sample divided into `work/data`.
fn divided_sample(work: &Path, products: usize) {
    let sample = std::fs::read_to_string(repo_root().join("image_data.csv")).unwrap();
    let subset: String = sample.lines().take(products + 1).map(|l| format!("{l}\n")).collect();
    std::fs::write(work.join("products.csv"), subset).unwrap();
    ok(run(work, DIVIDE, &["--input-file", "products.csv", "--random-state", "2025"]));
}

fn write_config(work: &Path, name: &str, config: serde_json::Value) {
    std::fs::write(work.join(name), config.to_string()).unwrap();
}

/// Moves every 25th image of the split files to the next class; returns the moved
/// (image_path, product_id) pairs.
fn plant_wrong_labels(work: &Path) -> BTreeSet<(String, String)> {
    let classes = ["care_label", "detail_shot", "full_shot", "neck_label"];
    let mut planted = BTreeSet::new();
    let mut position = 0;
    for split in SPLITS {
        let (header, mut rows) = read_csv(&work.join("data").join(split));
        assert_eq!(header, ["product_id", "image_path", "image_type"]);
        for row in rows.iter_mut() {
            position += 1;
            if position % 25 == 0 {
                let next = (classes.iter().position(|c| *c == row[2]).unwrap() + 1) % classes.len();
                row[2] = classes[next].to_string();
                planted.insert((row[1].clone(), row[0].clone()));
            }
        }
        let body: String = rows.iter().map(|r| format!("{}\n", r.join(","))).collect();
        std::fs::write(work.join("data").join(split), format!("product_id,image_path,image_type\n{body}")).unwrap();
    }
    planted
}

fn column(header: &[String], name: &str) -> usize {
    header.iter().position(|h| h == name).unwrap_or_else(|| panic!("column {name} in {header:?}"))
}

#[test]
fn cross_validation_finds_planted_labels_as_cleanlab_does() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    divided_sample(work, 1000);
    let planted = plant_wrong_labels(work);
    assert_eq!(planted.len(), 15);
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo_root().join("configs/demo.json")).unwrap()).unwrap();
    config["data"]["csv_path"] = serde_json::json!("products.csv");
    // A copy of the photos: one is spoilt below.
    copy_dir(&sample_images(), &work.join("images"));
    config["data"]["base_image_path"] = serde_json::json!(work.join("images"));
    config["training"]["epochs"] = serde_json::json!(8);
    write_config(work, "config.json", config);
    let out = ok(run(work, TRAIN, &["--config", "config.json", "--cross-validate", "3"]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("3 fold(s) trained") && stdout.contains("k-fold: accuracy"), "{stdout}");
    let cv = imgtype_testkit::only_entry(&work.join("results"));
    let name = cv.file_name().unwrap().to_string_lossy().to_string();
    assert!(name.starts_with("cv_") && name.len() == "cv_YYYYMMDD_HHMMSS_12345678".len(), "{name}");

    let images = check_folds(work, &cv);
    let total = images.len();

    // Out-of-fold predictions: every image, from its fold's model.
    let (header, oof) = read_csv(&cv.join("oof_predictions.csv"));
    assert_eq!(oof.len(), total);
    let probability_columns: Vec<usize> =
        header.iter().enumerate().filter(|(_, h)| h.starts_with("prob_")).map(|(i, _)| i).collect();
    assert_eq!(probability_columns.len(), 4);
    for (row, image) in oof.iter().zip(&images) {
        assert_eq!((&row[0], &row[1], &row[4]), (&image[0], &image[1], &image[4]));
        let sum: f64 = probability_columns.iter().map(|&i| row[i].parse::<f64>().unwrap()).sum();
        assert!((sum - 1.0).abs() < 1e-4, "{row:?}");
    }
    let results = read_json(&cv.join("cv_results.json"));
    let accuracies: Vec<f64> =
        results["folds"].as_array().unwrap().iter().map(|f| f["accuracy"].as_f64().unwrap()).collect();
    let mean = accuracies.iter().sum::<f64>() / 3.0;
    assert!((results["accuracy"]["mean"].as_f64().unwrap() - mean).abs() < 1e-12);
    let (_, table) = read_csv(&cv.join("cv_results.csv"));
    assert_eq!(table.iter().map(|r| r[0].as_str()).collect::<Vec<_>>(), ["1", "2", "3", "mean", "std"]);

    // Label issues: most suspect first; the planted labels near the top.
    let (header, issues) = read_csv(&cv.join("label_issues.csv"));
    let quality: Vec<f64> = issues.iter().map(|r| r[column(&header, "label_quality")].parse().unwrap()).collect();
    assert!(quality.windows(2).all(|w| w[0] <= w[1]), "{quality:?}");
    let found = issues.iter().take(2 * planted.len()).filter(|r| planted.contains(&(r[0].clone(), r[1].clone())));
    let found = found.count();
    eprintln!("{found} of {} planted labels in the top {}", planted.len(), 2 * planted.len());
    assert!(found >= 13, "{found} of {} planted labels in the top {}:\n{issues:?}", planted.len(), 2 * planted.len());
    assert!(cv.join("label_issues.png").is_file());
    let fold = |r: &Vec<String>| r[column(&header, "fold")].clone();
    assert!(
        issues.iter().all(|r| r[column(&header, "why")].starts_with(&format!("fold {}'s model: ", fold(r)))),
        "{issues:?}"
    );

    check_same_issues_as_cleanlab(&cv, &header, &issues);
    let probabilities_alone = std::fs::read(cv.join("label_issues.csv")).unwrap();

    // Interrupted while it embeds: nothing is written, the folder keeps the files it had.
    let before: Vec<Vec<u8>> = written_by_summarize(&cv);
    let summarize_with_neighbours = ["--summarize", cv.to_str().unwrap(), "--neighbours", "10"];
    let (code, _, log) =
        run_interrupted(work, TRAIN, &summarize_with_neighbours, |line| line.contains("nearest neighbours' labels"));
    assert_eq!(code, Some(130), "{log}");
    assert!(log.contains("interrupt received: stopping before the results are written"), "{log}");
    assert!(
        log.contains(&format!("interrupted before the results were written: `train --summarize {}`", cv.display())),
        "{log}"
    );
    assert!(written_by_summarize(&cv) == before, "a file changed:\n{log}");

    // The same folds judged again with each image's 10 nearest held-out neighbours blended in.
    let out = ok(run(work, TRAIN, &summarize_with_neighbours));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("with 10 neighbours' labels"), "{stdout}");
    assert_eq!(read_json(&cv.join("cv_results.json"))["neighbours"], 10);
    let (header, issues) = read_csv(&cv.join("label_issues.csv"));
    check_same_issues_as_cleanlab(&cv, &header, &issues);
    check_neighbours_as_torchvision(&cv);
    let found = issues.iter().take(2 * planted.len()).filter(|r| planted.contains(&(r[0].clone(), r[1].clone())));
    assert!(found.count() >= 13, "{issues:?}");

    // More neighbours than a fold holds: each image's vote is over all the others of its fold.
    let smallest = (1..=3).map(|f| images.iter().filter(|row| row[4] == f.to_string()).count()).min().unwrap();
    let out = ok(run(work, TRAIN, &["--summarize", cv.to_str().unwrap(), "--neighbours", "1000"]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let says =
        format!("with 1000 neighbours' labels, at most {} in the smallest fold: all its other images)", smallest - 1);
    assert!(stdout.contains(&says), "{says}\n{stdout}");

    // A photo spoilt since: the neighbours cannot be had for every image, so the judgement is
    // the models' probabilities alone, as without --neighbours, and the warning names the photo.
    let (header, oof) = read_csv(&cv.join("oof_predictions.csv"));
    let spoilt = &oof[0][column(&header, "image_path")];
    std::fs::write(work.join("images").join(spoilt), b"not a photo").unwrap();
    let out = ok(run(work, TRAIN, &summarize_with_neighbours));
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let fold = &oof[0][column(&header, "fold")];
    let warning = format!(
        "1 out-of-fold image(s) could not be read again to embed (the first, held out in fold {fold}: {spoilt}: not an image"
    );
    assert!(stderr.contains(&warning), "{warning}\n{stderr}");
    assert!(stdout.contains("by confident learning on the models' probabilities)"), "{stdout}");
    assert_eq!(read_json(&cv.join("cv_results.json"))["neighbours"], 0);
    assert!(!read_csv(&cv.join("oof_predictions.csv")).0.iter().any(|h| h.starts_with("neighbours_")));
    assert!(std::fs::read(cv.join("label_issues.csv")).unwrap() == probabilities_alone, "label_issues.csv changed");

    // Folders it cannot summarize: it says what each is not.
    for (folder, says) in [
        (work.join("nowhere"), "nowhere: no such folder (--summarize takes a cross-validation or sweep folder)"),
        (cv.join("fold_1"), "fold_1 is neither a cross-validation (no cv_plan.json) nor a sweep (no sweep_plan.json)"),
    ] {
        let out = run(work, TRAIN, &["--summarize", folder.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(says), "{says}\n{stderr}");
    }

    // images.csv edited since the folds were dealt (a row listed twice): refused, nothing written.
    let images_csv = std::fs::read_to_string(cv.join("images.csv")).unwrap();
    let second_row = images_csv.lines().nth(1).unwrap();
    let fold = second_row.split(',').nth(4).unwrap().to_string();
    std::fs::write(cv.join("images.csv"), format!("{images_csv}{second_row}\n")).unwrap();
    let before = written_by_summarize(&cv);
    let out = run(work, TRAIN, &["--summarize", cv.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("images.csv is not the file ") && stderr.contains("(its fingerprint differs)"), "{stderr}");
    // A plan from before images.csv's fingerprint was kept: the folds' counts still catch it.
    let mut plan = read_json(&cv.join("cv_plan.json"));
    assert!(plan.as_object_mut().unwrap().remove("images_fingerprint").is_some());
    std::fs::write(cv.join("cv_plan.json"), plan.to_string()).unwrap();
    let out = run(work, TRAIN, &["--summarize", cv.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let planned = images.iter().filter(|row| row[4] == fold).count();
    let says = format!("images.csv: fold {fold} lists {} images but ", planned + 1);
    assert!(stderr.contains(&says) && stderr.contains(&format!("cv_plan.json counted {planned}: ")), "{stderr}");
    assert!(stderr.contains("one of the two was changed since; start a new cross-validation"), "{stderr}");
    assert!(written_by_summarize(&cv) == before);
}

fn written_by_summarize(cv: &Path) -> Vec<Vec<u8>> {
    ["oof_predictions.csv", "label_issues.csv", "label_issues.png", "cv_results.json", "cv_results.csv"]
        .iter()
        .map(|name| std::fs::read(cv.join(name)).unwrap())
        .collect()
}

/// `neighbours_<class>` are the label shares of each image's 10 nearest held-out images of its
/// fold, by cosine similarity of torchvision's `avgpool(features(x))` under that fold's best
/// model (each image resized by Pillow, not by us: a few near-ties may go the other way).
fn check_neighbours_as_torchvision(cv: &Path) {
    let script = r#"
import csv, glob, json, sys
import numpy as np, torch
from PIL import Image
from safetensors.torch import load_file
from torchvision.models import efficientnet_b0
cv, base = sys.argv[1], sys.argv[2]
rows = list(csv.DictReader(open(cv + "/oof_predictions.csv")))
classes = [c[5:] for c in rows[0] if c.startswith("prob_")]
mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
agree, rows_seen, worst = 0, 0, 0.0
for fold in sorted({r["fold"] for r in rows}):
    mine = [r for r in rows if r["fold"] == fold]
    weights = load_file(glob.glob(f"{cv}/fold_{fold}/run_*/model/best_model.safetensors")[0])
    net = efficientnet_b0()
    prefix = "backbone.features."
    net.features.load_state_dict({k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)})
    net.eval()
    pixels = [np.array(Image.open(f"{base}/{r['image_path']}").convert("RGB").resize((64, 64), Image.BILINEAR)) for r in mine]
    x = (torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).float() / 255 - mean) / std
    with torch.no_grad():
        e = torch.nn.functional.normalize(net.avgpool(net.features(x)).flatten(1), dim=1).numpy()
    similar = e @ e.T
    np.fill_diagonal(similar, -np.inf)
    labels = [classes.index(r["image_type"]) for r in mine]
    for i, r in enumerate(mine):
        counts = np.full(len(classes), 0.5 / len(classes))
        for j in np.argsort(-similar[i], kind="stable")[:10]:
            counts[labels[j]] += 1
        theirs = counts / counts.sum()
        ours = np.array([float(r["neighbours_" + c]) for c in classes])
        difference = float(np.abs(theirs - ours).max())
        agree += difference < 1e-6
        worst = max(worst, difference)
        rows_seen += 1
print(json.dumps({"rows": rows_seen, "agree": int(agree), "worst": worst}))
"#;
    let reference = std::process::Command::new(imgtype_testkit::python())
        .args(["-c", script, cv.to_str().unwrap(), sample_images().to_str().unwrap()])
        .output()
        .unwrap();
    let figures = serde_json::from_slice::<serde_json::Value>(&ok(reference).stdout).unwrap();
    let (rows, agree) = (figures["rows"].as_u64().unwrap(), figures["agree"].as_u64().unwrap());
    eprintln!("neighbours as torchvision's: {agree} of {rows} images (largest difference {})", figures["worst"]);
    // One neighbour swapped moves a share by 1/10.5.
    assert!(agree * 10 >= rows * 9 && figures["worst"].as_f64().unwrap() < 0.2, "{figures}");
}

/// Folds: every image of the split files once, products whole, each fold trained without
/// its own products. Returns `images.csv`'s rows.
fn check_folds(work: &Path, cv: &Path) -> Vec<Vec<String>> {
    let (header, images) = read_csv(&cv.join("images.csv"));
    assert_eq!(header, ["image_path", "product_id", "image_type", "split", "fold"]);
    let total: usize = SPLITS.iter().map(|s| read_csv(&work.join("data").join(s)).1.len()).sum();
    assert_eq!(images.len(), total);
    let mut fold_of_product: HashMap<&str, &str> = HashMap::new();
    for row in &images {
        assert_eq!(*fold_of_product.entry(&row[1]).or_insert(&row[4]), row[4].as_str(), "product {} split", row[1]);
    }
    for fold in 1..=3 {
        let data = cv.join(format!("fold_{fold}/data"));
        let products = |split: &str| -> BTreeSet<String> {
            read_csv(&data.join(split)).1.into_iter().map(|r| r[0].clone()).collect()
        };
        let held_out = products("validation_data.csv");
        assert_eq!(held_out, products("test_data.csv"));
        assert!(products("train_data.csv").is_disjoint(&held_out), "fold {fold} trains on its own products");
        let expected: BTreeSet<String> =
            images.iter().filter(|r| r[4] == fold.to_string()).map(|r| r[1].clone()).collect();
        assert_eq!(held_out, expected);
    }

    images
}

/// The confident-learning rows of `label_issues.csv` are cleanlab's ranked issues on the same
/// `oof_predictions.csv`: on the models' probabilities blended 0.7 : 0.3 with the neighbours'
/// shares where the file has them.
fn check_same_issues_as_cleanlab(cv: &Path, header: &[String], issues: &[Vec<String>]) {
    let script = r#"
import csv, json, sys
import numpy as np
from cleanlab.filter import find_label_issues
rows = list(csv.DictReader(open(sys.argv[1])))
classes = [c[5:] for c in rows[0] if c.startswith("prob_")]
p = np.array([[float(r["prob_" + c]) for c in classes] for r in rows])
if "neighbours_" + classes[0] in rows[0]:
    p = 0.7 * p + 0.3 * np.array([[float(r["neighbours_" + c]) for c in classes] for r in rows])
labels = np.array([classes.index(r["image_type"]) for r in rows])
ranked = find_label_issues(labels, p, return_indices_ranked_by="self_confidence", n_jobs=1)
print(json.dumps([rows[i]["image_path"] for i in ranked]))
"#;
    let reference = std::process::Command::new(imgtype_testkit::python())
        .args(["-c", script, cv.join("oof_predictions.csv").to_str().unwrap()])
        .output()
        .unwrap();
    let theirs: Vec<String> = serde_json::from_slice(&ok(reference).stdout).unwrap();
    let ours: Vec<String> =
        issues.iter().filter(|r| r[column(header, "confident_learning")] == "true").map(|r| r[0].clone()).collect();
    assert_eq!(ours, theirs, "confident-learning issues, in order");
}

/// A tiny cross-validation: 22 products, 32 px, 2 epochs.
fn tiny_setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    divided_sample(dir.path(), 22);
    write_config(
        dir.path(),
        "config.json",
        serde_json::json!({
            "data": {"base_image_path": sample_images(), "csv_path": "products.csv"},
            "model": {"pretrained": false, "freeze_backbone_epochs": 0, "backbone": "mobilenet_v3_small"},
            "training": {"batch_size": 16, "epochs": 2, "learning_rate": 0.002, "backbone_lr": 0.002},
            "augmentation": {"image_size": 32},
            "logging": {"log_frequency": 1},
            "system": {"num_workers": 1, "num_threads": 1, "device": "cpu", "seed": 5}
        }),
    );
    dir
}

/// `train --summarize DIR` and `train --resume DIR` (run in `work`) both fail, each saying all of
/// `needles`; their stderr, in that order.
fn refused_by_summarize_and_resume(work: &Path, dir: &str, needles: &[&str]) -> [String; 2] {
    ["--summarize", "--resume"].map(|command| {
        let out = run(work, TRAIN, &[command, dir]);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success() && needles.iter().all(|n| stderr.contains(n)), "{command} {dir}: {stderr}");
        stderr
    })
}

/// What a cross-validation's results say, without timings.
fn outcome(cv: &Path) -> (Vec<Vec<String>>, Vec<Vec<String>>, BTreeMap<String, String>) {
    let (header, table) = read_csv(&cv.join("cv_results.csv"));
    let seconds = column(&header, "seconds");
    let table = table
        .into_iter()
        .map(|r| r.into_iter().enumerate().filter(|(i, _)| *i != seconds).map(|(_, v)| v).collect())
        .collect();
    let (_, oof) = read_csv(&cv.join("oof_predictions.csv"));
    let (_, issues) = read_csv(&cv.join("label_issues.csv"));
    (table, oof, issues.into_iter().map(|r| (r[0].clone(), r[5].clone())).collect())
}

#[test]
fn a_cross_validation_resumes_and_spreads_over_members_alike() {
    let dir = tiny_setup();
    let work = dir.path();
    let args = |cv: &'static str| ["--config", "config.json", "--cross-validate", "3", "--cv-dir", cv];
    ok(run(work, TRAIN, &args("straight")));
    let straight = outcome(&work.join("straight"));
    assert_eq!(straight.0.len(), 5);

    // Interrupted in the second fold; the same command continues it.
    let mut folds_started = 0;
    let (code, _, log) = run_interrupted(work, TRAIN, &args("resumed"), |line| {
        if line.contains("INFO fold ") && line.contains("training on") {
            folds_started += 1;
        }
        folds_started == 2 && line.contains("epoch 1/2 1/")
    });
    assert_eq!(code, Some(130), "{log}");
    assert!(!work.join("resumed/cv_results.csv").exists(), "no results before the folds are done");
    // Moved elsewhere first: the interrupted fold resumes with the split files and best-model
    // copy where the folder is now, and nothing is written where it was.
    std::fs::create_dir(work.join("elsewhere")).unwrap();
    std::fs::rename(work.join("resumed"), work.join("elsewhere/relocated")).unwrap();
    let out = ok(run(work, TRAIN, &["--resume", "elsewhere/relocated"]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("1 finished earlier"), "{stdout}");
    assert_eq!(outcome(&work.join("elsewhere/relocated")), straight, "resumed, same results");
    assert!(!work.join("resumed").exists(), "nothing written where the folder was");
    assert!(work.join("elsewhere/relocated/fold_2/models/best_model.safetensors").is_file());

    // The same command continues one too (here: nothing left to run).
    let out = ok(run(work, TRAIN, &args("elsewhere/relocated")));
    assert!(String::from_utf8_lossy(&out.stdout).contains("3 finished earlier"));
    // Its folds train on the plan's device: --device is refused, not ignored.
    let out = run(work, TRAIN, &["--resume", "elsewhere/relocated", "--device", "cpu"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("cv_plan.json"));

    // Job-array members, then --summarize.
    for member in ["0/3", "1/3", "2/3"] {
        let mut member_args = args("array").to_vec();
        member_args.extend(["--member", member]);
        if member == "1/3" {
            // The same member started again while the first still works (a replacement pod):
            // it stops with one line and removes nothing, not even a run folder without a
            // checkpoint yet.
            let fold = work.join("array/fold_2");
            let live = fold.join("run_20260101_000000_0000beef");
            std::fs::create_dir_all(&live).unwrap();
            let lock = imgtype::fsutil::FolderLock::acquire(&fold, "training fold 2").unwrap();
            let out = run(work, TRAIN, &member_args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{stderr}");
            assert!(
                stderr.contains("fold_2 is in use by process") && stderr.contains("nothing was changed"),
                "{stderr}"
            );
            assert!(live.is_dir(), "a live run folder is never removed");
            drop(lock);
        }
        ok(run(work, TRAIN, &member_args));
        if member == "0/3" {
            let partial = ok(run(work, TRAIN, &["--summarize", "array"]));
            let text = String::from_utf8_lossy(&partial.stdout);
            assert!(text.contains("folds not finished: fold 2, fold 3"), "{text}");
        }
    }
    // What a summary killed while writing leaves is removed by the next one.
    std::fs::write(work.join("array/.tmp-label_issues.csv-a1B2c3"), "half").unwrap();
    std::fs::create_dir_all(work.join("array/.staging")).unwrap();
    std::fs::write(work.join("array/.staging/cv_results.csv"), "half of a new set").unwrap();
    ok(run(work, TRAIN, &["--summarize", "array"]));
    assert_eq!(outcome(&work.join("array")), straight, "members + summarize, same results");
    let hidden: Vec<String> = std::fs::read_dir(work.join("array"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "{hidden:?}");

    // Folds swapped: their split files are refused as the other fold's.
    copy_dir(&work.join("straight"), &work.join("swapped"));
    let swap = |a: &Path, b: &Path| {
        let aside = a.with_extension("aside");
        std::fs::rename(a, &aside).unwrap();
        std::fs::rename(b, a).unwrap();
        std::fs::rename(&aside, b).unwrap();
    };
    swap(&work.join("swapped/fold_1"), &work.join("swapped/fold_2"));
    let named = "swapped/fold_1/data/train_data.csv holds what images.csv deals fold 2, not fold 1";
    refused_by_summarize_and_resume(work, "swapped", &[named]);
    // Only their runs swapped: each run is refused as trained for the other fold, naming where
    // its split files were.
    copy_dir(&work.join("straight"), &work.join("swapped_runs"));
    let run_in = |fold: &str| walk(&work.join(fold)).into_iter().find(|p| p.ends_with("config.json")).unwrap();
    let (one, two) = (run_in("swapped_runs/fold_1"), run_in("swapped_runs/fold_2"));
    let (one, two) = (one.parent().unwrap(), two.parent().unwrap());
    std::fs::rename(one, work.join("swapped_runs/fold_2").join(one.file_name().unwrap())).unwrap();
    std::fs::rename(two, work.join("swapped_runs/fold_1").join(two.file_name().unwrap())).unwrap();
    let named = "was not trained as planned (`paths.data_dir` is \"straight/fold_2/data\" in its config.json, \
                 \"swapped_runs/fold_1/data\" in swapped_runs/cv_plan.json";
    refused_by_summarize_and_resume(work, "swapped_runs", &["swapped_runs/fold_1/run_", named]);
    // A row listed twice: the warning says so, naming the file.
    copy_dir(&work.join("straight"), &work.join("doubled"));
    let predictions =
        walk(&work.join("doubled/fold_3")).into_iter().find(|p| p.ends_with("test_predictions.csv")).unwrap();
    let text = std::fs::read_to_string(&predictions).unwrap();
    std::fs::write(&predictions, format!("{text}{}\n", text.lines().nth(1).unwrap())).unwrap();
    let out = ok(run(work, TRAIN, &["--summarize", "doubled"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let file = predictions.strip_prefix(work).unwrap().display().to_string();
    assert!(stderr.contains(&format!("fold 3: 1 row(s) of {file} repeat an image listed before")), "{stderr}");
    copy_dir(&work.join("straight"), &work.join("cut"));
    let predictions = walk(&work.join("cut/fold_3")).into_iter().find(|p| p.ends_with("test_predictions.csv")).unwrap();
    let text = std::fs::read_to_string(&predictions).unwrap();
    std::fs::write(&predictions, text.lines().next().unwrap()).unwrap();
    let out = ok(run(work, TRAIN, &["--summarize", "cut"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let says = format!("fold 3: none of its {} held-out images has a row in", straight.0[2][2]);
    assert!(stderr.contains(&says) && stderr.contains("counted as damaged"), "{stderr}");
    // Its figures are not counted without the predictions they come from, nor when the file
    // is gone.
    assert_eq!(outcome(&work.join("cut")).0[2][1], "damaged");
    std::fs::remove_file(&predictions).unwrap();
    let out = ok(run(work, TRAIN, &["--summarize", "cut"]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("counted as damaged"));
    assert_eq!(outcome(&work.join("cut")).0[2][1], "damaged");

    // An edited images.csv (a label, a product) is refused by --summarize and, before anything
    // trains, by --resume, naming it and the plan; nothing is written.
    copy_dir(&work.join("straight"), &work.join("relabelled"));
    let images_csv = work.join("relabelled/images.csv");
    let text = std::fs::read_to_string(&images_csv).unwrap();
    std::fs::write(&images_csv, text.replacen(",full_shot,", ",detail_shot,", 1)).unwrap();
    let before = written_by_summarize(&work.join("relabelled"));
    let refused = "relabelled/images.csv is not the file relabelled/cv_plan.json was made with";
    refused_by_summarize_and_resume(work, "relabelled", &[refused]);
    assert_eq!(written_by_summarize(&work.join("relabelled")), before);
    // With a plan that keeps no fingerprint of images.csv (an older one, or the key deleted),
    // an edited label or an image moved to another fold (the folds' counts kept) is still
    // refused by --resume before anything trains: images.csv is checked against the split
    // files it was dealt from.
    for (folder, edit) in [("unsealed_label", "label"), ("unsealed_fold", "fold")] {
        copy_dir(&work.join("straight"), &work.join(folder));
        let plan_file = work.join(folder).join("cv_plan.json");
        let mut plan = read_json(&plan_file);
        plan.as_object_mut().unwrap().remove("images_fingerprint");
        std::fs::write(&plan_file, plan.to_string()).unwrap();
        let images_csv = work.join(folder).join("images.csv");
        let text = std::fs::read_to_string(&images_csv).unwrap();
        let mut rows: Vec<Vec<String>> = text.lines().map(|l| l.split(',').map(String::from).collect()).collect();
        let says = match edit {
            "label" => {
                let row = rows.iter().position(|r| r[2] == "full_shot").unwrap();
                rows[row][2] = "detail_shot".into();
                format!("{folder}/images.csv: row {} is not `", row + 1)
            }
            _ => {
                // An image of a product with several, and one of another fold, trade folds.
                let many = |r: &Vec<String>| rows.iter().filter(|o| o[1] == r[1]).count() > 1;
                let a = (1..rows.len()).find(|&i| many(&rows[i])).unwrap();
                let b = (1..rows.len()).find(|&i| rows[i][4] != rows[a][4]).unwrap();
                let (fold_a, fold_b) = (rows[a][4].clone(), rows[b][4].clone());
                (rows[a][4], rows[b][4]) = (fold_b, fold_a);
                "so a model would be tested on what it trained on".to_string()
            }
        };
        let edited: Vec<String> = rows.iter().map(|r| r.join(",")).collect();
        std::fs::write(&images_csv, edited.join("\n") + "\n").unwrap();
        let out = run(work, TRAIN, &["--resume", folder]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(&says), "{edit}: {stderr}");
        assert!(stderr.contains("images.csv was edited since the folds were dealt"), "{stderr}");
    }
    // A fold's test_predictions.csv whose label is not images.csv's: both files are named.
    copy_dir(&work.join("straight"), &work.join("retested"));
    let predictions =
        walk(&work.join("retested/fold_2")).into_iter().find(|p| p.ends_with("test_predictions.csv")).unwrap();
    let (header, rows) = read_csv(&predictions);
    let (path, label) = (&rows[0][column(&header, "image_path")], &rows[0][column(&header, "image_type")]);
    let other = if label == "full_shot" { "detail_shot" } else { "full_shot" };
    let text = std::fs::read_to_string(&predictions).unwrap();
    std::fs::write(&predictions, text.replacen(&format!(",{label},"), &format!(",{other},"), 1)).unwrap();
    let out = run(work, TRAIN, &["--summarize", "retested"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let named =
        format!("{} tested {path} as {other} (fold 2), but row ", predictions.strip_prefix(work).unwrap().display());
    assert!(!out.status.success() && stderr.contains(&named), "{stderr}");
    assert!(stderr.contains(&format!("of retested/images.csv labels it {label}")), "{stderr}");
    // The top plan deleted after the folds trained: refused as lost, not as a set-up cut short.
    copy_dir(&work.join("straight"), &work.join("planless"));
    std::fs::remove_file(work.join("planless/cv_plan.json")).unwrap();
    refused_by_summarize_and_resume(
        work,
        "planless",
        &["planless has no cv_plan.json, yet its fold_1 has begun training"],
    );

    // A plan edited after its folds trained (here: more epochs) is refused by --summarize and,
    // before anything trains, by --resume, naming the run, the key and both values.
    copy_dir(&work.join("straight"), &work.join("replanned"));
    let plan_file = work.join("replanned/cv_plan.json");
    let mut plan = read_json(&plan_file);
    plan["base_config"]["training"]["epochs"] = 3.into();
    std::fs::write(&plan_file, plan.to_string()).unwrap();
    let before = written_by_summarize(&work.join("replanned"));
    let named = "was not trained as planned (`training.epochs` is 2 in its config.json, 3 in replanned/cv_plan.json)";
    let [_, resumed] = refused_by_summarize_and_resume(work, "replanned", &["replanned/fold_1/run_", named]);
    // Every run refused is named, not one per try.
    assert!(resumed.contains("; 2 other run(s) likewise: replanned/fold_2/run_"), "{resumed}");
    assert_eq!(written_by_summarize(&work.join("replanned")), before);
    // A run whose config.json is gone or cut is damage: --resume refuses it, removing nothing,
    // and --summarize counts its fold damaged.
    copy_dir(&work.join("straight"), &work.join("unconfigured"));
    let fold_1 = walk(&work.join("unconfigured/fold_1")).into_iter().find(|p| p.ends_with("config.json")).unwrap();
    std::fs::write(&fold_1, "{\"data\":").unwrap();
    let out = run(work, TRAIN, &["--resume", "unconfigured"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("its config.json cannot be read"), "{stderr}");
    assert!(fold_1.parent().unwrap().join("final_results.json").is_file(), "the run is kept");
    let out = ok(run(work, TRAIN, &["--summarize", "unconfigured"]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("fold 1: "), "counted as damaged");
    // A fold tested on more than its held-out images (its test split edited, the run's
    // recorded split files too): its figures are not counted.
    copy_dir(&work.join("straight"), &work.join("overtested"));
    let predictions =
        walk(&work.join("overtested/fold_1")).into_iter().find(|p| p.ends_with("test_predictions.csv")).unwrap();
    let others =
        walk(&work.join("overtested/fold_2")).into_iter().find(|p| p.ends_with("test_predictions.csv")).unwrap();
    let text = std::fs::read_to_string(&predictions).unwrap();
    let extra: String = std::fs::read_to_string(&others).unwrap().lines().skip(1).map(|l| format!("{l}\n")).collect();
    std::fs::write(&predictions, format!("{text}{extra}")).unwrap();
    let out = ok(run(work, TRAIN, &["--summarize", "overtested"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("fold 1: ") && stderr.contains("are not its held-out images"), "{stderr}");
    assert_eq!(outcome(&work.join("overtested")).0[0][1], "damaged");
    // A finished run whose checkpoints and final_results.json are gone still holds its models:
    // refused as damage, never removed as a run that stopped before its first checkpoint.
    copy_dir(&work.join("straight"), &work.join("unpointed"));
    let results = walk(&work.join("unpointed/fold_1")).into_iter().find(|p| p.ends_with("final_results.json")).unwrap();
    let run_dir = results.parent().unwrap().to_path_buf();
    std::fs::remove_file(&results).unwrap();
    std::fs::remove_dir_all(run_dir.join("checkpoints")).unwrap();
    let out = run(work, TRAIN, &["--resume", "unpointed"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("holds a trained model"), "{stderr}");
    assert!(run_dir.join("model").is_dir(), "the run is kept");
    // A run whose run_metadata.json is cut cannot say which split files it began with: refused
    // by both, not taken as a run from before they were recorded.
    copy_dir(&work.join("straight"), &work.join("unrecorded"));
    let metadata =
        walk(&work.join("unrecorded/fold_3")).into_iter().find(|p| p.ends_with("run_metadata.json")).unwrap();
    std::fs::write(&metadata, "{\"run_id\":").unwrap();
    refused_by_summarize_and_resume(
        work,
        "unrecorded",
        &["run_metadata.json cannot be read (deleted, cut or edited?)"],
    );
    // A fold's split file edited by hand (a row cut, a label changed) is not what images.csv
    // deals the fold: refused by --summarize and, before anything trains, by --resume, naming
    // the file and the row.
    copy_dir(&work.join("straight"), &work.join("otherdata"));
    let train_csv = work.join("otherdata/fold_2/data/train_data.csv");
    let text = std::fs::read_to_string(&train_csv).unwrap();
    let rows = text.lines().count() - 1;
    std::fs::write(&train_csv, text.lines().take(rows).collect::<Vec<_>>().join("\n") + "\n").unwrap();
    let cut =
        format!("otherdata/fold_2/data/train_data.csv lists {} images, but images.csv deals fold 2 {rows}", rows - 1);
    refused_by_summarize_and_resume(work, "otherdata", &[&cut, "put them back as images.csv has them"]);
    let relabelled = text.replacen(",full_shot\n", ",detail_shot\n", 1);
    assert_ne!(relabelled, text);
    std::fs::write(&train_csv, &relabelled).unwrap();
    let row = relabelled.lines().position(|l| l.ends_with(",detail_shot")).unwrap() + 1;
    let named = format!("otherdata/fold_2/data/train_data.csv: row {row} is `");
    let before = written_by_summarize(&work.join("otherdata"));
    refused_by_summarize_and_resume(work, "otherdata", &[&named, "but images.csv deals fold 2 `"]);
    assert_eq!(written_by_summarize(&work.join("otherdata")), before);
    // The same rows in other bytes (CRLF line ends) would be recorded by a run as other split
    // files than those written again from images.csv: refused too.
    std::fs::write(&train_csv, text.replace('\n', "\r\n")).unwrap();
    let named = "otherdata/fold_2/data/train_data.csv holds the rows images.csv deals fold 2, but not as they were \
                 written";
    refused_by_summarize_and_resume(work, "otherdata", &[named]);
    // The fold's files as dealt, but its run recorded others (trained before they were put
    // back): refused, naming the folder whose files it was not trained on.
    std::fs::write(&train_csv, &text).unwrap();
    let metadata = walk(&work.join("otherdata/fold_2")).into_iter().find(|p| p.ends_with("run_metadata.json")).unwrap();
    let mut recorded = read_json(&metadata);
    recorded["split_files"] = "0123456789abcdef".into();
    std::fs::write(&metadata, recorded.to_string()).unwrap();
    refused_by_summarize_and_resume(
        work,
        "otherdata",
        &["was trained on other split files than otherdata/fold_2/data holds"],
    );
    // A deleted fold file: --summarize cannot check the fold's runs without it; --resume writes
    // it again from images.csv, byte for byte, and trains nothing.
    copy_dir(&work.join("straight"), &work.join("unfiled"));
    let test_csv = work.join("unfiled/fold_3/data/test_data.csv");
    let original = std::fs::read(&test_csv).unwrap();
    std::fs::remove_file(&test_csv).unwrap();
    let out = run(work, TRAIN, &["--summarize", "unfiled"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("unfiled/fold_3/data/test_data.csv"), "{stderr}");
    let out = ok(run(work, TRAIN, &["--resume", "unfiled"]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("3 finished earlier"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("test_data.csv was missing: written again from"));
    assert_eq!(std::fs::read(&test_csv).unwrap(), original);
    // An edited interrupted run beside a newer one without a checkpoint is refused before
    // anything trains, not resumed with the edited config.
    copy_dir(&work.join("straight"), &work.join("bypassed"));
    let config = walk(&work.join("bypassed/fold_2")).into_iter().find(|p| p.ends_with("config.json")).unwrap();
    let mut edited = read_json(&config);
    edited["training"]["learning_rate"] = 0.5.into();
    std::fs::write(&config, edited.to_string()).unwrap();
    std::fs::remove_file(config.parent().unwrap().join("final_results.json")).unwrap();
    let newer = work.join("bypassed/fold_2/run_20991231_000000_deadbeef");
    std::fs::create_dir(&newer).unwrap();
    std::fs::copy(
        walk(&work.join("bypassed/fold_3")).into_iter().find(|p| p.ends_with("config.json")).unwrap(),
        newer.join("config.json"),
    )
    .unwrap();
    let metrics = std::fs::read(config.parent().unwrap().join("logs/metrics.csv")).unwrap();
    let out = run(work, TRAIN, &["--resume", "bypassed"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("`training.learning_rate` is 0.5 in its config.json"), "{stderr}");
    assert_eq!(std::fs::read(config.parent().unwrap().join("logs/metrics.csv")).unwrap(), metrics, "nothing trained");

    // Another number of folds, or another config, in the same folder is refused, naming what differs.
    for (folds, epochs, differs) in [
        ("4", "2", "`folds` is 3 in straight/cv_plan.json, 4 in this command"),
        ("3", "3", "`training.epochs` is 2 in straight/cv_plan.json, 3 in this command"),
    ] {
        let command =
            ["--config", "config.json", "--cross-validate", folds, "--cv-dir", "straight", "--epochs", epochs];
        let out = run(work, TRAIN, &command);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains("straight holds another cross-validation"), "{stderr}");
        assert!(stderr.contains(differs), "{stderr}");
    }

    // So is the same command after the split files changed (a label corrected).
    let train_csv = work.join("data/train_data.csv");
    let text = std::fs::read_to_string(&train_csv).unwrap();
    std::fs::write(&train_csv, text.replacen("full_shot", "detail_shot", 1)).unwrap();
    let out = run(work, TRAIN, &args("straight"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("changed since the cross-validation"), "{stderr}");
}

/// Each image's out-of-fold probabilities in `cv` (its `oof_predictions.csv` or, for one
/// repeat's folder, its folds' `test_predictions.csv`), by (image_path, product_id).
fn fold_probabilities(cv: &Path) -> BTreeMap<(String, String), Vec<f64>> {
    let mut probabilities = BTreeMap::new();
    for fold in 1..=3 {
        let mut entries = std::fs::read_dir(cv.join(format!("fold_{fold}"))).unwrap().map(|e| e.unwrap().path());
        let run = entries.find(|p| p.file_name().unwrap().to_string_lossy().starts_with("run_")).unwrap();
        let (header, rows) = read_csv(&run.join("test_predictions.csv"));
        let columns: Vec<usize> = (0..header.len()).filter(|&i| header[i].starts_with("prob_")).collect();
        for row in rows {
            let p = columns.iter().map(|&i| row[i].parse().unwrap()).collect();
            probabilities.insert((row[0].clone(), row[1].clone()), p);
        }
    }
    probabilities
}

#[test]
fn a_repeated_cross_validation_averages_its_repeats() {
    let dir = tiny_setup();
    let work = dir.path();
    let args = ["--config", "config.json", "--cross-validate", "3", "--repeats", "2", "--cv-dir", "cv"];
    let out = ok(run(work, TRAIN, &args));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("6 fold(s) trained") && stdout.contains("repeat 2 fold 3"), "{stdout}");
    let cv = work.join("cv");

    // The second repeat is a cross-validation folder of its own, with the next seeds.
    let first = read_json(&cv.join("cv_plan.json"));
    let second = read_json(&cv.join("repeat_2/cv_plan.json"));
    assert_eq!((first["repeats"].as_u64(), second["repeats"].as_u64()), (Some(2), Some(1)));
    assert_eq!(second["base_config"]["data"]["random_state"], 2026);
    assert_eq!(second["base_config"]["system"]["seed"], 6);
    let (_, folds_1) = read_csv(&cv.join("images.csv"));
    let (_, folds_2) = read_csv(&cv.join("repeat_2/images.csv"));
    assert_ne!(folds_1, folds_2, "other folds");

    // Six folds in the results, each with its repeat.
    let (header, table) = read_csv(&cv.join("cv_results.csv"));
    assert_eq!(header.last().map(String::as_str), Some("repeat"));
    let repeats: Vec<&str> = table.iter().map(|r| r[header.len() - 1].as_str()).collect();
    assert_eq!(repeats, ["1", "1", "1", "2", "2", "2", "", ""]);

    // Each image's probabilities: the mean of its two folds' held-out predictions.
    let (one, two) = (fold_probabilities(&cv), fold_probabilities(&cv.join("repeat_2")));
    let (header, oof) = read_csv(&cv.join("oof_predictions.csv"));
    assert_eq!(oof.len(), read_csv(&cv.join("images.csv")).1.len());
    let columns: Vec<usize> = (0..header.len()).filter(|&i| header[i].starts_with("prob_")).collect();
    for row in &oof {
        let key = (row[0].clone(), row[1].clone());
        for (k, &column) in columns.iter().enumerate() {
            let expected = (one[&key][k] + two[&key][k]) / 2.0;
            assert!((row[column].parse::<f64>().unwrap() - expected).abs() < 1e-9, "{row:?}");
        }
    }

    // Each issue names the models it was judged by: here one of each repeat, averaged.
    let fold_in = |cv: &Path| -> BTreeMap<(String, String), String> {
        read_csv(&cv.join("images.csv")).1.into_iter().map(|r| ((r[0].clone(), r[1].clone()), r[4].clone())).collect()
    };
    let (fold_in_1, fold_in_2) = (fold_in(&cv), fold_in(&cv.join("repeat_2")));
    let judged_by = |cv: &Path| -> Vec<((String, String), String)> {
        let (header, issues) = read_csv(&cv.join("label_issues.csv"));
        assert!(!issues.is_empty());
        issues.into_iter().map(|r| ((r[0].clone(), r[1].clone()), r[column(&header, "why")].clone())).collect()
    };
    for (key, why) in judged_by(&cv) {
        let (f1, f2) = (&fold_in_1[&key], &fold_in_2[&key]);
        let expected = format!("its 2 held-out models (repeat 1 fold {f1}, repeat 2 fold {f2}), averaged: ");
        assert!(why.starts_with(&expected), "{why} / {expected}");
    }

    // A repeat folder from another cross-validation is not averaged in.
    // (A copy of `cv` whose plan `plan` has `section.key` set to `value`.)
    let edited_copy = |name: &str, plan: &str, section: &str, key: &str, value: u64| {
        copy_dir(&cv, &work.join(name));
        let plan_path = work.join(name).join(plan);
        let mut plan = read_json(&plan_path);
        plan["base_config"][section][key] = serde_json::json!(value);
        std::fs::write(&plan_path, plan.to_string()).unwrap();
    };
    edited_copy("copied", "repeat_2/cv_plan.json", "system", "seed", 99);
    let out = run(work, TRAIN, &["--summarize", "copied"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("is not repeat 2 of the cross-validation"), "{stderr}");
    assert!(
        stderr.contains("`system.seed` is 99 in copied/repeat_2/cv_plan.json, 6 in copied/cv_plan.json"),
        "{stderr}"
    );
    // An edit of the top plan is named the same way, with both files, by --summarize and --resume.
    edited_copy("edited", "cv_plan.json", "training", "epochs", 3);
    let differs = "`training.epochs` is 2 in edited/repeat_2/cv_plan.json, 3 in edited/cv_plan.json for repeat 2";
    refused_by_summarize_and_resume(work, "edited", &[differs]);

    // A fold not finished is named with its repeat, on the terminal and in cv_results.json.
    let cp = std::process::Command::new("cp").args(["-r", "cv", "partial"]).current_dir(work).status().unwrap();
    assert!(cp.success());
    let fold = work.join("partial/repeat_2/fold_2");
    for entry in std::fs::read_dir(&fold).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().starts_with("run_") {
            std::fs::remove_dir_all(path).unwrap();
        }
    }
    let out = ok(run(work, TRAIN, &["--summarize", "partial"]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("folds not finished: repeat 2 fold 2\n"), "{stdout}");
    let unfinished = &read_json(&work.join("partial/cv_results.json"))["unfinished"];
    assert_eq!(unfinished, &serde_json::json!([{ "repeat": 2, "fold": 2 }]));
    // The images repeat 2's fold 2 held out were judged by repeat 1's model alone, and say so.
    for (key, why) in judged_by(&work.join("partial")) {
        let (f1, f2) = (&fold_in_1[&key], &fold_in_2[&key]);
        let expected = match f2.as_str() {
            "2" => format!("repeat 1 fold {f1}'s model: "),
            _ => format!("its 2 held-out models (repeat 1 fold {f1}, repeat 2 fold {f2}), averaged: "),
        };
        assert!(why.starts_with(&expected), "{why} / {expected}");
    }
    // A repeat whose plan was deleted after its folds trained is refused by both, saying so
    // (it is not one "not set up yet", and setting it up again would reuse its runs).
    std::fs::remove_file(work.join("partial/repeat_2/cv_plan.json")).unwrap();
    let lost = "partial/repeat_2 has no cv_plan.json, yet its fold_";
    refused_by_summarize_and_resume(work, "partial", &[lost, "was the plan deleted"]);
    // A repeat not set up yet (its job-array member has not started): all its folds.
    std::fs::remove_dir_all(work.join("partial/repeat_2")).unwrap();
    let out = ok(run(work, TRAIN, &["--summarize", "partial"]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("folds not finished: repeat 2 fold 1, repeat 2 fold 2, repeat 2 fold 3\n"), "{stdout}");
    for (key, why) in judged_by(&work.join("partial")) {
        assert!(why.starts_with(&format!("repeat 1 fold {}'s model: ", fold_in_1[&key])), "{why}");
    }

    // A new folder with something in the way is refused before anything is written: a file
    // named like a repeat's folder, or a fold that already holds a run (it would pass as
    // finished).
    for (name, in_the_way) in [("blocked", "repeat_2"), ("stale", "fold_1/run_20260101_000000_00000000")] {
        let path = work.join(name).join(in_the_way);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "").unwrap();
        let mut command = args.to_vec();
        command[7] = name;
        let out = run(work, TRAIN, &command);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(name), "{stderr}");
        let written: Vec<_> = walk(&work.join(name));
        assert_eq!(written, [path.clone()], "{stderr}");
    }

    // The same command again has nothing left to run; another number of repeats is refused.
    let out = ok(run(work, TRAIN, &args));
    assert!(String::from_utf8_lossy(&out.stdout).contains("6 finished earlier"));
    let mut three = args.to_vec();
    three[5] = "3";
    let out = run(work, TRAIN, &three);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("`repeats` is 2 in cv/cv_plan.json, 3 in this command"),
        "{stderr}"
    );
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
