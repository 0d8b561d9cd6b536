//! Cross-validation for label issues (`train --cross-validate K`): K models on product-grouped,
//! category-stratified folds over every image of the three split files, each fold a normal run
//! folder trained on the other folds (`imgtype_dataset::folds`); run resumably and spread over a job array on
//! the sweep's machinery (`run`) in a folder whose files `imgtype_dataset::cv_folder` names; from the folds' held-out predictions, the k-fold estimate,
//! out-of-fold probabilities for every image, and the labels confident learning doubts
//! (`summary`), with what a reviewer reads: `label_issues.csv`, the confused class pairs and
//! the contact sheet (`label_review`); the labels judged with each image's nearest held-out
//! neighbours' labels blended in (`neighbour_opinion`).

// The folder's on-disk contract lives with the folds, in the crate `divide` builds on.
use imgtype_dataset::cv_folder as layout;

mod label_review;
mod neighbour_opinion;
mod out_of_fold;
mod run;
mod summary;

pub use layout::{check_plan_not_lost, is_cv_folder, FoldId, CV_PLAN_FILE, MAX_FOLDS, MAX_REPEATS};
pub use run::{cross_validate, resume_cross_validation, CvEnd, CvOptions, CvReport};
pub use summary::{summarize, Confusion, CvSummary, FoldResult, Judging, Spread};
