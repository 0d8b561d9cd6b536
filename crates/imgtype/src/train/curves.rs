//! `logs/training_curves.png`: loss, accuracy (and validation F1), learning rates per
//! epoch, and validation loss against accuracy.

use std::path::Path;

use anyhow::Result;
use plotters::prelude::*;

use super::state::EpochRecord;
use crate::report::chart::{line_chart, render_png, Series};

/// Loss, accuracy, learning rate per epoch, and validation loss against accuracy.
pub fn training_curves(path: &Path, history: &[EpochRecord]) -> Result<()> {
    let epoch_points = |f: &dyn Fn(&EpochRecord) -> Option<f64>| -> Vec<(f64, f64)> {
        history.iter().filter_map(|r| f(r).map(|v| (r.epoch as f64, v))).collect()
    };
    render_png(path, (1400, 1000), |root| {
        let areas = root.split_evenly((2, 2));
        line_chart(
            &areas[0],
            "Loss",
            "epoch",
            "loss",
            &[
                Series { label: "train", color: BLUE, points: epoch_points(&|r| Some(r.train_loss)) },
                Series { label: "validation", color: RED, points: epoch_points(&|r| r.val_loss) },
            ],
        )?;
        line_chart(
            &areas[1],
            "Accuracy",
            "epoch",
            "accuracy",
            &[
                Series { label: "train", color: BLUE, points: epoch_points(&|r| Some(r.train_accuracy)) },
                Series { label: "validation", color: RED, points: epoch_points(&|r| r.val_accuracy) },
                Series {
                    label: "validation F1 (weighted)",
                    color: GREEN,
                    points: epoch_points(&|r| r.val_f1_weighted),
                },
            ],
        )?;
        line_chart(
            &areas[2],
            "Learning rate",
            "epoch",
            "learning rate",
            &[
                Series { label: "head", color: MAGENTA, points: epoch_points(&|r| Some(r.lr_head)) },
                Series { label: "backbone", color: CYAN, points: epoch_points(&|r| Some(r.lr_backbone)) },
            ],
        )?;
        let val: Vec<(f64, f64)> = history.iter().filter_map(|r| Some((r.val_loss?, r.val_accuracy?))).collect();
        line_chart(
            &areas[3],
            "Validation loss vs accuracy",
            "validation loss",
            "validation accuracy",
            &[Series { label: "epochs in order", color: RGBColor(120, 60, 0), points: val }],
        )
    })
}
