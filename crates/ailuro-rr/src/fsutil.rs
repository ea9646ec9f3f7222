//! Crash-safe file creation: temporary file in the target's directory, fsync, then an atomic,
//! non-clobbering publish. An interrupted write leaves at most a stray temporary file, never a
//! half-written file under the final name.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{RecordingError, Result};

/// Directory holding `path` ("." for a bare file name).
pub(crate) fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// fsync the directory so that a rename or create in it is durable. Best effort: some platforms
/// and filesystems cannot open or sync directories, and the data itself is already synced.
pub(crate) fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Create `path` for writing: exclusively unless `overwrite`, in which case it is truncated.
pub(crate) fn create_file(path: &Path, overwrite: bool, hint: &'static str) -> Result<File> {
    let mut o = OpenOptions::new();
    o.write(true);
    if overwrite {
        o.create(true).truncate(true);
    } else {
        o.create_new(true);
    }
    o.open(path).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            RecordingError::AlreadyExists { path: path.to_path_buf(), hint }
        } else {
            RecordingError::io("create", path, e)
        }
    })
}

/// A temporary file next to its eventual target, removed on drop unless published.
pub(crate) struct TempFile {
    pub(crate) path: PathBuf,
    pub(crate) file: Option<File>,
    published: bool,
}

impl TempFile {
    /// Create `.<target name>.tmp.<pid>.<n>` in the target's directory.
    pub(crate) fn new_for(target: &Path) -> Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "ailuro".into());
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = parent_dir(target).join(format!(".{name}.tmp.{}.{n}", std::process::id()));
        let file = create_file(&path, false, "")?;
        Ok(Self { path, file: Some(file), published: false })
    }

    /// The open file.
    pub(crate) fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("temporary file used after publish")
    }

    /// fsync and move the file to `target`, atomically. Without `overwrite` an existing target is
    /// never replaced, even if it appears concurrently (hard link fails if the name exists).
    pub(crate) fn publish(mut self, target: &Path, overwrite: bool, hint: &'static str) -> Result<()> {
        let file = self.file.take().expect("temporary file published twice");
        file.sync_all().map_err(|e| RecordingError::io("sync", &self.path, e))?;
        drop(file);
        if overwrite {
            fs::rename(&self.path, target).map_err(|e| RecordingError::io("rename into place", target, e))?;
        } else {
            match fs::hard_link(&self.path, target) {
                Ok(()) => {
                    let _ = fs::remove_file(&self.path);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(RecordingError::AlreadyExists { path: target.to_path_buf(), hint });
                }
                Err(_) => {
                    // Filesystem without hard links: check-then-rename (a small race, but the best
                    // that portable std offers).
                    if target.exists() {
                        return Err(RecordingError::AlreadyExists { path: target.to_path_buf(), hint });
                    }
                    fs::rename(&self.path, target).map_err(|e| RecordingError::io("rename into place", target, e))?;
                }
            }
        }
        self.published = true;
        sync_dir(&parent_dir(target));
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.published {
            self.file = None;
            let _ = fs::remove_file(&self.path);
        }
    }
}
