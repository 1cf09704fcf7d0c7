//! A small disk that can be filled: a tmpfs mounted for a test or a soak (needs root, as CI
//! has), and a writer that fills a file system to its last byte.

use std::io::Write;
use std::path::{Path, PathBuf};

/// A tmpfs of `size_mib` at a path, unmounted when dropped (also when a test fails).
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts it at `path` (created if missing), mode 0700.
    pub fn mount(path: &Path, size_mib: u64) -> anyhow::Result<Self> {
        std::fs::create_dir_all(path)?;
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m,mode=0700")])
            .arg("tmpfs")
            .arg(path)
            .status()?;
        anyhow::ensure!(
            status.success(),
            "cannot mount a tmpfs at {} (this needs root)",
            path.display()
        );
        Ok(Self(path.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Writes the file `path` until its file system is full; the bytes written.
pub fn fill(path: &Path) -> std::io::Result<u64> {
    let mut file = std::fs::File::create(path)?;
    let chunk = vec![0x5a_u8; 64 * 1024];
    let mut written = 0;
    while file.write_all(&chunk).is_ok() {
        written += chunk.len() as u64;
    }
    // The last partial chunk may have landed; what matters is that the disk is full now.
    let _ = file.sync_all();
    Ok(written)
}
