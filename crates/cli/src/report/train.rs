//! What `train` prints on stdout: a run's result, a sweep's table, a cross-validation's figures.

use std::path::Path;

use imgtype::crossval::{CvSummary, Spread};
use imgtype::sweep::Summary;
use imgtype::train::TrainOutcome;

/// A finished run: its folder, best model and test figures.
pub fn print_run(outcome: &TrainOutcome) {
    println!("run folder: {}", outcome.run_dir.display());
    if let Some(model) = &outcome.best_model {
        println!("best model: {} (epoch {})", model.display(), outcome.best_epoch.unwrap_or(0));
    }
    println!(
        "test accuracy: {:.4}  F1 macro: {:.4}  F1 weighted: {:.4}",
        outcome.test_metrics.accuracy, outcome.test_metrics.macro_avg.f1, outcome.test_metrics.weighted_avg.f1
    );
}

/// A cross-validation's figures per fold and k-fold, and the labels it doubts.
pub fn print_cv_summary(dir: &Path, summary: &CvSummary) {
    let score = |v: Option<f64>| v.map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into());
    let repeated = summary.repeats > 1;
    for f in &summary.folds {
        let repeat = if repeated { format!("repeat {} ", f.repeat) } else { String::new() };
        println!(
            "{repeat}fold {:<3} {:<9} {:>5} held out  accuracy {}  F1 macro {}  F1 weighted {}",
            f.fold,
            f.status,
            f.held_out_images,
            score(f.accuracy),
            score(f.f1_macro),
            score(f.f1_weighted)
        );
    }
    let spread = |s: Option<Spread>| s.map(|s| format!("{:.4} ± {:.4}", s.mean, s.std)).unwrap_or_else(|| "-".into());
    println!(
        "k-fold: accuracy {}  F1 macro {}  F1 weighted {}",
        spread(summary.accuracy),
        spread(summary.f1_macro),
        spread(summary.f1_weighted)
    );
    let judged_on = match (summary.neighbours, summary.neighbours_in_smallest_fold) {
        (0, _) => "the models' probabilities".to_string(),
        // Neighbours are the other images of one fold: K beyond them asks for more than there are.
        (k, fewer) if fewer < k => format!(
            "the models' probabilities with {k} neighbours' labels, at most {fewer} in the smallest fold: all its other images"
        ),
        (k, _) => format!("the models' probabilities with {k} neighbours' labels"),
    };
    println!(
        "labels to review: {} of {} images with an out-of-fold prediction ({} by confident learning on {judged_on}), \
         ranked by {}",
        summary.label_issues,
        summary.oof_images,
        summary.confident_learning_issues,
        summary.ranked_by.as_str()
    );
    for c in summary.confusions.iter().filter(|c| c.listed > 0).take(5) {
        println!(
            "  labelled {} but looks like {}: {} listed ({} estimated)",
            c.given, c.suggested, c.listed, c.estimated
        );
    }
    if !summary.unfinished.is_empty() {
        let unfinished: Vec<String> = summary.unfinished.iter().map(|f| f.label(summary.repeats)).collect();
        println!("folds not finished: {}", unfinished.join(", "));
    }
    println!("results: {}", dir.join("cv_results.csv").display());
    println!("label issues: {} and {}", dir.join("label_issues.csv").display(), dir.join("label_issues.png").display());
}

/// A sweep's experiments and the best of them.
pub fn print_sweep_table(summary: &Summary) {
    for r in &summary.results {
        let score = |v: Option<f64>| v.map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into());
        println!(
            "{:<24} {:<9} val F1 weighted {}  test accuracy {}",
            r.name,
            r.status,
            score(r.val_f1_weighted),
            score(r.test_accuracy)
        );
    }
    if let Some(best) = &summary.best {
        println!("best: {best} (best_config.json)");
    }
    if !summary.missing.is_empty() {
        println!("not finished: {}", summary.missing.join(", "));
    }
}
