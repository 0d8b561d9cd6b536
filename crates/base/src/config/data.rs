//! The `data` section: where the product CSV and the images are, the split's ratios and seed,
//! and the limits on what an image may be.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::DEFAULT_CLASS_NAMES;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct DataConfig {
    pub csv_path: PathBuf,
    /// Local folder of relative image keys; "" or null: unset, as in the Python system.
    #[serde(deserialize_with = "empty_is_unset")]
    pub base_image_path: Option<PathBuf>,
    /// CDN prefix of relative image keys; "" or null: unset (then `S3_CLOUDFRONT_DOMAIN`).
    #[serde(deserialize_with = "empty_is_unset")]
    pub base_image_url: Option<String>,
    /// true: relative keys are fetched from `base_image_url` / `S3_CLOUDFRONT_DOMAIN`, even
    /// with `base_image_path` set; false: from the local folder only; null: the folder when
    /// set, else the CDN.
    pub is_remote: Option<bool>,
    pub target_column: String,
    pub class_names: Vec<String>,
    pub train_ratio: f64,
    pub val_ratio: f64,
    pub test_ratio: f64,
    pub random_state: u64,
    /// Largest share of a split's images that may be unreadable before a run stops.
    pub max_bad_image_ratio: f64,
    /// On-disk cache of downloaded images, keyed by URL (null = no cache).
    pub image_cache_dir: Option<PathBuf>,
    /// Timeout of one remote image request, in seconds.
    pub download_timeout_secs: f64,
    /// Extra attempts after a failed download (timeouts, 5xx; a 404 is not retried).
    pub download_retries: u32,
    /// Images with more pixels get a warning, with more than twice as many are refused
    /// (Pillow's `MAX_IMAGE_PIXELS`); null: no limit.
    pub max_image_pixels: Option<u64>,
    /// Image files and downloads larger than this many bytes are refused before they are
    /// read whole (a 20 GB file, `/dev/zero`, an endless body).
    pub max_image_bytes: u64,
    /// Decode JPEG / PNG files that end early, the missing part filled in (Pillow's
    /// `LOAD_TRUNCATED_IMAGES`); off: they are unreadable images.
    pub allow_truncated_images: bool,
    /// Train even when a class has no training image (otherwise an error: it could never be learnt).
    pub allow_empty_train_classes: bool,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            csv_path: PathBuf::from("image_data.csv"),
            base_image_path: None,
            base_image_url: None,
            is_remote: None,
            target_column: "image_type".into(),
            class_names: DEFAULT_CLASS_NAMES.iter().map(|s| s.to_string()).collect(),
            train_ratio: 0.8,
            val_ratio: 0.1,
            test_ratio: 0.1,
            random_state: 2025,
            max_bad_image_ratio: 0.01,
            image_cache_dir: None,
            download_timeout_secs: 10.0,
            download_retries: 2,
            max_image_pixels: Some(89_478_485),
            max_image_bytes: 64 << 20,
            allow_truncated_images: false,
            allow_empty_train_classes: false,
        }
    }
}

/// "" and null both mean unset, as the Python system reads its config.
pub(super) fn empty_is_unset<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: From<String>,
{
    let value: Option<String> = Option::deserialize(deserializer)?;
    Ok(value.filter(|v| !v.trim().is_empty()).map(T::from))
}
