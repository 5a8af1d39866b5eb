//! The one error type of this crate.

use crate::name::NameKind;

/// What was wrong with a pool name, a resource name or a resource string.
///
/// Every variant quotes the offending text so that a user can find it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AnnotationError {
    /// A pool or resource name was the empty string.
    #[error("{kind} name is empty")]
    EmptyName {
        /// Which kind of name it was.
        kind: NameKind,
    },
    /// A pool or resource name held a character outside `[A-Za-z0-9_.-]`.
    #[error("{kind} name {name:?} contains {ch:?}; names may use only letters, digits, '_', '-' and '.'")]
    BadNameChar {
        /// Which kind of name it was.
        kind: NameKind,
        /// The whole name as given.
        name: String,
        /// The first character that is not allowed.
        ch: char,
    },
    /// A part of a resource string such as `pool-A=1,gpu=2` was not `NAME=AMOUNT`.
    #[error("malformed resources {input:?}: part {part:?} is not NAME=AMOUNT")]
    MalformedResources {
        /// The whole string as given.
        input: String,
        /// The part (between commas) that is wrong.
        part: String,
    },
    /// A resource amount was not a number.
    #[error("resource {name:?} has amount {amount:?}, which is not a number")]
    NonNumericAmount {
        /// The resource name.
        name: String,
        /// The amount as written.
        amount: String,
    },
    /// A resource amount was negative, infinite or NaN.
    #[error("resource {name:?} has amount {amount}, but amounts must be finite and not negative")]
    BadAmount {
        /// The resource name.
        name: String,
        /// The amount given.
        amount: f64,
    },
    /// The same resource was named twice in one string.
    #[error("resource {name:?} is given twice in {input:?}")]
    DuplicateResource {
        /// The resource name.
        name: String,
        /// The whole string as given.
        input: String,
    },
}
