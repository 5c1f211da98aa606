//! A secret value (a webhook secret, a token): its `Debug` never shows it.

use std::fmt;

/// A webhook secret. Its `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub(crate) String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// A secret not read (a manual run's, which checks no signature; `--explain` then says
    /// the signature does not match).
    pub(crate) fn unread() -> Secret {
        Secret("\0not read: a manual run checks no signature".into())
    }
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
    pub fn expose_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

pub mod mask;
