//! Stable string names for the domain's small enums (roles, statuses, providers, steps, …).
//!
//! Each such enum serializes as a fixed lowercase string, and the same string is what read models
//! store and what clients see, so `as_str`, `Display`, `FromStr` and serde can never disagree: the
//! crate-internal `string_enum!` macro writes all four from one table.

use thiserror::Error;

/// A string that names no value of the enum it was parsed as.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("unknown {kind} {value:?}")]
pub struct ParseNameError {
    /// The enum being parsed, e.g. `Role`.
    pub kind: &'static str,
    /// The rejected input.
    pub value: String,
}

/// Declares a fieldless enum whose variants have stable string names
/// (`Variant => "name"`); derives serde with those names plus `ALL`, `as_str`, `Display`, `FromStr`.
macro_rules! string_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $text:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, ::serde::Serialize, ::serde::Deserialize)]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $text)] $variant ),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The stable string form, as stored in events and read models.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::names::ParseNameError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|value| value.as_str() == s)
                    .ok_or_else(|| $crate::names::ParseNameError {
                        kind: stringify!($name),
                        value: s.to_owned(),
                    })
            }
        }
    };
}

pub(crate) use string_enum;
