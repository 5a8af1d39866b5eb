//! Drover's wire protocol.
//!
//! * [`messages`]: every message exchanged by clients, the scheduler and workers.
//! * [`codec`]: the one place messages are encoded (postcard) and framed: a `u32` length prefix,
//!   checked against a bound before anything is allocated; each frame carries a batch.
//! * [`tls`]: the scheduler's self-signed certificate, and QUIC configs that pin certificates.
//! * [`access`]: `access.json`, holding the scheduler's address, certificate and secret token.
//! * [`endpoint`]: QUIC endpoints and the authenticated handshake.
//! * [`lifeline`]: the TCP lifeline by which the scheduler notices a dead process at once.

#![warn(missing_docs, missing_debug_implementations)]

pub mod access;
pub mod codec;
pub mod data;
pub mod endpoint;
pub mod lifeline;
pub mod logging;
pub mod memory;
pub mod messages;
pub mod status;
pub mod tls;

pub use access::AccessFile;
pub use codec::{read_frame, write_frame, CodecError, MAX_CONTROL_FRAME};
pub use messages::*;
pub use status::*;

/// The protocol version; a peer speaking another one is refused.
pub const PROTOCOL_VERSION: u32 = 9;

/// The reason a scheduler closes every connection with when it shuts down on purpose: workers
/// exit 0 and clients end their runs, rather than retrying as after a loss.
pub const SHUTDOWN_REASON: &str = "scheduler shutting down";

/// The TLS server name every Drover certificate carries.
pub const SERVER_NAME: &str = "drover";

/// ALPN protocol id of Drover connections.
pub const ALPN: &[u8] = b"drover/1";

/// Compares secrets in time independent of where they differ.
pub fn tokens_equal(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A fresh random secret token: 32 bytes from the OS generator, as hex.
pub fn new_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
