//! UniScale core: contextual-bandit learners and the numeric parts of the routing policy.
//!
//! Everything here is pure Rust with no Python dependency; the PyO3 bindings live in
//! `python/` behind the `python` cargo feature, so `cargo test` exercises the math directly.

pub mod conservative;
pub mod cost;
pub mod error;
pub mod evidence;
pub mod featurize;
pub mod learner;
pub mod linalg;
pub mod linucb;
pub mod pacing;
pub mod pareto;
pub mod plan;
pub mod policy;
pub mod prune;
pub mod ridge;
pub mod rng;
pub mod shared;
pub mod space;
pub mod state;

pub use error::{CoreError, CoreResult};
pub use learner::{Config, Learner, Mask};
pub use linucb::LinUcb;
pub use shared::SharedLinUcb;

#[cfg(feature = "python")]
mod python;
