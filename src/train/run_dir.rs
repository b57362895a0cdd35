//! A run directory: claimed by one process at a time through an advisory lock that the OS
//! releases when the process ends (so a kill never leaves a stale lock), checked before any
//! training starts (empty or resumable, writable), and cleared only of the temporary files
//! this program's own interrupted writes left behind.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

use super::state::{CHECKPOINT, LOCK, RUN_FILES};

/// An exclusive claim on a run directory, held until dropped (or the process ends).
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    _lock: File,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::Io {
        path: path.into(),
        source: e,
    }
}

impl RunDir {
    /// Claims `out` for a new run (`resume` false: it must be empty or absent) or for
    /// continuing the run in it. Refuses, touching nothing, a non-empty directory that holds
    /// no run of this program; refuses a directory another process holds, naming its PID;
    /// then removes the leftovers of this program's interrupted writes and checks that the
    /// directory is writable.
    pub fn claim(out: &Path, resume: bool) -> Result<RunDir> {
        let holds_run = out.join(CHECKPOINT).exists() || out.join(LOCK).exists();
        if !holds_run && !is_empty(out)? {
            return Err(Error::Config(format!(
                "output directory {} is not empty and holds no run: choose another --out",
                out.display()
            )));
        }
        if resume {
            check_resumable(out)?;
        }
        std::fs::create_dir_all(out).map_err(|e| unwritable(out, e))?;
        let lock_path = out.join(LOCK);
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| unwritable(out, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = lock.read_to_string(&mut pid);
                return Err(Error::RunInUse {
                    dir: out.into(),
                    pid: match pid.trim() {
                        "" => "unknown".into(),
                        p => p.into(),
                    },
                });
            }
            Err(TryLockError::Error(e)) => return Err(io_err(&lock_path)(e)),
        }
        // Ours now: say who holds it, for the message another process gets.
        lock.set_len(0).map_err(io_err(&lock_path))?;
        lock.rewind().map_err(io_err(&lock_path))?;
        write!(lock, "{}", std::process::id()).map_err(io_err(&lock_path))?;
        lock.sync_all().map_err(io_err(&lock_path))?;
        // A run killed before its first checkpoint leaves only the lock and temporary files.
        remove_leftovers(out)?;
        if !resume && !only_lock(out)? {
            return Err(Error::Config(format!(
                "output directory {} is not empty: choose another --out, or --resume it",
                out.display()
            )));
        }
        check_writable(out)?;
        Ok(RunDir {
            path: out.into(),
            _lock: lock,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Fails unless `dir` holds a checkpoint to resume from, saying why not.
pub fn check_resumable(dir: &Path) -> Result<()> {
    if dir.join(CHECKPOINT).exists() {
        return Ok(());
    }
    Err(Error::Config(format!(
        "--resume: {} has no {CHECKPOINT} to continue from ({}: start the run again)",
        dir.display(),
        if dir.is_dir() {
            "it was stopped before its first epoch ended"
        } else {
            "no such directory"
        }
    )))
}

fn is_empty(dir: &Path) -> Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(io_err(dir)(e)),
    }
}

/// Whether `dir` holds nothing but the lock file (and an empty `plots/`).
fn only_lock(dir: &Path) -> Result<bool> {
    for e in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let name = e.map_err(io_err(dir))?.file_name();
        if name != LOCK && !(name == "plots" && is_empty(&dir.join("plots"))?) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether `name`, in the run directory's sub-folder `folder` ("" for the top), is the
/// temporary file of an interrupted write of one of [`RUN_FILES`]: `.NAME.PID.tmp`.
pub fn is_leftover(folder: &str, name: &str) -> bool {
    let Some(stem) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp")) else {
        return false;
    };
    let Some((file, pid)) = stem.rsplit_once('.') else {
        return false;
    };
    let rel = if folder.is_empty() {
        file.to_string()
    } else {
        format!("{folder}/{file}")
    };
    !pid.is_empty() && pid.chars().all(|c| c.is_ascii_digit()) && RUN_FILES.contains(&&*rel)
}

/// Removes the temporary files that a killed write of this program left in `dir` and its
/// `plots/`; nothing else.
fn remove_leftovers(dir: &Path) -> Result<()> {
    for folder in ["", "plots"] {
        let d = dir.join(folder);
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let e = e.map_err(io_err(&d))?;
            if is_leftover(folder, &e.file_name().to_string_lossy()) {
                std::fs::remove_file(e.path()).map_err(io_err(&e.path()))?;
            }
        }
    }
    Ok(())
}

/// Fails now, naming the directory, if a file cannot be created in it, rather than at the
/// first checkpoint an epoch later.
fn check_writable(dir: &Path) -> Result<()> {
    let probe = dir.join(format!(".write-test.{}.tmp", std::process::id()));
    match File::create(&probe) {
        Ok(_) => std::fs::remove_file(&probe).map_err(io_err(&probe)),
        Err(e) => Err(unwritable(dir, e)),
    }
}

fn unwritable(dir: &Path, e: std::io::Error) -> Error {
    Error::Io {
        path: dir.into(),
        source: std::io::Error::new(
            e.kind(),
            format!("cannot write in the output directory ({e})"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::is_leftover;

    #[test]
    fn leftovers_are_only_our_temp_files() {
        assert!(is_leftover("", ".checkpoint.safetensors.4242.tmp"));
        assert!(is_leftover("", ".metrics.jsonl.7.tmp"));
        assert!(is_leftover("plots", ".accuracy.png.12.tmp"));
        assert!(!is_leftover("", ".accuracy.png.12.tmp"));
        assert!(!is_leftover("", "checkpoint.safetensors"));
        assert!(!is_leftover("", ".checkpoint.safetensors.tmp"));
        assert!(!is_leftover("", ".x.12a.tmp"));
        assert!(!is_leftover("", "notes.1.tmp"));
        // Someone else's temporary files, named in the same pattern.
        assert!(!is_leftover("", ".draft.4242.tmp"));
        assert!(!is_leftover("", ".notes.txt.1.tmp"));
        assert!(!is_leftover("plots", ".fig.99.tmp"));
    }
}
