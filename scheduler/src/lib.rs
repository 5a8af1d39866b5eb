//! Drover's scheduler: [`core`], a pure state machine holding every scheduling rule, and
//! [`server`], the QUIC shell that turns connections into events and commands into messages,
//! and serves the progress store (`progress`) to clients.

#![warn(missing_docs, missing_debug_implementations)]

pub mod core;
pub mod dashboard;
pub mod monitor;
mod progress;
pub mod server;
pub mod state_lock;
