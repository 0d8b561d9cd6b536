//! `divide` as a user runs it: real CSVs in a temp folder, the real binary.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::process::{Command, Output};

use imgtype_testkit::ok;

const DIVIDE: &str = env!("CARGO_BIN_EXE_divide");

fn run_divide(dir: &Path, input: &Path, out: &str, extra: &[&str]) -> Output {
    Command::new(DIVIDE)
        .current_dir(dir)
        .arg("--input-file")
        .arg(input)
        .args(["--output-dir", out])
        .args(extra)
        .output()
        .expect("run divide")
}

/// Products in categories of the given sizes, 1–3 images each, cells joined by `&` or `,`.
fn write_products(path: &Path, categories: &[(&str, usize)]) {
    let mut csv = String::from("id,category_name,main_image,back_image,text_tag_image,neck_tag_image,other\n");
    let mut n = 0;
    for (category, count) in categories {
        for _ in 0..*count {
            let back = if n % 2 == 0 { format!("b{n}a.jpg&b{n}b.jpg") } else { "nan".into() };
            let other = if n % 3 == 0 { format!("\"o{n}a.jpg,o{n}b.jpg\"") } else { String::new() };
            csv.push_str(&format!("p{n},{category},m{n}.jpg,{back},t{n}.jpg,,{other}\n"));
            n += 1;
        }
    }
    std::fs::write(path, csv).unwrap();
}

fn read_rows(path: &Path) -> Vec<HashMap<String, String>> {
    let mut reader = csv::Reader::from_path(path).unwrap();
    let headers = reader.headers().unwrap().clone();
    assert_eq!(headers.iter().collect::<Vec<_>>(), ["product_id", "image_path", "image_type"]);
    reader
        .records()
        .map(|r| headers.iter().zip(r.unwrap().iter()).map(|(h, v)| (h.to_string(), v.to_string())).collect())
        .collect()
}

const SPLITS: [&str; 3] = ["train_data.csv", "validation_data.csv", "test_data.csv"];

#[test]
fn splits_by_product_with_ratios_per_category() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("products.csv");
    let sizes = [("top", 40), ("outer", 23), ("pants", 11), ("acc", 2), ("bag", 1)];
    write_products(&input, &sizes);
    ok(run_divide(dir.path(), &input, "data", &["--random-state", "2025"]));

    let mut owner: HashMap<String, &str> = HashMap::new();
    let mut per_category: BTreeMap<(String, &str), usize> = BTreeMap::new();
    let category_of = |id: &str| {
        let n: usize = id[1..].parse().unwrap();
        let mut start = 0;
        for (cat, count) in sizes {
            if n < start + count {
                return cat.to_string();
            }
            start += count;
        }
        unreachable!()
    };
    let mut total_images = 0;
    for split in SPLITS {
        let rows = read_rows(&dir.path().join("data").join(split));
        total_images += rows.len();
        let ids: HashSet<String> = rows.iter().map(|r| r["product_id"].clone()).collect();
        for id in ids {
            if let Some(other) = owner.insert(id.clone(), split) {
                panic!("product {id} in {other} and {split}");
            }
            *per_category.entry((category_of(&id), split)).or_default() += 1;
        }
    }
    assert_eq!(owner.len(), 77, "every product lands in exactly one split");
    // Images: 77 main + 39 × 2 back + 77 tag + 26 × 2 other.
    assert_eq!(total_images, 77 + 78 + 77 + 52);
    for (category, count) in sizes.iter().filter(|(_, c)| *c >= 3) {
        for (split, ratio) in SPLITS.iter().zip([0.8, 0.1, 0.1]) {
            let got = per_category.get(&(category.to_string(), *split)).copied().unwrap_or(0) as f64;
            assert!((got - ratio * *count as f64).abs() <= 1.0, "{category} {split}: {got} of {count}");
        }
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("data/data_split_summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["split_info"]["random_state"], 2025);
    let products: u64 =
        ["train", "validation", "test"].iter().map(|s| summary["data_counts"][s]["products"].as_u64().unwrap()).sum();
    assert_eq!(products, 77);
    assert_eq!(summary["categories"].as_array().unwrap().len(), 5);
    assert!(summary["image_type_distribution"]["train"]["full_shot"].as_u64().unwrap() > 0);
}

#[test]
fn same_seed_gives_identical_files_and_another_seed_another_split() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("products.csv");
    write_products(&input, &[("top", 30), ("outer", 20), ("pants", 2)]);
    ok(run_divide(dir.path(), &input, "a", &["--random-state", "7"]));
    ok(run_divide(dir.path(), &input, "b", &["--random-state", "7"]));
    ok(run_divide(dir.path(), &input, "c", &["--random-state", "8"]));
    let read = |d: &str, f: &str| std::fs::read(dir.path().join(d).join(f)).unwrap();
    for split in SPLITS {
        assert_eq!(read("a", split), read("b", split), "{split} differs between runs with one seed");
    }
    assert!(SPLITS.iter().any(|s| read("a", s) != read("c", s)), "seeds 7 and 8 gave the same split");
}

#[test]
fn expands_joined_cells_and_skips_empty_and_nan() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("products.csv");
    std::fs::write(
        &input,
        "id,category_name,main_image,back_image,text_tag_image,neck_tag_image,other\n\
         p1,top,a.jpg&b.jpg,nan,c.jpg,,\"d.jpg, e.jpg\"\n\
         p2,top,f.jpg,,NaN,g.jpg,\n\
         p3,top,h.jpg,,,,\n",
    )
    .unwrap();
    ok(run_divide(dir.path(), &input, "data", &["--train-ratio", "1", "--val-ratio", "0", "--test-ratio", "0"]));
    let rows = read_rows(&dir.path().join("data/train_data.csv"));
    let mut got: Vec<(String, String, String)> =
        rows.into_iter().map(|r| (r["product_id"].clone(), r["image_path"].clone(), r["image_type"].clone())).collect();
    got.sort();
    let expected = [
        ("p1", "a.jpg", "full_shot"),
        ("p1", "b.jpg", "full_shot"),
        ("p1", "c.jpg", "care_label"),
        ("p1", "d.jpg", "detail_shot"),
        ("p1", "e.jpg", "detail_shot"),
        ("p2", "f.jpg", "full_shot"),
        ("p2", "g.jpg", "neck_label"),
        ("p3", "h.jpg", "full_shot"),
    ];
    assert_eq!(got, expected.map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string())));
}

#[test]
fn categories_with_fewer_than_three_products_still_split() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("products.csv");
    write_products(&input, &[("a", 1), ("b", 2), ("c", 2), ("d", 1), ("e", 2), ("f", 2)]);
    ok(run_divide(dir.path(), &input, "data", &["--train-ratio", "0.6", "--val-ratio", "0.2", "--test-ratio", "0.2"]));
    let counts: Vec<usize> = SPLITS
        .iter()
        .map(|s| {
            read_rows(&dir.path().join("data").join(s))
                .iter()
                .map(|r| r["product_id"].clone())
                .collect::<HashSet<_>>()
                .len()
        })
        .collect();
    assert_eq!(counts, vec![6, 2, 2]);
}

#[test]
fn bad_input_gives_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("products.csv");
    std::fs::write(&input, "id,main_image\np1,a.jpg\n").unwrap();
    let out = run_divide(dir.path(), &input, "data", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("products.csv") && stderr.contains("category_name"), "{stderr}");
    assert!(!dir.path().join("data/train_data.csv").exists());

    write_products(&input, &[("top", 5)]);
    let out = run_divide(dir.path(), &input, "data", &["--train-ratio", "0.9"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("sum to 1"), "{stderr}");

    let out = run_divide(dir.path(), &dir.path().join("absent.csv"), "data", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("absent.csv"), "{stderr}");
}

#[test]
fn validate_images_drops_missing_and_broken_files() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("imgs");
    std::fs::create_dir_all(&images).unwrap();
    image::RgbImage::from_pixel(8, 8, image::Rgb([200, 10, 10])).save(images.join("good.png")).unwrap();
    std::fs::write(images.join("broken.jpg"), b"not an image").unwrap();
    let input = dir.path().join("products.csv");
    std::fs::write(
        &input,
        "id,category_name,main_image,other\np1,top,good.png,broken.jpg\np2,top,missing.jpg,\np3,top,good.png,\n",
    )
    .unwrap();
    let out = ok(run_divide(
        dir.path(),
        &input,
        "data",
        &[
            "--validate-images",
            "--image-base-path",
            "imgs",
            "--train-ratio",
            "1",
            "--val-ratio",
            "0",
            "--test-ratio",
            "0",
        ],
    ));
    let rows = read_rows(&dir.path().join("data/train_data.csv"));
    let paths: Vec<&str> = rows.iter().map(|r| r["image_path"].as_str()).collect();
    assert_eq!(paths, ["good.png", "good.png"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("broken.jpg") && stderr.contains("missing.jpg"), "{stderr}");
}

/// `--relabel`: reviewed corrections change or drop images in the split files, the product
/// CSV stays as it was, and the summary lists each change; a bad corrections file writes
/// nothing and names its row.
#[test]
fn relabel_applies_reviewed_corrections_without_touching_the_product_csv() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("products.csv");
    let products = "id,category_name,main_image,back_image,text_tag_image,neck_tag_image,other\n\
                    p1,top,a.jpg,,c.jpg,,d.jpg\n\
                    p2,top,f.jpg,,,g.jpg,\n\
                    p3,top,h.jpg,,,,only.jpg\n";
    std::fs::write(&input, products).unwrap();
    let corrections = dir.path().join("reviewed.csv");
    std::fs::write(
        &corrections,
        "image_path,image_type,reviewer\nd.jpg,care_label,ana\ng.jpg,drop,ana\nonly.jpg,drop,ana\ngone.jpg,full_shot,ana\n",
    )
    .unwrap();
    let all_train = ["--train-ratio", "1", "--val-ratio", "0", "--test-ratio", "0"];
    let output = ok(run_divide(dir.path(), &input, "data", &[&all_train[..], &["--relabel", "reviewed.csv"]].concat()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("1 image(s) relabelled, 2 dropped, 1 row(s) matched no image"), "{stdout}");
    let mut got: Vec<(String, String)> = read_rows(&dir.path().join("data/train_data.csv"))
        .into_iter()
        .map(|r| (r["image_path"].clone(), r["image_type"].clone()))
        .collect();
    got.sort();
    let expected = [
        ("a.jpg", "full_shot"),
        ("c.jpg", "care_label"),
        ("d.jpg", "care_label"),
        ("f.jpg", "full_shot"),
        ("h.jpg", "full_shot"),
    ];
    assert_eq!(got, expected.map(|(a, b)| (a.to_string(), b.to_string())));
    assert_eq!(std::fs::read_to_string(&input).unwrap(), products, "the product CSV is not edited");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("data/data_split_summary.json")).unwrap())
            .unwrap();
    let relabel = &summary["relabel"];
    assert_eq!(relabel["relabelled"][0]["image_path"], "d.jpg");
    assert_eq!(
        (relabel["relabelled"][0]["from"].as_str(), relabel["relabelled"][0]["to"].as_str()),
        (Some("detail_shot"), Some("care_label"))
    );
    let dropped: Vec<&str> =
        relabel["dropped"].as_array().unwrap().iter().map(|d| d["image_path"].as_str().unwrap()).collect();
    assert_eq!(dropped, ["g.jpg", "only.jpg"]);
    assert_eq!(relabel["unmatched"], serde_json::json!(["gone.jpg"]));

    // A class that does not exist: nothing written, the row and the value named.
    std::fs::write(&corrections, "image_path,image_type\nd.jpg,care_label\na.jpg,shoe\n").unwrap();
    let output = run_divide(dir.path(), &input, "data2", &[&all_train[..], &["--relabel", "reviewed.csv"]].concat());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("row 3") && stderr.contains("`shoe`"), "{stderr}");
    assert!(!dir.path().join("data2").exists());
}

/// `--find-duplicates`: the same photo under several products (copied under another name, or
/// the same path listed twice) puts those products in one split, whatever the seed; a copy
/// filed under another class is a label conflict; `duplicates.csv` lists every copy.
#[test]
fn find_duplicates_keeps_products_sharing_a_photo_in_one_split() {
    let dir = tempfile::tempdir().unwrap();
    let photos: Vec<_> = imgtype_testkit::walk(&imgtype_testkit::sample_images()).into_iter().take(24).collect();
    std::fs::create_dir(dir.path().join("img")).unwrap();
    for (i, photo) in photos.iter().enumerate() {
        std::fs::copy(photo, dir.path().join(format!("img/{i}.jpg"))).unwrap();
    }
    // Product p has main image 2p and care label 2p + 1. Photo 0 (p0's main image) again as
    // copy_a.jpg, p5's care label: a conflict; photo 3 (p1's care label) again as copy_b.jpg,
    // a second care label of p9; p1's main image 2.jpg also listed by p11.
    std::fs::copy(&photos[0], dir.path().join("img/copy_a.jpg")).unwrap();
    std::fs::copy(&photos[3], dir.path().join("img/copy_b.jpg")).unwrap();
    let mut csv = String::from("id,category_name,main_image,back_image,text_tag_image,neck_tag_image,other\n");
    for p in 0..12 {
        let main = format!("img/{}.jpg", 2 * p);
        let mut tag = format!("img/{}.jpg", 2 * p + 1);
        let mut main_cell = main.clone();
        match p {
            5 => tag = "img/copy_a.jpg".into(),
            9 => tag = format!("{tag}&img/copy_b.jpg"),
            11 => main_cell = format!("{main}&img/2.jpg"),
            _ => {}
        }
        csv.push_str(&format!("p{p},{},{main_cell},,{tag},,\n", if p % 2 == 0 { "top" } else { "dress" }));
    }
    let input = dir.path().join("products.csv");
    std::fs::write(&input, csv).unwrap();
    for seed in ["1", "2", "3", "4"] {
        let out = format!("data{seed}");
        let args = ["--find-duplicates", "--image-base-path", dir.path().to_str().unwrap(), "--random-state", seed];
        let output = ok(run_divide(dir.path(), &input, &out, &args));
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(stdout.contains("3 group(s) of the same photo (6 images), 3 across products"), "{stdout}");
        assert!(stdout.contains("1 label conflict(s)") && stdout.contains("care_label vs full_shot"), "{stdout}");
        let mut split_of = HashMap::new();
        for split in SPLITS {
            for row in read_rows(&dir.path().join(&out).join(split)) {
                split_of.insert(row["product_id"].clone(), split);
            }
        }
        for (a, b) in [("p0", "p5"), ("p1", "p9"), ("p1", "p11")] {
            assert_eq!(split_of[a], split_of[b], "seed {seed}: {a} and {b} share a photo");
        }
        let mut reader = csv::Reader::from_path(dir.path().join(&out).join("duplicates.csv")).unwrap();
        let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
        assert_eq!(header, ["group", "image_path", "product_id", "image_type", "split", "distance", "kind"]);
        let rows: Vec<Vec<String>> = reader.records().map(|r| r.unwrap().iter().map(String::from).collect()).collect();
        assert_eq!(rows.len(), 6);
        assert!(rows.iter().all(|r| r[5].parse::<f64>() == Ok(0.0) && r[6] == "exact"), "{rows:?}");
        let copy_a = rows.iter().find(|r| r[1] == "img/copy_a.jpg").unwrap();
        let original = rows.iter().find(|r| r[1] == "img/0.jpg").unwrap();
        assert_eq!(
            (copy_a[0].as_str(), copy_a[2].as_str(), copy_a[3].as_str()),
            (original[0].as_str(), "p5", "care_label")
        );
        let summary: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join(&out).join("data_split_summary.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            summary["duplicates"]["label_conflicts"][0]["image_types"],
            serde_json::json!(["care_label", "full_shot"])
        );
    }
}

/// `divide` takes its defaults from the config `train` reads (./config.json here): the product
/// CSV, the output folder `train` reads splits from, the ratios and the seed; options override.
#[test]
fn settings_come_from_the_config_and_options_override_them() {
    let dir = tempfile::tempdir().unwrap();
    write_products(&dir.path().join("catalogue.csv"), &[("top", 20), ("outer", 12)]);
    let config = serde_json::json!({
        "data": {"csv_path": "catalogue.csv", "train_ratio": 0.5, "val_ratio": 0.25, "test_ratio": 0.25, "random_state": 7},
        "paths": {"data_dir": "splits"}
    });
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let divide = |args: &[&str]| ok(Command::new(DIVIDE).current_dir(dir.path()).args(args).output().unwrap());
    divide(&[]);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("splits/data_split_summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["split_info"]["random_state"], 7);
    assert_eq!(summary["split_info"]["ratios"]["train"], 0.5);
    assert!(summary["split_info"]["source_file"].as_str().unwrap().ends_with("catalogue.csv"));
    let products = |folder: &str, split: &str| {
        read_rows(&dir.path().join(folder).join(split))
            .into_iter()
            .map(|r| r["product_id"].clone())
            .collect::<HashSet<_>>()
    };
    assert_eq!(products("splits", "train_data.csv").len(), 16, "half of 32 products");

    // A config elsewhere (--config), each option over its key.
    std::fs::rename(dir.path().join("config.json"), dir.path().join("other.json")).unwrap();
    divide(&[
        "--config",
        "other.json",
        "--train-ratio",
        "0.75",
        "--val-ratio",
        "0.125",
        "--test-ratio",
        "0.125",
        "--output-dir",
        "mine",
    ]);
    assert_eq!(products("mine", "train_data.csv").len(), 24, "three quarters of 32 products");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("mine/data_split_summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["split_info"]["random_state"], 7, "the seed still from the config");

    // The config read is an input: an output of the same name beside it is refused, the config kept.
    let kept = dir.path().join("mine/data_split_summary.json");
    std::fs::write(&kept, config.to_string()).unwrap();
    let out = Command::new(DIVIDE)
        .current_dir(dir.path())
        .args(["--config", "mine/data_split_summary.json", "--output-dir", "mine"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is the input"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(&kept).unwrap(), config.to_string());
    // Ratios that do not add up say where each came from.
    let out = Command::new(DIVIDE)
        .current_dir(dir.path())
        .args(["--config", "other.json", "--train-ratio", "0.6"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("0.6 (--train-ratio) + 0.25 (other.json's data.val_ratio)"), "{stderr}");

    // Without a config: the built-in defaults (image_data.csv, which is missing here).
    std::fs::remove_file(dir.path().join("other.json")).unwrap();
    let out = Command::new(DIVIDE).current_dir(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("image_data.csv"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Too few products for the ratios: the warning says so, and names no duplicates file that
/// was not looked for.
#[test]
fn too_few_products_are_said_to_be_too_few() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("products.csv");
    write_products(&input, &[("top", 2)]);
    let out = ok(run_divide(dir.path(), &input, "data", &[]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("split is empty: 2 product(s) are too few to split by these ratios"), "{stderr}");
    assert!(!stderr.contains("duplicates.csv"), "{stderr}");
}
