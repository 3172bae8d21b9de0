//! Saving state files: verified, atomic, through symlinks, cleaning up after dead writers.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{CoreError, CoreResult};

/// Fails with `CoreError::State` unless `load` accepts `bytes`: the check every blob passes
/// before `to_bytes`, pickle or `save` hand it out, so that whatever is written can be read.
pub fn verify_loads<T>(bytes: &[u8], load: impl FnOnce(&[u8]) -> CoreResult<T>) -> CoreResult<()> {
    load(bytes).map(|_| ()).map_err(|e| {
        CoreError::State(format!(
            "the serialized state does not load back ({e}); it was not written or returned \
             (this is a bug: please report it)"
        ))
    })
}

/// Writes `bytes` to `path` atomically after `verify` accepted them (see `verify_loads`): if it
/// refuses, nothing on disk changes, and the last good file stays in place.
pub fn save_verified(
    path: &Path,
    bytes: &[u8],
    verify: impl FnOnce(&[u8]) -> CoreResult<()>,
) -> CoreResult<()> {
    verify(bytes).map_err(|e| match e {
        CoreError::State(m) => CoreError::State(format!(
            "refusing to save {}: {m}; the existing file was left untouched",
            path.display()
        )),
        other => other,
    })?;
    atomic_write(path, bytes)
}

/// Symbolic links followed before a save (the kernel's own limit for path resolution).
const MAX_SYMLINK_HOPS: usize = 40;
/// A temporary file of a writer this process cannot identify (another host on a shared file
/// system, another PID namespace, an older version's naming) is removed only once it is this
/// old: no save takes a day between creating its temporary file and renaming it.
const FOREIGN_TEMP_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Follows `path` through symbolic links to the file a save must replace (which may not exist
/// yet). Relative link targets are resolved against the link's directory.
fn resolve_symlinks(path: &Path) -> CoreResult<PathBuf> {
    let mut p = path.to_path_buf();
    for _ in 0..MAX_SYMLINK_HOPS {
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = fs::read_link(&p)?;
                p = match p.parent() {
                    Some(dir) if target.is_relative() => dir.join(target),
                    _ => target,
                };
            }
            _ => return Ok(p),
        }
    }
    Err(CoreError::Io(format!(
        "more than {MAX_SYMLINK_HOPS} levels of symbolic links"
    )))
}

/// Identifies the boot and PID namespace this process runs in (Linux), so that a PID in a
/// temporary file's name can be checked for liveness only where it means the same process.
fn writer_tag() -> Option<&'static str> {
    static TAG: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    TAG.get_or_init(|| {
        let boot = fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let ns = fs::read_link("/proc/self/ns/pid").ok()?;
        let mut h = crc32fast::Hasher::new();
        h.update(boot.trim().as_bytes());
        h.update(ns.to_string_lossy().as_bytes());
        Some(format!("{:08x}", h.finalize()))
    })
    .as_deref()
}

/// The name of this process's temporary file for `file_name`:
/// `.<file_name>.tmp-<pid>-<tag>-<nanos>` (`tag` is `writer_tag`, or `x` when unknown).
fn temp_name(file_name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        ".{file_name}.tmp-{}-{}-{nanos}",
        std::process::id(),
        writer_tag().unwrap_or("x")
    )
}

/// Removes the temporary files that writers of `dir/file_name` left behind when they were
/// killed mid-save (each is a full-size copy of the state): those of PIDs that no longer exist
/// in this boot and PID namespace, and any older than `FOREIGN_TEMP_AGE`. Best effort: errors
/// are ignored, and a file of a live writer (this process included) is never touched.
fn remove_stale_temps(dir: &Path, file_name: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let prefix = format!(".{file_name}.tmp-");
    let me = std::process::id();
    let tag = writer_tag();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        // `<pid>-<tag>-<nanos>`, or `<pid>-<nanos>` from versions before the tag
        let parts: Vec<&str> = rest.split('-').collect();
        let (pid, their_tag) = match parts.as_slice() {
            [pid, tag, nanos] if nanos.bytes().all(|b| b.is_ascii_digit()) => (pid, Some(*tag)),
            [pid, nanos] if nanos.bytes().all(|b| b.is_ascii_digit()) => (pid, None),
            _ => continue,
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if pid == me {
            continue; // another thread of this process may be saving right now
        }
        let dead_here = match (tag, their_tag) {
            (Some(mine), Some(theirs)) if mine == theirs => {
                !Path::new("/proc").join(pid.to_string()).exists()
            }
            _ => false,
        };
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > FOREIGN_TEMP_AGE);
        if dead_here || old {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, fsync, rename,
/// then fsync of the directory. A crash at any point leaves either the old file or the new one
/// (plus, after a crash, a temporary file that the next save removes).
///
/// If `path` is a symbolic link, the file it points to is replaced and the link is kept. An
/// existing file keeps its permission bits (a 0600 state file stays 0600; the temporary file is
/// created 0600 so the contents are never more readable than that); its owner becomes the
/// saving user. A new file gets the default mode (0666 minus the umask).
pub fn atomic_write(path: &Path, bytes: &[u8]) -> CoreResult<()> {
    let result = (|| -> CoreResult<()> {
        let target = resolve_symlinks(path)?;
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let file_name = target
            .file_name()
            .ok_or_else(|| CoreError::Io("not a file path".into()))?
            .to_string_lossy()
            .into_owned();
        remove_stale_temps(&dir, &file_name);
        let keep = fs::metadata(&target)
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.permissions());
        let tmp = dir.join(temp_name(&file_name));
        let written = (|| -> CoreResult<()> {
            let mut opts = fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            if keep.is_some() {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut f = opts.open(&tmp)?;
            f.write_all(bytes)?;
            if let Some(perms) = &keep {
                f.set_permissions(perms.clone())?;
            }
            f.sync_all()?;
            drop(f);
            fs::rename(&tmp, &target)?;
            Ok(())
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written?;
        // Persist the rename itself; not all platforms can open a directory, so best effort.
        if let Ok(d) = fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    result.map_err(|e| match e {
        CoreError::Io(m) => CoreError::Io(format!("saving {}: {m}", path.display())),
        other => other,
    })
}

pub fn read_file(path: &Path) -> CoreResult<Vec<u8>> {
    fs::read(path).map_err(|e| CoreError::Io(format!("loading {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "uniscale-state-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// D1: bytes the loader refuses are never written; the last good file stays.
    #[test]
    fn save_refuses_bytes_that_do_not_load_back() {
        let dir = scratch("verify");
        let path = dir.join("state.bin");
        fs::write(&path, b"last good state").unwrap();
        let err = save_verified(&path, b"new but broken", |b| {
            verify_loads(b, |_| -> CoreResult<()> {
                Err(CoreError::State("nope".into()))
            })
        })
        .unwrap_err();
        match &err {
            CoreError::State(m) => {
                assert!(
                    m.contains("does not load back") && m.contains("left untouched"),
                    "{m}"
                )
            }
            other => panic!("expected a state error, got {other:?}"),
        }
        assert_eq!(fs::read(&path).unwrap(), b"last good state");
        assert_eq!(listing(&dir), vec!["state.bin"]);
        // and bytes the loader accepts are written
        save_verified(&path, b"good", |b| verify_loads(b, |_| Ok(()))).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"good");
        fs::remove_dir_all(&dir).unwrap();
    }

    /// D8: a temporary file of a writer killed mid-save is removed by the next save; those of
    /// live writers and of unidentifiable recent writers are not.
    #[test]
    fn next_save_removes_temp_files_of_dead_writers() {
        let dir = scratch("stale");
        let path = dir.join("state.bin");
        let Some(tag) = writer_tag() else {
            return; // no /proc: only the age rule applies, nothing to test quickly
        };
        // a PID that is certainly dead: a child that exited and was reaped
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let stale = format!(".state.bin.tmp-{dead}-{tag}-123");
        let mine = format!(".state.bin.tmp-{}-{tag}-456", std::process::id());
        let live = format!(".state.bin.tmp-1-{tag}-789"); // init is alive
        let foreign = format!(".state.bin.tmp-{dead}-0badc0de-1");
        let legacy = format!(".state.bin.tmp-{dead}-42");
        let other_file = format!(".other.bin.tmp-{dead}-{tag}-1");
        for n in [&stale, &mine, &live, &foreign, &legacy, &other_file] {
            fs::write(dir.join(n), vec![0u8; 1024]).unwrap();
        }
        atomic_write(&path, b"state").unwrap();
        let mut want = vec![
            "state.bin".to_string(),
            mine,
            live,
            foreign.clone(),
            legacy.clone(),
            other_file,
        ];
        want.sort();
        assert_eq!(listing(&dir), want);
        // an unidentifiable writer's file goes once it is a day old
        let two_days = std::time::Duration::from_secs(2 * 24 * 3600);
        let then = std::time::SystemTime::now() - two_days;
        for n in [&foreign, &legacy] {
            let f = fs::File::options().write(true).open(dir.join(n)).unwrap();
            f.set_modified(then).unwrap();
        }
        atomic_write(&path, b"state").unwrap();
        assert_eq!(listing(&dir).len(), want.len() - 2);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// D17: the file's mode is kept, and a symlink is written through (it stays a link).
    #[cfg(unix)]
    #[test]
    fn save_keeps_the_mode_and_writes_through_symlinks() {
        use std::os::unix::fs::{symlink, PermissionsExt};
        let dir = scratch("mode");
        let real = dir.join("real.bin");
        fs::write(&real, b"old").unwrap();
        fs::set_permissions(&real, fs::Permissions::from_mode(0o600)).unwrap();
        atomic_write(&real, b"new").unwrap();
        assert_eq!(
            fs::metadata(&real).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // a chain: abs -> rel -> real
        fs::create_dir(dir.join("links")).unwrap();
        let rel = dir.join("links").join("rel.bin");
        symlink("../real.bin", &rel).unwrap();
        let abs = dir.join("abs.bin");
        symlink(&rel, &abs).unwrap();
        atomic_write(&abs, b"through the links").unwrap();
        assert!(fs::symlink_metadata(&abs).unwrap().file_type().is_symlink());
        assert!(fs::symlink_metadata(&rel).unwrap().file_type().is_symlink());
        assert_eq!(fs::read(&real).unwrap(), b"through the links");
        assert_eq!(
            fs::metadata(&real).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // a dangling link: the save creates its target
        let dangling = dir.join("dangling.bin");
        symlink("created.bin", &dangling).unwrap();
        atomic_write(&dangling, b"fresh").unwrap();
        assert_eq!(fs::read(dir.join("created.bin")).unwrap(), b"fresh");
        assert!(fs::symlink_metadata(&dangling)
            .unwrap()
            .file_type()
            .is_symlink());
        // a loop is an error, not a hang
        let a = dir.join("loop-a");
        let b = dir.join("loop-b");
        symlink(&b, &a).unwrap();
        symlink(&a, &b).unwrap();
        assert!(matches!(atomic_write(&a, b"x"), Err(CoreError::Io(_))));
        let mut names = listing(&dir);
        names.retain(|n| n.contains(".tmp-"));
        assert!(names.is_empty(), "temporary files left: {names:?}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
