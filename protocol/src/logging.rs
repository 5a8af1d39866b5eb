//! Log set-up shared by Drover's programs: `tracing` to stderr, filtered by `RUST_LOG` (or the
//! given default), coloured only on a terminal so that log files stay plain text.

use std::io::IsTerminal;

/// Installs the global subscriber. `default_filter` applies when `RUST_LOG` is not set, e.g.
/// `"info"`. Calling it twice keeps the first.
pub fn init(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
