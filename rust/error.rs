//! The one error type of the core. It knows nothing about Python: the binding layer maps each
//! variant onto an exception class (see `python/mod.rs`).

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum CoreError {
    /// An array has the wrong length or shape.
    Shape(String),
    /// NaN or infinity where a finite number is required.
    NonFinite(String),
    /// An action index outside `0..n_actions`.
    UnknownAction { action: i64, n_actions: usize },
    /// Every action is masked out, so there is nothing to choose.
    AllMasked,
    /// Every action is masked out in one row of a batch.
    AllMaskedRow(usize),
    /// A constructor or setter got a value outside its domain.
    Config(String),
    /// A state blob or file that cannot be read back (truncated, corrupt, wrong version).
    State(String),
    /// A decision id that was never issued by this policy.
    UnknownDecision(u64),
    /// A decision id that was issued but dropped from the pending store (TTL or capacity).
    ExpiredDecision(u64),
    /// A second update for a decision that already received one.
    DuplicateUpdate(u64),
    /// A numerical failure (for example a matrix that lost positive definiteness).
    Numerical(String),
    /// An I/O error while saving or loading.
    Io(String),
    /// An allocation failed (the process is out of memory or under an address-space limit).
    Memory(String),
}

pub type CoreResult<T> = Result<T, CoreError>;

impl fmt::Display for CoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CoreError::Shape(m) => write!(f, "shape error: {m}"),
            CoreError::NonFinite(m) => write!(f, "non-finite value: {m}"),
            CoreError::UnknownAction { action, n_actions } => write!(
                f,
                "unknown action {action}: valid actions are 0..{n_actions} (exclusive)"
            ),
            CoreError::AllMasked => write!(f, "every action is masked out; nothing to select"),
            CoreError::AllMaskedRow(r) => {
                write!(f, "row {r}: every action is masked out; nothing to select")
            }
            CoreError::Config(m) => write!(f, "invalid configuration: {m}"),
            CoreError::State(m) => write!(f, "invalid state: {m}"),
            CoreError::UnknownDecision(id) => write!(f, "unknown decision id {id}"),
            CoreError::ExpiredDecision(id) => write!(
                f,
                "decision id {id} expired (older than the time-to-live or evicted by the pending-store capacity)"
            ),
            CoreError::DuplicateUpdate(id) => {
                write!(f, "decision id {id} was already updated; duplicate feedback rejected")
            }
            CoreError::Numerical(m) => write!(f, "numerical error: {m}"),
            CoreError::Io(m) => write!(f, "I/O error: {m}"),
            CoreError::Memory(m) => write!(f, "out of memory: {m}"),
        }
    }
}

impl std::error::Error for CoreError {}

impl CoreError {
    /// What a failure while rebuilding an object from a saved state becomes: `State` (the
    /// state is invalid), with `context: ` before the message unless `context` is empty; an
    /// allocation failure stays `Memory`.
    pub fn loading(self, context: &str) -> CoreError {
        match self {
            CoreError::Memory(_) => self,
            e if context.is_empty() => CoreError::State(e.to_string()),
            e => CoreError::State(format!("{context}: {e}")),
        }
    }
}

impl From<std::io::Error> for CoreError {
    fn from(e: std::io::Error) -> Self {
        CoreError::Io(e.to_string())
    }
}

/// Fails with `NonFinite` naming `what` when any value is NaN or infinite.
pub fn check_finite(what: &str, values: &[f64]) -> CoreResult<()> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(CoreError::NonFinite(format!(
            "{what}[{i}] = {} (NaN and infinity are rejected before any state changes)",
            values[i]
        ))),
    }
}

/// Fails with `NonFinite` when a scalar is NaN or infinite.
pub fn check_finite_scalar(what: &str, v: f64) -> CoreResult<()> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(CoreError::NonFinite(format!(
            "{what} = {v} (NaN and infinity are rejected before any state changes)"
        )))
    }
}

/// Fails with `Shape` when `len != expected`.
pub fn check_len(what: &str, len: usize, expected: usize) -> CoreResult<()> {
    if len == expected {
        Ok(())
    } else {
        Err(CoreError::Shape(format!(
            "{what} has length {len}, expected {expected}"
        )))
    }
}
