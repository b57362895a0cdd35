//! Enums that users type by name (on the command line, in config files, in checkpoints): each
//! lists its values and their names once, and parsing, printing and serde all go through them.

/// An enum whose values have one user-facing name each.
pub trait Choice: Copy + PartialEq + 'static {
    /// What the values choose, for messages ("dataset", "noise type").
    const WHAT: &'static str;
    /// Every value, in the order they are listed to users.
    const ALL: &'static [Self];

    /// The name users type.
    fn name(self) -> &'static str;

    /// The value called `s` (ASCII case ignored).
    fn from_name(s: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .copied()
            .find(|v| v.name().eq_ignore_ascii_case(s))
    }

    /// All names, comma separated.
    fn names() -> String {
        Self::ALL
            .iter()
            .map(|v| v.name())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Parses a name with a message that lists the valid ones.
    fn parse_name(s: &str) -> Result<Self, String> {
        Self::from_name(s)
            .ok_or_else(|| format!("unknown {} '{s}' ({})", Self::WHAT, Self::names()))
    }
}

/// Implements `Display`, `FromStr` and serde (as the name string) for a [`Choice`].
#[macro_export]
macro_rules! choice_by_name {
    ($t:ty) => {
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str($crate::choice::Choice::name(*self))
            }
        }
        impl std::str::FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                <$t as $crate::choice::Choice>::parse_name(s)
            }
        }
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str($crate::choice::Choice::name(*self))
            }
        }
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                <$t as $crate::choice::Choice>::parse_name(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}
