//! The library's error type: every variant names the thing at fault.

use std::path::PathBuf;

/// Everything that can go wrong in the library, with the file, shape or adapter involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No GPU adapter could be used.
    #[error("no usable GPU adapter: {tried}. {hint}")]
    NoAdapter {
        /// What was tried (backends, name filter).
        tried: String,
        /// How to get a driver.
        hint: String,
    },
    /// The adapter lacks a limit or feature the kernels need.
    #[error("adapter '{adapter}' is not usable: {reason}")]
    AdapterTooSmall {
        /// Adapter name.
        adapter: String,
        /// Which limit is too small.
        reason: String,
    },
    /// Device creation or a device-level operation failed.
    #[error("GPU device error: {0}")]
    Device(String),
    /// A tensor shape does not fit the operation.
    #[error("shape error in {op}: {msg}")]
    Shape {
        /// The operation that rejected the shape.
        op: &'static str,
        /// What is wrong.
        msg: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file's content is malformed.
    #[error("{path}: {msg}")]
    Format {
        /// The file involved.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// A user-supplied setting is invalid.
    #[error("invalid setting: {0}")]
    Config(String),
    /// Training produced a non-finite loss or state; nothing of the epoch was committed.
    #[error("training diverged at epoch {epoch} step {step}: {reason}; {}", kept_note(*.committed))]
    Diverged {
        /// The epoch in progress (1-based).
        epoch: usize,
        /// The optimizer step count when it was noticed.
        step: usize,
        /// What became non-finite, with the last finite loss where known.
        reason: String,
        /// Epochs committed to the checkpoint before this one.
        committed: usize,
    },
    /// The user stopped the run (Ctrl-C or SIGTERM); the epoch in progress was abandoned.
    #[error("interrupted at epoch {epoch} step {step}; {}", resume_hint(.dir, *.committed))]
    Interrupted {
        /// The epoch in progress (1-based).
        epoch: usize,
        /// Steps taken in that epoch.
        step: usize,
        /// The run directory.
        dir: PathBuf,
        /// Epochs committed to the checkpoint.
        committed: usize,
    },
    /// Another process holds the run directory.
    #[error("{}: in use by another run (process {pid}); wait for it to end or choose another --out", .dir.display())]
    RunInUse {
        /// The run directory.
        dir: PathBuf,
        /// The process holding its lock, as written in the lock file.
        pid: String,
    },
    /// A run of many processes was stopped by the user (Ctrl-C); it says how to resume.
    #[error("stopped: {0}")]
    Stopped(String),
    /// Some runs of a sweep failed: names each and its log.
    #[error("{0}")]
    RunsFailed(String),
}

fn kept_note(committed: usize) -> String {
    match committed {
        0 => "no epoch had been committed, so no checkpoint was written (lower --lr)".into(),
        n => format!("the checkpoint of epoch {n} is kept (lower --lr before resuming it)"),
    }
}

fn resume_hint(dir: &std::path::Path, committed: usize) -> String {
    match committed {
        0 => format!(
            "no epoch had been committed in {}: start it again",
            dir.display()
        ),
        _ => format!("resume with: dynloss-wgpu train --resume {}", dir.display()),
    }
}

/// Short form of `Result<T, Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Builds an [`Error::Shape`] for `op`.
pub fn shape_err(op: &'static str, msg: impl Into<String>) -> Error {
    Error::Shape {
        op,
        msg: msg.into(),
    }
}

/// An [`Error::Format`] for a TOML file that did not parse into what was expected: one line
/// with the line number, the message and the offending line (which shows the key).
pub fn toml_err(path: &std::path::Path, text: &str, what: &str, e: &toml::de::Error) -> Error {
    let msg = match e.span() {
        Some(span) => {
            let line_no = text[..span.start.min(text.len())].matches('\n').count() + 1;
            let line = text.lines().nth(line_no - 1).unwrap_or("").trim();
            format!("{what}, line {line_no} (`{line}`): {}", e.message())
        }
        None => format!("{what}: {}", e.message()),
    };
    Error::Format {
        path: path.into(),
        msg,
    }
}
