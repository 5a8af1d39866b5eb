//! [`Resources`]: named amounts such as `pool-A=1,gpu=2`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::name::{validate_name, NameKind, Pool, POOL_RESOURCE_PREFIX};
use crate::AnnotationError;

/// A set of named, non-negative, finite amounts, kept sorted by name (so that printing, hashing
/// and comparing are deterministic).
///
/// On a worker they say what it has (`pool-A=1,gpu=2`); on a task, what it consumes while running
/// (`gpu=1`). Parsed strictly: every malformed part is reported with the text that was wrong.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Resources(BTreeMap<String, f64>);

impl Resources {
    /// No resources.
    pub fn new() -> Resources {
        Resources::default()
    }

    /// Sets `name` to `amount`, replacing any earlier amount. Checks the name and the amount.
    pub fn insert(&mut self, name: &str, amount: f64) -> Result<(), AnnotationError> {
        validate_name(NameKind::Resource, name)?;
        check_amount(name, amount)?;
        self.0.insert(name.to_owned(), amount);
        Ok(())
    }

    /// Builder form of [`Resources::insert`].
    pub fn with(mut self, name: &str, amount: f64) -> Result<Resources, AnnotationError> {
        self.insert(name, amount)?;
        Ok(self)
    }

    /// The amount of `name`, if present.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.0.get(name).copied()
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Entries in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, f64)> + '_ {
        self.0.iter().map(|(k, v)| (k.as_str(), *v))
    }

    /// The pools these resources put a worker in: every `pool-X` entry with an amount above zero,
    /// in name order.
    pub fn pools(&self) -> impl Iterator<Item = Pool> + '_ {
        self.0.iter().filter_map(|(k, v)| {
            let name = k.strip_prefix(POOL_RESOURCE_PREFIX)?;
            (*v > 0.0).then(|| Pool::new(name).ok()).flatten()
        })
    }

    /// Entries that are not pool markers (`gpu`, `mem`, ...), in name order.
    pub fn consumable(&self) -> impl Iterator<Item = (&str, f64)> + '_ {
        self.iter()
            .filter(|(k, _)| !k.starts_with(POOL_RESOURCE_PREFIX))
    }

    /// Overlays `other` on `self`: names in `other` take its amount, others keep theirs.
    pub fn overlay(&mut self, other: &Resources) {
        for (k, v) in &other.0 {
            self.0.insert(k.clone(), *v);
        }
    }
}

fn check_amount(name: &str, amount: f64) -> Result<(), AnnotationError> {
    if !amount.is_finite() || amount < 0.0 {
        return Err(AnnotationError::BadAmount {
            name: name.to_owned(),
            amount,
        });
    }
    Ok(())
}

impl FromStr for Resources {
    type Err = AnnotationError;

    /// Parses `NAME=AMOUNT[,NAME=AMOUNT...]`. Spaces around parts are ignored; the empty string
    /// is no resources. Empty parts (`a=1,,b=2`), missing `=`, bad names, non-numeric, negative
    /// or repeated entries are errors that quote the input.
    fn from_str(input: &str) -> Result<Resources, AnnotationError> {
        let mut out = Resources::new();
        if input.trim().is_empty() {
            return Ok(out);
        }
        for raw in input.split(',') {
            let part = raw.trim();
            let malformed = || AnnotationError::MalformedResources {
                input: input.to_owned(),
                part: part.to_owned(),
            };
            let (name, amount) = part.split_once('=').ok_or_else(malformed)?;
            let (name, amount) = (name.trim(), amount.trim());
            if name.is_empty() || amount.is_empty() {
                return Err(malformed());
            }
            validate_name(NameKind::Resource, name)?;
            let value: f64 = amount
                .parse()
                .map_err(|_| AnnotationError::NonNumericAmount {
                    name: name.to_owned(),
                    amount: amount.to_owned(),
                })?;
            check_amount(name, value)?;
            if out.0.insert(name.to_owned(), value).is_some() {
                return Err(AnnotationError::DuplicateResource {
                    name: name.to_owned(),
                    input: input.to_owned(),
                });
            }
        }
        Ok(out)
    }
}

impl fmt::Display for Resources {
    /// Prints the canonical form, `gpu=2,pool-A=1`, which parses back to the same value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for Resources {
    /// Accepts a map `{"gpu": 1}` (checked like [`Resources::insert`]) or a string `"gpu=1"`.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Map(BTreeMap<String, f64>),
            Text(String),
        }
        match Repr::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "resources must be a map of name to non-negative number, or a string like \"gpu=1\"",
            )
        })? {
            Repr::Map(m) => {
                let mut out = Resources::new();
                for (k, v) in m {
                    out.insert(&k, v).map_err(serde::de::Error::custom)?;
                }
                Ok(out)
            }
            Repr::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pools_and_consumables() {
        let r: Resources = "pool-A=1, gpu=2".parse().unwrap();
        assert_eq!(r.get("gpu"), Some(2.0));
        assert_eq!(r.pools().map(|p| p.to_string()).collect::<Vec<_>>(), ["A"]);
        assert_eq!(r.consumable().collect::<Vec<_>>(), [("gpu", 2.0)]);
        assert_eq!(r.to_string(), "gpu=2,pool-A=1");
        assert_eq!(r.to_string().parse::<Resources>().unwrap(), r);
        assert!("".parse::<Resources>().unwrap().is_empty());
    }

    #[test]
    fn zero_pool_amount_is_not_membership() {
        let r: Resources = "pool-A=0,pool-B=0.5".parse().unwrap();
        assert_eq!(r.pools().map(|p| p.to_string()).collect::<Vec<_>>(), ["B"]);
    }

    #[test]
    fn malformed_strings_are_quoted() {
        let cases = [
            ("pool-A", "part \"pool-A\" is not NAME=AMOUNT"),
            ("gpu=1,,cpu=2", "part \"\" is not NAME=AMOUNT"),
            ("=3", "part \"=3\""),
            ("gpu=", "part \"gpu=\""),
            (
                "gpu=two",
                "resource \"gpu\" has amount \"two\", which is not a number",
            ),
            ("gpu=-1", "amounts must be finite and not negative"),
            ("gpu=inf", "amounts must be finite"),
            ("g pu=1", "resource name \"g pu\" contains ' '"),
            (
                "gpu=1,gpu=2",
                "resource \"gpu\" is given twice in \"gpu=1,gpu=2\"",
            ),
        ];
        for (input, want) in cases {
            let err = input.parse::<Resources>().unwrap_err().to_string();
            assert!(err.contains(want), "{input:?}: {err}");
        }
        let err = "pool-A=1,gpu".parse::<Resources>().unwrap_err().to_string();
        assert!(err.contains("\"pool-A=1,gpu\""), "{err}");
    }

    #[test]
    fn deserialises_map_or_string() {
        let r: Resources = serde_json::from_str(r#"{"gpu": 1}"#).unwrap();
        assert_eq!(r.get("gpu"), Some(1.0));
        let r: Resources = serde_json::from_str(r#""gpu=1""#).unwrap();
        assert_eq!(r.get("gpu"), Some(1.0));
        assert!(serde_json::from_str::<Resources>(r#"{"gpu": -1}"#).is_err());
        assert!(serde_json::from_str::<Resources>(r#"{"gpu": "x"}"#).is_err());
    }
}
