//! Crash-safe file creation: temporary file in the target's directory, fsync, then an atomic,
//! non-clobbering publish. An interrupted write leaves at most a stray temporary file, never a
//! half-written file under the final name; stray temporary files of dead processes are removed the
//! next time the same target is created.
//!
//! Rules every writer of this crate follows (docs/FORMATS.md, "Creating files"):
//!
//! * Nothing is ever written *through* an existing path: files are created under a fresh temporary
//!   name (`O_EXCL`, which does not follow symbolic links) and then moved into place. With
//!   `overwrite` the move is a `rename`, which replaces a symbolic link at the target, never the
//!   file it points to. Without `overwrite` the move is a hard link, which fails if the name exists
//!   in any form (file, directory, dangling link).
//! * A publish can be undone ([`Published::rollback`]) until it is committed, so that callers
//!   creating two files (snapshot + log, or both members of a `.rr`) publish both or neither. An
//!   overwritten file is kept under a temporary name until commit, so a rollback restores it.

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

/// Create a new file at `path`, failing if anything (even a dangling symbolic link) has that name.
pub(crate) fn create_new_file(path: &Path) -> Result<File> {
    // `create_new` is O_CREAT|O_EXCL: it never follows a symbolic link at `path`.
    OpenOptions::new().write(true).read(true).create_new(true).open(path).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            RecordingError::AlreadyExists { path: path.to_path_buf(), hint: "" }
        } else {
            RecordingError::io("create", path, e)
        }
    })
}

/// Check that a file may be created at `target`: its directory exists, and the name is free
/// (without `overwrite`) or holds something that may be replaced (with `overwrite`: a regular file
/// or a symbolic link, which is replaced itself, never followed). A directory or a special file is
/// never replaced.
pub(crate) fn check_target(target: &Path, overwrite: bool, hint: &'static str) -> Result<()> {
    let bad = |detail: String| RecordingError::BadTarget { path: target.to_path_buf(), detail };
    if target.file_name().is_none() {
        return Err(bad("the name has no file name component".into()));
    }
    let dir = parent_dir(target);
    match fs::metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(bad(format!("{} is not a directory", dir.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(RecordingError::NotFound { what: "directory", path: dir });
        }
        Err(e) => return Err(RecordingError::io("access directory", &dir, e)),
    }
    // symlink_metadata: look at the name itself, not at what a link points to.
    let md = match fs::symlink_metadata(target) {
        Ok(md) => md,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(RecordingError::io("inspect", target, e)),
    };
    let ft = md.file_type();
    if ft.is_dir() {
        return Err(bad("it is a directory".into()));
    }
    if !ft.is_file() && !ft.is_symlink() {
        return Err(bad("it is a special file (not a regular file); refusing to replace it".into()));
    }
    if !overwrite {
        if ft.is_symlink() {
            let to = fs::read_link(target).map(|p| p.display().to_string()).unwrap_or_else(|_| "?".into());
            return Err(bad(format!(
                "it is a symbolic link (to {to}); refusing to replace it (overwrite must be requested \
                 explicitly{hint}; the link itself is then replaced, not the file it points to)"
            )));
        }
        return Err(RecordingError::AlreadyExists { path: target.to_path_buf(), hint });
    }
    Ok(())
}

/// The `.<name>.tmp.` prefix of temporary files for `target`, and the target's directory.
fn temp_prefix(target: &Path) -> (PathBuf, String) {
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "ailuro".into());
    (parent_dir(target), format!(".{name}.tmp."))
}

/// Whether process `pid` exists on this host. `None` if that cannot be known (no `/proc`).
fn process_alive(pid: u32) -> Option<bool> {
    // This crate forbids unsafe code, so no kill(pid, 0): /proc/PID exists iff the process does
    // (zombies included, which is the conservative answer).
    if !Path::new("/proc/self").exists() {
        return None;
    }
    Some(Path::new("/proc").join(pid.to_string()).exists())
}

/// Remove temporary files for `target` left behind by processes that no longer exist (a kill -9
/// or a crash during a write): `.<name>.tmp.<pid>.<n>` in the target's directory whose `<pid>` is
/// not a live process. Files of live processes (a concurrent writer) are left alone, as is
/// everything when liveness cannot be determined. Only regular files are removed. Returns the
/// files removed. Errors are ignored: this is housekeeping, not part of the write.
pub(crate) fn remove_stale_temps(target: &Path) -> Vec<PathBuf> {
    let (dir, prefix) = temp_prefix(target);
    let mut removed = Vec::new();
    let Ok(rd) = fs::read_dir(&dir) else {
        return removed;
    };
    for ent in rd.flatten() {
        let name = ent.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let Some((pid, n)) = rest.split_once('.') else {
            continue;
        };
        let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(pid) || !all_digits(n) {
            continue;
        }
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() || process_alive(pid) != Some(false) {
            continue;
        }
        let p = ent.path();
        if fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_file()) && fs::remove_file(&p).is_ok() {
            removed.push(p);
        }
    }
    removed
}

/// A fresh, unused temporary name for `target` (`.<name>.tmp.<pid>.<n>` in its directory).
fn temp_name(target: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let (dir, prefix) = temp_prefix(target);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("{prefix}{}.{n}", std::process::id()))
}

/// Identity of a file (device, inode), to make sure a rollback removes only the file it published.
#[cfg(unix)]
fn file_id(md: &fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Some((md.dev(), md.ino()))
}

#[cfg(not(unix))]
fn file_id(_md: &fs::Metadata) -> Option<(u64, u64)> {
    None
}

/// A temporary file next to its eventual target, removed on drop unless published.
pub(crate) struct TempFile {
    pub(crate) path: PathBuf,
    /// The final name (used in error messages, which should name what the user asked for).
    pub(crate) target: PathBuf,
    pub(crate) file: Option<File>,
    published: bool,
}

impl TempFile {
    /// Create `.<target name>.tmp.<pid>.<n>` in the target's directory, after removing stale
    /// temporary files of the same target left by dead processes.
    pub(crate) fn new_for(target: &Path) -> Result<Self> {
        remove_stale_temps(target);
        let path = temp_name(target);
        let file = create_new_file(&path)?;
        Ok(Self { path, target: target.to_path_buf(), file: Some(file), published: false })
    }

    /// The open file.
    pub(crate) fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("temporary file used after publish")
    }

    /// fsync and move the file to its target, atomically, for good. Without `overwrite` an
    /// existing target is never replaced, even if it appears concurrently.
    pub(crate) fn publish(self, overwrite: bool, hint: &'static str) -> Result<()> {
        let (_, p) = self.publish_undoable(overwrite, hint)?;
        p.commit();
        Ok(())
    }

    /// fsync and move the file to its target; returns the still-open file and a [`Published`]
    /// that must be committed (dropping it undoes the publish).
    pub(crate) fn publish_undoable(mut self, overwrite: bool, hint: &'static str) -> Result<(File, Published)> {
        let target = self.target.clone();
        let file = self.file.take().expect("temporary file published twice");
        file.sync_all().map_err(|e| RecordingError::io("sync", &target, e))?;
        let id = file.metadata().ok().as_ref().and_then(file_id);
        // Holding the file open keeps its inode allocated, so the identity check of a rollback
        // cannot be fooled by a new file that reuses the inode number.
        let keep = file.try_clone().ok();
        let mut undo = Published { target: target.clone(), backup: None, id, _keep: keep, done: false };
        if overwrite {
            let aside = self.set_aside(&target)?;
            undo.backup = aside.as_ref().map(|(b, _)| b.clone());
            if let Err(e) = fs::rename(&self.path, &target) {
                // Undo the set-aside: a moved target goes back; a hard-linked copy is just removed
                // (renaming it back would be a no-op, both names being the same file).
                match aside {
                    Some((b, true)) => {
                        let _ = fs::rename(&b, &target);
                    }
                    Some((b, false)) => {
                        let _ = fs::remove_file(&b);
                    }
                    None => {}
                }
                undo.backup = None;
                undo.done = true;
                return Err(RecordingError::io("rename into place", &target, e));
            }
        } else {
            match fs::hard_link(&self.path, &target) {
                Ok(()) => {
                    let _ = fs::remove_file(&self.path);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    undo.done = true;
                    return Err(RecordingError::AlreadyExists { path: target, hint });
                }
                Err(_) => {
                    // Filesystem without hard links: check-then-rename (a small race, but the best
                    // that portable std offers). symlink_metadata: a dangling link counts as taken.
                    if fs::symlink_metadata(&target).is_ok() {
                        undo.done = true;
                        return Err(RecordingError::AlreadyExists { path: target, hint });
                    }
                    if let Err(e) = fs::rename(&self.path, &target) {
                        undo.done = true;
                        return Err(RecordingError::io("rename into place", &target, e));
                    }
                }
            }
        }
        self.published = true;
        sync_dir(&parent_dir(&target));
        Ok((file, undo))
    }

    /// Before replacing `target`: keep what is there under a temporary name, so that a rollback can
    /// restore it. Prefers a hard link (the target stays in place meanwhile); falls back to moving
    /// it aside on filesystems without hard links. Returns the backup name and whether the target
    /// was moved (rather than linked).
    fn set_aside(&self, target: &Path) -> Result<Option<(PathBuf, bool)>> {
        match fs::symlink_metadata(target) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(RecordingError::io("inspect", target, e)),
            Ok(md) if md.is_dir() => {
                return Err(RecordingError::BadTarget {
                    path: target.to_path_buf(),
                    detail: "it is a directory".into(),
                })
            }
            Ok(_) => {}
        }
        let backup = temp_name(target);
        // link(2) does not follow a symbolic link: the backup of a link is the link.
        if fs::hard_link(target, &backup).is_ok() {
            Ok(Some((backup, false)))
        } else if fs::rename(target, &backup).is_ok() {
            Ok(Some((backup, true)))
        } else {
            // Cannot keep the old file: replace it anyway (overwrite was asked for), without undo.
            Ok(None)
        }
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

/// A file moved into place that can still be taken back. Dropping it without [`Self::commit`]
/// rolls the publish back (so an early return on error undoes it).
#[must_use = "a publish is undone when this is dropped; call commit()"]
pub(crate) struct Published {
    target: PathBuf,
    /// What was at the target before (overwrite), kept under a temporary name until commit.
    backup: Option<PathBuf>,
    /// Identity of the published file.
    id: Option<(u64, u64)>,
    /// The published file, held open (see `publish_undoable`).
    _keep: Option<File>,
    done: bool,
}

impl Published {
    /// Keep the published file; drop what it replaced.
    pub(crate) fn commit(mut self) {
        self.done = true;
        if let Some(b) = self.backup.take() {
            let _ = fs::remove_file(b);
            sync_dir(&parent_dir(&self.target));
        }
    }

    /// Take the published file back (what dropping does): restore what it replaced, or remove it
    /// if it replaced nothing. The target is touched only if it is still the file this publish
    /// put there.
    fn undo(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        let ours = match (fs::symlink_metadata(&self.target), self.id) {
            (Ok(md), Some(id)) => file_id(&md) == Some(id),
            (Ok(_), None) => true,
            (Err(_), _) => false,
        };
        match self.backup.take() {
            Some(b) if ours => {
                let _ = fs::rename(&b, &self.target);
            }
            Some(b) => {
                let _ = fs::remove_file(b);
            }
            None if ours => {
                let _ = fs::remove_file(&self.target);
            }
            None => {}
        }
        sync_dir(&parent_dir(&self.target));
    }
}

impl Drop for Published {
    fn drop(&mut self) {
        self.undo();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use tempfile::TempDir;

    fn temp_with(target: &Path, data: &[u8]) -> TempFile {
        let mut t = TempFile::new_for(target).unwrap();
        t.file().write_all(data).unwrap();
        t
    }

    fn names(d: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[cfg(unix)]
    #[test]
    fn overwrite_replaces_a_symlink_itself_never_its_target() {
        let d = TempDir::new().unwrap();
        let victim = d.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let link = d.path().join("rec");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        // Without overwrite: refused, both untouched.
        let e = check_target(&link, false, "").err().unwrap();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        let e = temp_with(&link, b"new").publish(false, "").err().unwrap();
        assert!(matches!(e, RecordingError::AlreadyExists { .. }), "{e}");
        // With overwrite: the link is replaced by a regular file; the victim keeps its bytes.
        check_target(&link, true, "").unwrap();
        temp_with(&link, b"new").publish(true, "").unwrap();
        assert!(fs::symlink_metadata(&link).unwrap().file_type().is_file());
        assert_eq!(fs::read(&link).unwrap(), b"new");
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        // A dangling link counts as taken without overwrite.
        let dangling = d.path().join("dangling");
        std::os::unix::fs::symlink(d.path().join("nowhere"), &dangling).unwrap();
        assert!(check_target(&dangling, false, "").is_err());
        assert!(temp_with(&dangling, b"x").publish(false, "").is_err());
        assert!(!d.path().join("nowhere").exists());
        assert_eq!(names(d.path()), ["dangling", "rec", "victim"]);
    }

    #[test]
    fn directories_and_missing_parents_are_refused_up_front() {
        let d = TempDir::new().unwrap();
        let dir = d.path().join("adir");
        fs::create_dir(&dir).unwrap();
        for ow in [false, true] {
            let e = check_target(&dir, ow, "").err().unwrap();
            assert!(e.to_string().contains("is a directory"), "{e}");
        }
        let e = check_target(&d.path().join("no/such/x"), true, "").err().unwrap();
        assert!(matches!(e, RecordingError::NotFound { what: "directory", .. }), "{e}");
        // Publishing over a directory fails and leaves nothing behind.
        assert!(temp_with(&dir, b"x").publish(true, "").is_err());
        assert!(dir.is_dir());
        assert_eq!(names(d.path()), ["adir"]);
    }

    #[test]
    fn rollback_restores_the_replaced_file_or_removes_the_new_one() {
        let d = TempDir::new().unwrap();
        let a = d.path().join("a");
        let b = d.path().join("b");
        fs::write(&a, b"old a").unwrap();
        // Overwrite a, create b, then roll both back.
        let (_, pa) = temp_with(&a, b"new a").publish_undoable(true, "").unwrap();
        let (_, pb) = temp_with(&b, b"new b").publish_undoable(false, "").unwrap();
        assert_eq!(fs::read(&a).unwrap(), b"new a");
        assert!(b.exists());
        drop(pb); // dropping without commit rolls back
        drop(pa);
        assert_eq!(fs::read(&a).unwrap(), b"old a");
        assert!(!b.exists());
        assert_eq!(names(d.path()), ["a"]);
        // A rollback never removes a file someone else put there meanwhile.
        let (_, pb) = temp_with(&b, b"ours").publish_undoable(false, "").unwrap();
        fs::remove_file(&b).unwrap();
        fs::write(&b, b"theirs").unwrap();
        drop(pb);
        assert_eq!(fs::read(&b).unwrap(), b"theirs");
        // Commit keeps the new file and drops the backup.
        let (_, pa) = temp_with(&a, b"newer a").publish_undoable(true, "").unwrap();
        pa.commit();
        assert_eq!(fs::read(&a).unwrap(), b"newer a");
        assert_eq!(names(d.path()), ["a", "b"]);
    }

    #[test]
    fn a_failing_second_publish_can_undo_the_first() {
        let d = TempDir::new().unwrap();
        let a = d.path().join("a");
        let (_, pa) = temp_with(&a, b"a").publish_undoable(false, "").unwrap();
        // Target in a directory that does not exist: the publish fails.
        let mut t = temp_with(&d.path().join("b"), b"b");
        t.target = d.path().join("missing/b");
        let r = t.publish_undoable(false, "");
        assert!(r.is_err());
        drop(pa);
        assert_eq!(names(d.path()), Vec::<String>::new(), "nothing published, no temporary files");
    }

    #[test]
    fn stale_temporary_files_of_dead_processes_are_removed() {
        let d = TempDir::new().unwrap();
        let target = d.path().join("rec-rr-snp");
        // u32::MAX - 1 is beyond any pid_max, so never a live process.
        let dead = [d.path().join(".rec-rr-snp.tmp.4294967294.0"), d.path().join(".rec-rr-snp.tmp.4294967294.17")];
        let live = d.path().join(format!(".rec-rr-snp.tmp.{}.99", std::process::id()));
        let parent = d.path().join(".rec-rr-snp.tmp.1.0"); // init is always alive
        let other = [
            d.path().join(".other-rr-snp.tmp.4294967294.0"), // another target
            d.path().join(".rec-rr-snp.tmp.x.0"),            // not ours at all
            d.path().join(".rec-rr-snp.tmp.4294967294.1.bak"),
        ];
        for p in dead.iter().chain([&live, &parent]).chain(other.iter()) {
            fs::write(p, b"junk").unwrap();
        }
        if process_alive(1).is_none() {
            eprintln!("skipping: no /proc");
            return;
        }
        let mut removed = remove_stale_temps(&target);
        removed.sort();
        assert_eq!(removed, dead);
        let t = temp_with(&target, b"x");
        t.publish(false, "").unwrap();
        assert!(live.exists() && parent.exists() && other.iter().all(|p| p.exists()));
        assert!(dead.iter().all(|p| !p.exists()));
    }
}
