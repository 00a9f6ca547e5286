//! A field that 1Password may send, send as `null`, or leave out.
//!
//! `Option<T>` cannot tell `"details": null` from a missing `details`, so a parse → serialize
//! round trip through `Option` would rewrite the event. `docs/architecture.md` promises that original fields
//! reach the SIEM exactly as 1Password sent them, so every optional field is a [`Field`].

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Three states of an optional JSON field. Use with
/// `#[serde(default, skip_serializing_if = "Field::is_absent")]`.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Field<T> {
    /// The key was not in the object.
    #[default]
    Absent,
    /// The key was present with the value `null`.
    Null,
    /// The key was present with a value.
    Present(T),
}

impl<T> Field<T> {
    /// Whether the key was left out (then it is left out again when serialized).
    pub fn is_absent(&self) -> bool {
        matches!(self, Field::Absent)
    }

    /// The value, treating absent and null alike.
    pub fn get(&self) -> Option<&T> {
        match self {
            Field::Present(v) => Some(v),
            Field::Absent | Field::Null => None,
        }
    }

    /// The value, treating absent and null alike, by value.
    pub fn into_option(self) -> Option<T> {
        match self {
            Field::Present(v) => Some(v),
            Field::Absent | Field::Null => None,
        }
    }
}

impl<T> From<Option<T>> for Field<T> {
    /// `None` becomes [`Field::Absent`]: code that builds events leaves unknown data out.
    fn from(value: Option<T>) -> Self {
        value.map_or(Field::Absent, Field::Present)
    }
}

impl<T: Serialize> Serialize for Field<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Field::Present(v) => v.serialize(serializer),
            // Absent is skipped by the attribute; if a caller forgets it, null is the
            // least surprising rendering.
            Field::Absent | Field::Null => serializer.serialize_none(),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Option::<T>::deserialize(deserializer)?.map_or(Field::Null, Field::Present))
    }
}
