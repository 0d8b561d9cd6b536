//! Keys the Python system's config code defines that have no effect here, each with the
//! reason a user sees once when their config sets it. Keys we honour are ordinary fields of
//! the config structs; a key in neither place is an unknown key (a typo) and warned about.

const UNUSED_IN_PYTHON: &str = "the Python system defines it but never reads it either";

const INERT_KEYS: &[(&str, &str)] = &[
    ("data.filter_categories", UNUSED_IN_PYTHON),
    ("data.min_samples_per_class", UNUSED_IN_PYTHON),
    ("data.max_samples_per_class", UNUSED_IN_PYTHON),
    ("model.unfreeze_backbone_epoch", "the Python system never reads it either; model.freeze_backbone_epochs decides"),
    (
        "logging.print_confusion_matrix",
        "the Python system never reads it either; confusion matrices are always written",
    ),
    ("logging.save_predictions", "the Python system never reads it either; test always writes its predictions"),
    ("logging.wandb_project", "Weights & Biases is not called from here (see logging.use_wandb)"),
    ("logging.wandb_entity", "Weights & Biases is not called from here (see logging.use_wandb)"),
    ("inference.save_features", UNUSED_IN_PYTHON),
    ("paths.output_dir", "test writes under paths.test_result_dir, or where --output-dir / --output-path say"),
    ("paths.auto_create_dirs", "folders are always created when a run needs them"),
    ("system.pin_memory", "batches are always copied to CUDA through pinned memory; the CPU needs none"),
    ("system.persistent_workers", "the loading threads live as long as the run"),
    ("system.prefetch_factor", "the loader always prepares batches ahead of the training step"),
    ("system.compile_model", UNUSED_IN_PYTHON),
];

/// Why `key` (a dotted path) has no effect, when it is one of the Python system's keys.
pub fn inert_reason(key: &str) -> Option<&'static str> {
    INERT_KEYS.iter().find(|(k, _)| *k == key).map(|(_, why)| *why)
}

/// Every such key, for the README table's test.
pub fn inert_keys() -> impl Iterator<Item = (&'static str, &'static str)> {
    INERT_KEYS.iter().copied()
}
