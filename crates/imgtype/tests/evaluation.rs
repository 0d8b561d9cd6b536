//! Scoring a split: an image that cannot be read any more (a file removed after screening,
//! a download that failed) is left out with a warning instead of stopping training.

use imgtype::data::{ImageRecord, ImageSource};
use imgtype::eval::evaluate_records;
use imgtype::loss::Loss;
use imgtype::score::{BatchScorer, LibtorchEngine, ScoringSettings};
use imgtype::{Config, ImageTypeClassifier};
use tch::Device;

#[test]
fn unreadable_images_are_left_out_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.augmentation.image_size = 32;
    config.inference.batch_size = 2;
    let mut records = Vec::new();
    for (i, class) in ["care_label", "detail_shot", "full_shot"].iter().enumerate() {
        let path = dir.path().join(format!("img{i}.png"));
        image::RgbImage::from_fn(40, 30, |x, y| image::Rgb([(x * 5) as u8, (y * 7) as u8, (i * 60) as u8]))
            .save(&path)
            .unwrap();
        records.push(ImageRecord {
            product_id: format!("p{i}"),
            image_path: path.display().to_string(),
            image_type: class.to_string(),
        });
    }
    let gone = dir.path().join("gone.png").display().to_string();
    records.insert(1, ImageRecord { product_id: "p9".into(), image_path: gone, image_type: "neck_label".into() });
    tch::manual_seed(2);
    let model = ImageTypeClassifier::new(&config, Device::Cpu);
    let loss = Loss::from_config(&config, &[1, 1, 1, 1], Device::Cpu).unwrap();
    let scorer = BatchScorer::new(
        Box::new(LibtorchEngine::new(&model, tch::Kind::Float)),
        ImageSource::local(None),
        ScoringSettings::new(&config, model.input_size()),
        model.class_names().len(),
    );
    let names = model.class_names();
    let evaluation = evaluate_records(&scorer, names, &records, Some(&loss), "validation").unwrap();
    assert_eq!(evaluation.unreadable, 1);
    assert_eq!(evaluation.y_true, vec![0, 1, 2]);
    assert!(evaluation.loss.is_finite());

    let all_gone: Vec<ImageRecord> = records.iter().filter(|r| r.image_type == "neck_label").cloned().collect();
    let err = evaluate_records(&scorer, names, &all_gone, Some(&loss), "validation").err().unwrap();
    assert!(format!("{err:#}").contains("none of its 1 images could be read"));
}
