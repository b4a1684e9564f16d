//! Checkers: pure functions from a history to a verdict (no I/O, no clock).
//!
//! - [`linearizable`]: the generic Wing–Gong/Lowe search over a sequential model.
//! - [`register`]: per-key linearizability of read/write/compare-and-set registers.
//! - [`set`]: every acknowledged add is in the final read.
//! - [`append`]: list reads are prefixes of one another, in real-time order.

pub mod append;
pub mod linearizable;
pub mod register;
pub mod set;
