//! What a cross-validation gives a person reviewing labels: the rows of `label_issues.csv`,
//! the class pairs most often confused, and the contact sheet of the most suspect images.

use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use super::layout::FoldId;
use crate::config::Config;
use crate::data::folds::FoldImage;
use crate::eval::label_issues::LabelIssues;
use crate::train::PredictionRow;

/// Thumbnails on `label_issues.png`, most suspect first.
const CONTACT_SHEET_SIZE: usize = 36;

/// Given label → the class confident learning puts the image in.
#[derive(Debug, Clone, Serialize)]
pub struct Confusion {
    pub given: String,
    pub suggested: String,
    /// The calibrated confident joint's count: images estimated to carry this wrong label.
    pub estimated: usize,
    /// Of them, listed in `label_issues.csv`.
    pub listed: usize,
}

/// An image with its out-of-fold prediction.
pub(super) struct OutOfFold<'a> {
    pub(super) image: &'a FoldImage,
    pub(super) prediction: PredictionRow,
    /// The held-out models whose probabilities `prediction` holds (their mean, with more than
    /// one): one per repeat that scored the image.
    pub(super) judges: Vec<FoldId>,
}

/// What was concluded about one image's label.
pub(super) struct Judgement<'a> {
    /// The probabilities the issues were found on: the model's, blended with the neighbours'
    /// shares when `neighbours` are given.
    pub(super) probabilities: &'a [f64],
    pub(super) neighbours: Option<&'a [f64]>,
    pub(super) label_quality: f64,
    pub(super) confident_learning: bool,
}

/// A row of `label_issues.csv`.
#[derive(Debug, Clone, Serialize)]
pub(super) struct IssueRow {
    pub(super) image_path: String,
    product_id: String,
    split: String,
    fold: usize,
    image_type: String,
    suggested_class: String,
    label_quality: f64,
    given_probability: f64,
    suggested_probability: f64,
    /// Counted off the diagonal of the confident joint (else: only not the most probable class).
    confident_learning: bool,
    why: String,
}

impl IssueRow {
    pub(super) const HEADER: [&'static str; 11] = [
        "image_path",
        "product_id",
        "split",
        "fold",
        "image_type",
        "suggested_class",
        "label_quality",
        "given_probability",
        "suggested_probability",
        "confident_learning",
        "why",
    ];

    pub(super) fn new(
        o: &OutOfFold,
        label: usize,
        judgement: Judgement,
        thresholds: &[f64],
        class_names: &[String],
        repeats: usize,
    ) -> Self {
        let Judgement { probabilities: p, neighbours, label_quality, confident_learning } = judgement;
        let suggested = (0..p.len())
            .filter(|&k| k != label)
            .max_by(|&a, &b| p[a].total_cmp(&p[b]).then(b.cmp(&a)))
            .unwrap_or(label);
        let t = thresholds;
        let (given_name, suggested_name) = (&class_names[label], &class_names[suggested]);
        let judges = match o.judges.as_slice() {
            [one] => format!("{}'s model", one.label(repeats)),
            all => {
                let named: Vec<String> = all.iter().map(|j| j.label(repeats)).collect();
                format!("its {} held-out models ({}), averaged", all.len(), named.join(", "))
            }
        };
        let mut why = format!(
            "{judges}: {given_name} {:.3}, {suggested_name} {:.3}",
            o.prediction.probabilities[label], o.prediction.probabilities[suggested]
        );
        if let Some(n) = neighbours {
            why += &format!(
                "; its nearest held-out images: {given_name} {:.2}, {suggested_name} {:.2}; together: \
                 {given_name} {:.3} (its class threshold {:.3}), {suggested_name} {:.3} (threshold {:.3})",
                n[label], n[suggested], p[label], t[label], p[suggested], t[suggested]
            );
        } else {
            why += &format!(" (class thresholds {:.3} and {:.3})", t[label], t[suggested]);
        }
        Self {
            image_path: o.image.image_path.clone(),
            product_id: o.image.product_id.clone(),
            split: o.image.split.clone(),
            fold: o.image.fold,
            image_type: o.image.image_type.clone(),
            suggested_class: class_names[suggested].clone(),
            label_quality,
            given_probability: p[label],
            suggested_probability: p[suggested],
            confident_learning,
            why,
        }
    }
}

pub(super) fn confusions(found: &LabelIssues, issues: &[IssueRow], class_names: &[String]) -> Vec<Confusion> {
    let mut pairs = Vec::new();
    for (given, row) in found.confident_joint.iter().enumerate() {
        for (truth, &estimated) in row.iter().enumerate() {
            let (given, suggested) = (&class_names[given], &class_names[truth]);
            let listed = issues.iter().filter(|i| i.image_type == *given && i.suggested_class == *suggested).count();
            if given != suggested && (estimated > 0 || listed > 0) {
                pairs.push(Confusion { given: given.clone(), suggested: suggested.clone(), estimated, listed });
            }
        }
    }
    pairs.sort_by(|a, b| (b.estimated, b.listed).cmp(&(a.estimated, a.listed)));
    pairs
}

pub(super) fn contact_sheet(path: &Path, config: &Config, issues: &[IssueRow], images: usize) -> Result<()> {
    use crate::report::contact_sheet::{write, SheetEntry};
    let source = crate::data::ImageSource::from_config(&config.data);
    let entries: Vec<SheetEntry> = issues
        .iter()
        .take(CONTACT_SHEET_SIZE)
        .enumerate()
        .map(|(rank, issue)| SheetEntry {
            image: crate::data::image::load_rgb(&source, &issue.image_path).ok(),
            lines: vec![
                format!("{}. {}", rank + 1, issue.image_type),
                format!("-> {}", issue.suggested_class),
                format!("quality {:.3}", issue.label_quality),
            ],
        })
        .collect();
    let title =
        format!("labels to review: {} of {images} images, most suspect first (given -> suggested)", issues.len());
    write(path, &title, &entries)
}
