//! A sweep's results from whatever has finished in its folder: `sweep_results.csv` and
//! `.json` (the Python tuning script's columns — status, validation F1 weighted and accuracy,
//! per-class F1, overrides — and test metrics, epochs, seconds, images/s), sorted by
//! validation F1 weighted; `best_config.json` (the base config with the winner's
//! overrides); `sweep_comparison.png` (validation curves of every run, a bar per run).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::layout::{observed_state, runs_not_as_planned, Observed, PlanRecord, PLAN_FILE};
use crate::train::RunLayout;

#[derive(Debug, Clone, Serialize)]
pub struct ExperimentResult {
    pub name: String,
    /// `finished`, `running` (a checkpoint, not finished), `failed` or `missing` (not started).
    pub status: String,
    pub val_f1_weighted: Option<f64>,
    pub val_accuracy: Option<f64>,
    pub val_f1_macro: Option<f64>,
    pub test_accuracy: Option<f64>,
    pub test_f1_weighted: Option<f64>,
    pub test_f1_macro: Option<f64>,
    pub best_epoch: Option<usize>,
    pub epochs_run: Option<usize>,
    pub seconds: Option<f64>,
    pub images_per_second: Option<f64>,
    /// Test-split F1 per class.
    pub class_f1: BTreeMap<String, f64>,
    pub overrides: BTreeMap<String, serde_json::Value>,
    pub run_dir: Option<PathBuf>,
    /// Validation F1 weighted per epoch (for the picture).
    #[serde(skip)]
    curve: Vec<(f64, f64)>,
}

pub struct Summary {
    pub results: Vec<ExperimentResult>,
    /// Experiments with no finished run yet.
    pub missing: Vec<String>,
    pub best: Option<String>,
}

/// Reads every experiment of the sweep in `dir` and writes the results files.
pub fn summarize(dir: &Path) -> Result<Summary> {
    let plan_path = dir.join(PLAN_FILE);
    let plan = PlanRecord::read(dir)?;
    let base = plan.base()?;
    // Split files that cannot be read here would count every experiment damaged and replace
    // the results: a summary from another working folder than the sweep's is refused instead.
    crate::train::split_files_fingerprint(&base.paths.data_dir, &[]).with_context(|| {
        format!(
            "the sweep's split files (`paths.data_dir` {}, relative to the folder the sweep was started in)",
            base.paths.data_dir.display()
        )
    })?;
    let mut results: Vec<ExperimentResult> = plan
        .experiments
        .iter()
        .map(|e| {
            // An experiment whose files cannot be read (copied, edited, damaged) is one the
            // table cannot rank; the others still are.
            let folder = dir.join(&e.name);
            let planned = plan.experiment_config(e, &folder).map(|config| (config, plan_path.as_path(), dir));
            read_experiment(&folder, &e.name, &e.overrides, planned).unwrap_or_else(|error| {
                tracing::warn!("experiment {}: {error:#}; counted as damaged", e.name);
                ExperimentResult { status: "damaged".into(), ..empty_result(&e.name, &e.overrides) }
            })
        })
        .collect();
    // Finished runs by validation F1 weighted, best first; the rest after them, in plan order.
    results.sort_by(|a, b| {
        match (
            a.val_f1_weighted.filter(|_| a.status == "finished"),
            b.val_f1_weighted.filter(|_| b.status == "finished"),
        ) {
            (Some(x), Some(y)) => y.total_cmp(&x),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        }
    });
    let missing: Vec<String> = results.iter().filter(|r| r.status != "finished").map(|r| r.name.clone()).collect();
    let best = results.first().filter(|r| r.status == "finished").map(|r| r.name.clone());
    let files = ["sweep_results.json", "sweep_results.csv", "best_config.json", "sweep_comparison.png"];
    let _locks = crate::fsutil::lock_outputs(dir, &files, "writing a summary into it")?;
    write_tables(dir, &results)?;
    let best_config = dir.join("best_config.json");
    if let Some(winner) = results.first().filter(|r| r.status == "finished") {
        let json = super::plan::overridden_json(&base, &winner.overrides)?;
        crate::fsutil::write_atomic(&best_config, serde_json::to_string_pretty(&json)?.as_bytes())?;
    } else if crate::fsutil::is_present(&best_config) {
        // An earlier summary's winner, no longer one: not left to be trained as the best.
        std::fs::remove_file(&best_config).with_context(|| format!("cannot remove {}", best_config.display()))?;
        tracing::warn!("no experiment has finished: {} (an earlier winner's) removed", best_config.display());
    }
    crate::report::draw("sweep_comparison.png", || comparison_picture(&dir.join("sweep_comparison.png"), &results));
    if !missing.is_empty() {
        tracing::warn!("not finished (or damaged): {}", missing.join(", "));
    }
    Ok(Summary { results, missing, best })
}

fn empty_result(name: &str, overrides: &BTreeMap<String, serde_json::Value>) -> ExperimentResult {
    ExperimentResult {
        name: name.to_string(),
        status: "missing".into(),
        val_f1_weighted: None,
        val_accuracy: None,
        val_f1_macro: None,
        test_accuracy: None,
        test_f1_weighted: None,
        test_f1_macro: None,
        best_epoch: None,
        epochs_run: None,
        seconds: None,
        images_per_second: None,
        class_f1: BTreeMap::new(),
        overrides: overrides.clone(),
        run_dir: None,
        curve: Vec::new(),
    }
}

fn read_experiment(
    dir: &Path,
    name: &str,
    overrides: &BTreeMap<String, serde_json::Value>,
    planned: Result<(crate::Config, &Path, &Path)>,
) -> Result<ExperimentResult> {
    let mut result = empty_result(name, overrides);
    let observed = observed_state(dir)?;
    result.status = observed.status().into();
    let run = match observed {
        Observed::Finished(run) | Observed::Running(run) => run,
        Observed::Failed | Observed::Missing => return Ok(result),
    };
    let running = result.status == "running";
    if !running {
        let (config, plan_file, root) = planned.context("the plan's config for it")?;
        // Every run of the experiment, as a rerun would check them, not only the one counted.
        if let Some((_, error)) = runs_not_as_planned(dir, &config, plan_file, root).into_iter().next() {
            return Err(error);
        }
    }
    // A run just starting may not have written its config or a whole metrics table yet.
    let (layout, epochs) = match RunLayout::of(&run).and_then(|l| Ok((l.read_metrics_csv()?, l))) {
        Ok((epochs, layout)) => (layout, epochs),
        Err(_) if running => return Ok(result),
        Err(e) => return Err(e),
    };
    result.curve = epochs.iter().filter_map(|e| Some((e.epoch as f64, e.val_f1_weighted?))).collect();
    result.epochs_run = Some(epochs.len());
    let seconds: f64 = epochs.iter().map(|e| e.seconds).sum();
    result.seconds = Some(seconds);
    let images: f64 = epochs.iter().map(|e| e.images_per_second * e.seconds).sum();
    result.images_per_second = Some(images / seconds.max(1e-9));
    if result.status == "finished" {
        let best_epoch = layout.read_final_results()?.finished.and_then(|run| run.best_epoch);
        result.best_epoch = best_epoch;
        if let Some(best) = epochs.iter().find(|e| Some(e.epoch) == best_epoch) {
            result.val_f1_weighted = best.val_f1_weighted;
            result.val_accuracy = best.val_accuracy;
            result.val_f1_macro = best.val_f1_macro;
        }
        let metrics = layout.read_evaluation_results()?.metrics.metrics;
        result.test_accuracy = Some(metrics.accuracy);
        result.test_f1_weighted = Some(metrics.weighted_avg.f1);
        result.test_f1_macro = Some(metrics.macro_avg.f1);
        result.class_f1 = metrics.per_class.iter().map(|(class, report)| (class.clone(), report.f1_score)).collect();
    }
    result.run_dir = Some(run);
    Ok(result)
}

fn write_tables(dir: &Path, results: &[ExperimentResult]) -> Result<()> {
    crate::fsutil::write_json_atomic(&dir.join("sweep_results.json"), &results)?;
    let classes: Vec<String> = {
        let mut all: Vec<String> = results.iter().flat_map(|r| r.class_f1.keys().cloned()).collect();
        all.sort();
        all.dedup();
        all
    };
    let optional = |v: Option<f64>| v.map(|x| format!("{x:.6}")).unwrap_or_default();
    crate::fsutil::write_atomic_with(&dir.join("sweep_results.csv"), |w| {
        let mut csv = csv::Writer::from_writer(w);
        let mut header: Vec<String> = [
            "experiment",
            "status",
            "val_f1_weighted",
            "val_accuracy",
            "val_f1_macro",
            "test_accuracy",
            "test_f1_weighted",
            "test_f1_macro",
            "best_epoch",
            "epochs_run",
            "seconds",
            "images_per_second",
        ]
        .map(String::from)
        .to_vec();
        header.extend(classes.iter().map(|c| format!("f1_{c}")));
        header.push("overrides".into());
        csv.write_record(&header)?;
        for r in results {
            let mut row = vec![
                r.name.clone(),
                r.status.clone(),
                optional(r.val_f1_weighted),
                optional(r.val_accuracy),
                optional(r.val_f1_macro),
                optional(r.test_accuracy),
                optional(r.test_f1_weighted),
                optional(r.test_f1_macro),
                r.best_epoch.map(|e| e.to_string()).unwrap_or_default(),
                r.epochs_run.map(|e| e.to_string()).unwrap_or_default(),
                r.seconds.map(|s| format!("{s:.1}")).unwrap_or_default(),
                r.images_per_second.map(|s| format!("{s:.1}")).unwrap_or_default(),
            ];
            row.extend(classes.iter().map(|c| optional(r.class_f1.get(c).copied())));
            row.push(serde_json::to_string(&r.overrides)?);
            csv.write_record(&row)?;
        }
        csv.flush()?;
        Ok(())
    })
}

/// Validation F1 (weighted) per epoch of every run, and each run's best as a bar.
fn comparison_picture(path: &Path, results: &[ExperimentResult]) -> Result<()> {
    use crate::report::chart::{line_chart, plot_error, render_png, Series};
    use plotters::prelude::*;
    let finished: Vec<&ExperimentResult> = results.iter().filter(|r| !r.curve.is_empty()).collect();
    if finished.is_empty() {
        bail!("no run has validation results yet");
    }
    let palette = [BLUE, RED, GREEN, MAGENTA, CYAN, RGBColor(230, 130, 0), RGBColor(120, 60, 0), BLACK];
    render_png(path, (1400, 600), |root| {
        let (left, right) = root.split_horizontally(760);
        let series: Vec<Series> = finished
            .iter()
            .enumerate()
            .map(|(i, r)| Series { label: &r.name, color: palette[i % palette.len()], points: r.curve.clone() })
            .collect();
        line_chart(&left, "Validation F1 (weighted) per epoch", "epoch", "F1 weighted", &series)?;
        let scored: Vec<(&str, f64)> =
            finished.iter().filter_map(|r| Some((r.name.as_str(), r.val_f1_weighted?))).collect();
        let mut chart = ChartBuilder::on(&right)
            .caption("Best validation F1 (weighted)", ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(120)
            .build_cartesian_2d(0.0..1.0f64, (0..scored.len().max(1)).into_segmented())
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => scored.get(*i).map(|(n, _)| n.to_string()).unwrap_or_default(),
                _ => String::new(),
            })
            .x_desc("F1 weighted")
            .draw()
            .map_err(plot_error)?;
        chart
            .draw_series(scored.iter().enumerate().map(|(i, (_, v))| {
                Rectangle::new(
                    [(0.0, SegmentValue::Exact(i)), (*v, SegmentValue::Exact(i + 1))],
                    palette[i % palette.len()].mix(0.7).filled(),
                )
            }))
            .map_err(plot_error)?;
        Ok(())
    })
}
