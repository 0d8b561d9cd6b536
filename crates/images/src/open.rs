//! Reading a local image file as one step that can be checked: the file is opened first and
//! the checks are about what was opened (a regular file, inside the image folder when the
//! policy confines keys, not larger than the byte cap), never about a name that could be
//! swapped between a check and the open.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{anyhow, bail, Result};

use imgtype_base::fsutil::{open_regular_file, read_at_most, ByteCap};

/// The bytes of the regular file at `path`, at most `max_bytes` of them. With `confine`,
/// the file opened must be inside that folder: the opened file's device and inode are
/// compared with those of the path it resolves to, so a symbolic link swapped to the outside
/// between the open and the check is caught as well as one that pointed outside all along.
/// FIFOs, devices and sockets are refused without blocking (see [`open_regular_file`]).
pub fn read_regular_file(path: &Path, confine: Option<&Path>, max_bytes: u64, label: &str) -> Result<Vec<u8>> {
    let label = format!("image {label}");
    let cap = image_cap(max_bytes);
    let (file, opened) = open_regular_file(path, &label, cap)?;
    if let Some(folder) = confine {
        check_inside(path, &opened, folder, &label)?;
    }
    read_at_most(file, &label, cap)
}

/// `data.max_image_bytes`, the cap on every image's bytes (files, downloads, the cache).
pub fn image_cap(max_bytes: u64) -> ByteCap<'static> {
    ByteCap { max_bytes, name: "data.max_image_bytes" }
}

fn check_inside(path: &Path, opened: &std::fs::Metadata, folder: &Path, label: &str) -> Result<()> {
    let outside = || anyhow!("{label}: leads out of the image folder (a symbolic link?)");
    let real_folder = folder.canonicalize().map_err(|_| anyhow!("{label}: the image folder cannot be read"))?;
    let real = path.canonicalize().map_err(|_| outside())?;
    if !real.starts_with(&real_folder) {
        return Err(outside());
    }
    let resolved = std::fs::metadata(&real).map_err(|_| outside())?;
    if (resolved.dev(), resolved.ino()) != (opened.dev(), opened.ino()) {
        bail!("{label}: changed while it was being opened (a symbolic link swapped?); not read");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_regular_files_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("x.jpg");
        let name = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o644) }, 0);
        let err = read_regular_file(&fifo, None, 100, "x.jpg").unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
        let err = read_regular_file(Path::new("/dev/zero"), None, 100, "/dev/zero").unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
        let err = read_regular_file(dir.path(), None, 100, "d").unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }

    #[test]
    fn files_over_the_cap_are_refused_from_their_size() {
        let dir = tempfile::tempdir().unwrap();
        let sparse = dir.path().join("big.jpg");
        std::fs::File::create(&sparse).unwrap().set_len(20 << 30).unwrap();
        let err = read_regular_file(&sparse, None, 64 << 20, "big.jpg").unwrap_err().to_string();
        assert!(err.contains("more than data.max_image_bytes"), "{err}");
        let err = read_at_most(std::io::repeat(0), "zero", image_cap(1000)).unwrap_err().to_string();
        assert!(err.contains("more than data.max_image_bytes (1000 bytes)"), "{err}");
        assert_eq!(read_at_most(&b"abc"[..], "x", image_cap(3)).unwrap(), b"abc");
    }

    #[test]
    fn links_out_of_the_folder_are_refused_and_links_inside_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("images");
        std::fs::create_dir(&folder).unwrap();
        std::fs::write(folder.join("in.jpg"), b"inside").unwrap();
        std::fs::write(dir.path().join("secret"), b"outside").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), folder.join("out.jpg")).unwrap();
        std::os::unix::fs::symlink("in.jpg", folder.join("alias.jpg")).unwrap();
        assert_eq!(read_regular_file(&folder.join("alias.jpg"), Some(&folder), 100, "a").unwrap(), b"inside");
        let err = read_regular_file(&folder.join("out.jpg"), Some(&folder), 100, "out.jpg").unwrap_err();
        assert!(err.to_string().contains("leads out of the image folder"), "{err}");
        let err = read_regular_file(&folder.join("missing.jpg"), Some(&folder), 100, "missing.jpg").unwrap_err();
        assert_eq!(err.to_string(), "cannot open image missing.jpg: No such file or directory (os error 2)");
    }
}
