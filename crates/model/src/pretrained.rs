//! ImageNet weights for the backbone, as the Python system gets them, without Python:
//! `model.pretrained_weights` (a local `.pth` or `.safetensors`) when set; else torchvision's
//! own file for the backbone, first from torch.hub's cache (`$TORCH_HOME/hub/checkpoints`),
//! else downloaded into that cache (feature `remote`) from torchvision's URL or
//! `model.pretrained_url`, checked against the SHA-256 prefix in its file name as torch.hub
//! does. Nothing falls back to random weights: a file that cannot be had is an error that
//! says where to put it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use imgtype_base::config::{Backbone, ModelConfig};

/// torchvision's ImageNet weights for `backbone` (the files its `weights=` enums download;
/// MobileNetV3-Large in its IMAGENET1K_V2 version, as the Python system uses).
pub fn torchvision_url(backbone: Backbone) -> &'static str {
    match backbone {
        Backbone::EfficientNetB0 => "https://download.pytorch.org/models/efficientnet_b0_rwightman-7f5810bc.pth",
        Backbone::MobileNetV3Small => "https://download.pytorch.org/models/mobilenet_v3_small-047dcff4.pth",
        Backbone::MobileNetV3Large => "https://download.pytorch.org/models/mobilenet_v3_large-5c1a4163.pth",
        Backbone::MobileNetV2 => "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth",
    }
}

/// torch.hub's checkpoint folder: `$TORCH_HOME/hub/checkpoints`, `TORCH_HOME` defaulting to
/// `$XDG_CACHE_HOME/torch`, then `~/.cache/torch`.
pub fn hub_checkpoint_dir() -> PathBuf {
    let non_empty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    let torch_home = non_empty("TORCH_HOME").unwrap_or_else(|| {
        non_empty("XDG_CACHE_HOME")
            .or_else(|| non_empty("HOME").map(|home| home.join(".cache")))
            .unwrap_or_else(|| PathBuf::from(".cache"))
            .join("torch")
    });
    torch_home.join("hub").join("checkpoints")
}

/// The file name at the end of `url` (query and fragment left out).
fn file_name_of(url: &str) -> Result<&str> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    match path.rsplit('/').next() {
        Some(name) if !name.is_empty() && name != path => Ok(name),
        _ => bail!("model.pretrained_url {url} does not end in a file name"),
    }
}

/// torch.hub's `HASH_REGEX` (`-([a-f0-9]*)\.`): the hex digits between the first `-` that
/// is followed by only hex digits and a `.`, in the file name.
pub fn hash_prefix(file_name: &str) -> Option<&str> {
    let bytes = file_name.as_bytes();
    for (dash, _) in file_name.match_indices('-') {
        let digits = bytes[dash + 1..].iter().take_while(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')).count();
        if bytes.get(dash + 1 + digits) == Some(&b'.') {
            return Some(&file_name[dash + 1..dash + 1 + digits]);
        }
    }
    None
}

/// The backbone weights file a run with `model` starts from, downloading torchvision's file
/// into torch.hub's cache when needed; `None` when `model.pretrained` is false.
pub fn resolve_weights_file(model: &ModelConfig) -> Result<Option<PathBuf>> {
    if !model.pretrained {
        return Ok(None);
    }
    if let Some(path) = &model.pretrained_weights {
        if !imgtype_base::fsutil::is_present(path) {
            bail!(
                "model.pretrained_weights {} does not exist (unset it to use torchvision's ImageNet weights, \
                 or set model.pretrained to false to train from scratch)",
                path.display()
            );
        }
        return Ok(Some(path.clone()));
    }
    let url = model.pretrained_url.as_deref().unwrap_or_else(|| torchvision_url(model.backbone));
    let name = file_name_of(url)?;
    let dir = hub_checkpoint_dir();
    let cached = dir.join(name);
    if cached.is_file() {
        tracing::info!("ImageNet weights for {}: {} (cached)", model.backbone.as_str(), cached.display());
        return Ok(Some(cached));
    }
    download_into_cache(url, &cached).with_context(|| {
        format!(
            "cannot get ImageNet weights for {}: put torchvision's file {name} into {} (this is torch.hub's \
             cache; TORCH_HOME moves it), or set model.pretrained_weights to a copy of it, or set \
             model.pretrained to false to train from scratch",
            model.backbone.as_str(),
            dir.display()
        )
    })?;
    Ok(Some(cached))
}

#[cfg(not(feature = "remote"))]
fn download_into_cache(url: &str, _: &Path) -> Result<()> {
    bail!("{url} is not cached and downloading needs imgtype's `remote` feature")
}

/// Downloads `url` to `target` through a temp file beside it, with a progress bar, a timeout
/// and torch.hub's hash check; a failed or corrupt download leaves nothing at `target`.
#[cfg(feature = "remote")]
fn download_into_cache(url: &str, target: &Path) -> Result<()> {
    use sha2::{Digest, Sha256};
    use std::io::Read;

    let name = file_name_of(url)?;
    let expected = hash_prefix(name);
    tracing::info!("downloading {url} to {}", target.display());
    let timeout = std::time::Duration::from_secs(60);
    let agent = ureq::AgentBuilder::new().timeout_connect(timeout).timeout_read(timeout).build();
    let response = agent.get(url).call().with_context(|| format!("cannot download {url}"))?;
    let total: u64 = response.header("Content-Length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = response.into_reader();
    let mut hasher = Sha256::new();
    let mut progress = imgtype_base::progress::Progress::new(format!("download {name}"), total, 4 << 20);
    imgtype_base::fsutil::write_atomic_with(target, |out| {
        let mut buffer = vec![0u8; 1 << 16];
        loop {
            let n = body.read(&mut buffer).with_context(|| format!("while downloading {url}"))?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
            out.write_all(&buffer[..n])?;
            progress.advance(n as u64, "");
        }
        let digest: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
        match expected {
            Some(prefix) if !digest.starts_with(prefix) => bail!(
                "the download of {url} is corrupt: its SHA-256 is {digest}, the file name says it starts with {prefix}"
            ),
            Some(_) => Ok(()),
            None => {
                tracing::warn!("{name} carries no `-<sha256 prefix>` in its name, so the download is not checked");
                Ok(())
            }
        }
    })?;
    progress.finish();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_prefix_follows_torch_hub() {
        assert_eq!(hash_prefix("efficientnet_b0_rwightman-7f5810bc.pth"), Some("7f5810bc"));
        assert_eq!(hash_prefix("mobilenet_v3_large-5c1a4163.pth"), Some("5c1a4163"));
        assert_eq!(hash_prefix("weights-final-0a1b.pth"), Some("0a1b"));
        assert_eq!(hash_prefix("weights.pth"), None);
    }

    #[test]
    fn file_name_ignores_query() {
        assert_eq!(file_name_of("http://127.0.0.1:8/x/a-12ab.pth?sig=1").unwrap(), "a-12ab.pth");
        assert!(file_name_of("http://127.0.0.1:8/x/").is_err());
    }
}
