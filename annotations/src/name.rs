//! Names of pools and resources, and the [`Pool`] type.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::AnnotationError;

/// The prefix that turns a pool name into the worker resource that puts a worker in that pool:
/// pool `A` is resource `pool-A`.
pub const POOL_RESOURCE_PREFIX: &str = "pool-";

/// Which kind of name a [`validate_name`] call checks, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// A pool name such as `A`.
    Pool,
    /// A resource name such as `gpu` or `pool-A`.
    Resource,
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameKind::Pool => "pool",
            NameKind::Resource => "resource",
        })
    }
}

/// Checks that `name` is non-empty and uses only `[A-Za-z0-9_.-]`.
///
/// The restriction keeps names safe to use in resource strings (`pool-A=1,gpu=2`), in file names
/// and in DOT output without quoting surprises.
pub fn validate_name(kind: NameKind, name: &str) -> Result<(), AnnotationError> {
    if name.is_empty() {
        return Err(AnnotationError::EmptyName { kind });
    }
    if let Some(ch) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(AnnotationError::BadNameChar {
            kind,
            name: name.to_owned(),
            ch,
        });
    }
    Ok(())
}

/// A validated pool name. Cheap to clone (shared string).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Pool(Arc<str>);

impl Pool {
    /// Makes a pool from its name, e.g. `Pool::new("A")`.
    pub fn new(name: &str) -> Result<Pool, AnnotationError> {
        validate_name(NameKind::Pool, name)?;
        Ok(Pool(Arc::from(name)))
    }

    /// The pool's name, e.g. `A`.
    pub fn name(&self) -> &str {
        &self.0
    }

    /// The worker resource that puts a worker in this pool, e.g. `pool-A`.
    pub fn resource_name(&self) -> String {
        format!("{POOL_RESOURCE_PREFIX}{}", self.0)
    }
}

impl fmt::Display for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pool({:?})", &*self.0)
    }
}

impl std::str::FromStr for Pool {
    type Err = AnnotationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Pool::new(s)
    }
}

impl<'de> Deserialize<'de> for Pool {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Pool::new(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_names() {
        for n in ["A", "pool_1", "eu-west.2", "0"] {
            assert_eq!(Pool::new(n).unwrap().name(), n);
        }
        assert_eq!(Pool::new("A").unwrap().resource_name(), "pool-A");
    }

    #[test]
    fn bad_names_are_quoted() {
        assert_eq!(
            Pool::new(""),
            Err(AnnotationError::EmptyName {
                kind: NameKind::Pool
            })
        );
        let err = Pool::new("a b").unwrap_err();
        assert_eq!(
            err.to_string(),
            "pool name \"a b\" contains ' '; names may use only letters, digits, '_', '-' and '.'"
        );
        assert!(Pool::new("x=1").is_err());
        assert!(Pool::new("x,y").is_err());
    }
}
