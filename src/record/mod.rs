//! Recording: the security event, its two encodings, the sink it is written to, sealing
//! and the verification of a sealed log.
//!
//! - [`event`]: every event; `encode` and `line`: its two one-line encodings;
//!   [`sealed`]: the seal at the end of a line (the only places a field is named).
//! - [`logger`]: the [`SecurityLog`](logger::SecurityLog), the `log` facade's logger that
//!   owns the `security` target and tells the guard whether a line was written.
//! - [`sink`]: where the lines go, one `write(2)` a batch.
//! - [`seal`]: the forward-secure MAC chain over the lines; [`verify`]: checking it.
//!
//! It imports nothing from [`crate::decide`], `crate::config` or `crate::serve`: an event carries plain values (a reason's code is a
//! `&'static str`), so the log can be written, sealed and verified without a guard. Only
//! the leaves `crate::error`, `crate::time` and `crate::metrics` (the counters). lib.rs
//! keeps each module's crate-level name (`crate::event`, `crate::logger`, ...).

mod encode;
pub(crate) mod event;
mod line;
pub(crate) mod logger;
pub mod seal;
pub(crate) mod sealed;
pub(crate) mod sink;
pub(crate) mod verify;
