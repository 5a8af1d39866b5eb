//! `access.json`: what a client or worker needs to reach a scheduler. Written by the scheduler
//! with mode 0600, because the token inside is the cluster's secret.

use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The contents of `access.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessFile {
    /// The scheduler's address, `HOST:PORT`.
    pub address: String,
    /// The scheduler's certificate, DER as lower-case hex; clients pin it.
    pub certificate: String,
    /// The secret token clients and workers present.
    pub token: String,
    /// The scheduler's web dashboard, `http://HOST:PORT`, when it serves one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dashboard: Option<String>,
}

/// Problems reading or writing an access file.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The file could not be read or written.
    #[error("access file {path}: {error}")]
    Io {
        /// The path.
        path: String,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The file is not valid.
    #[error("access file {path} is invalid: {why}")]
    Invalid {
        /// The path.
        path: String,
        /// What is wrong.
        why: String,
    },
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl AccessFile {
    /// Makes the file's contents.
    pub fn new(address: SocketAddr, cert_der: &[u8], token: &str) -> AccessFile {
        AccessFile {
            address: address.to_string(),
            certificate: hex(cert_der),
            token: token.to_owned(),
            dashboard: None,
        }
    }

    /// The pinned certificate, DER.
    pub fn cert_der(&self) -> Result<Vec<u8>, String> {
        unhex(&self.certificate).ok_or_else(|| "certificate is not hex".to_owned())
    }

    /// The scheduler's address, resolved.
    pub fn socket_addr(&self) -> Result<SocketAddr, String> {
        use std::net::ToSocketAddrs;
        self.address
            .to_socket_addrs()
            .map_err(|e| format!("address {:?}: {e}", self.address))?
            .next()
            .ok_or_else(|| format!("address {:?} resolves to nothing", self.address))
    }

    /// Reads and checks a file.
    pub fn load(path: &Path) -> Result<AccessFile, AccessError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| AccessError::Io {
            path: shown.clone(),
            error,
        })?;
        let file: AccessFile = serde_json::from_str(&text).map_err(|e| AccessError::Invalid {
            path: shown.clone(),
            why: e.to_string(),
        })?;
        let invalid = |why: String| AccessError::Invalid {
            path: shown.clone(),
            why,
        };
        file.cert_der().map_err(invalid)?;
        file.socket_addr().map_err(invalid)?;
        Ok(file)
    }

    /// Writes the file with mode 0600, atomically: readers see the old file or the new one,
    /// never a partial one.
    pub fn save(&self, path: &Path) -> Result<(), AccessError> {
        let io = |error| AccessError::Io {
            path: path.display().to_string(),
            error,
        };
        let text = serde_json::to_string_pretty(self).expect("access file serialises") + "\n";
        let tmp = path.with_extension("json.tmp");
        write_private(&tmp, text.as_bytes()).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

/// Writes `bytes` to a new file readable only by its owner (mode 0600 on Unix).
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    f.write_all(bytes)
}

/// True when `path` can be read by users other than its owner.
pub fn readable_by_others(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_0600_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("access.json");
        let a = AccessFile::new("127.0.0.1:7878".parse().unwrap(), &[1, 2, 255], "secret");
        a.save(&p).unwrap();
        assert_eq!(AccessFile::load(&p).unwrap(), a);
        assert_eq!(a.cert_der().unwrap(), [1, 2, 255]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        std::fs::write(&p, "{\"address\": \"x\"}").unwrap();
        assert!(AccessFile::load(&p)
            .unwrap_err()
            .to_string()
            .contains("invalid"));
    }
}
