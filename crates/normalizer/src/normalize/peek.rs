//! The peek: the few fields normalization reads, borrowed from the page, tolerant of wrong
//! types (a field of an unexpected type is kept in the record but left out of what is derived
//! from it).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;

/// A string field: absent or null, a string, or something else (kept out of the derived fields).
#[derive(Default, Debug)]
pub(super) enum Str<'a> {
    #[default]
    Missing,
    Text(Cow<'a, str>),
    Other,
}

impl<'a> Str<'a> {
    pub fn text(&self) -> Option<&str> {
        match self {
            Str::Text(t) => Some(t),
            _ => None,
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str::Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str::Text(Cow::Owned(v)))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Str::Missing)
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(Str::Missing)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Str::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Str::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Str::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Str::Other)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut s: A) -> Result<Self::Value, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Str::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Str::Other)
            }
        }
        d.deserialize_any(V)
    }
}

/// A sub-object: read when it is an object, ignored when it is anything else.
#[derive(Debug)]
pub(super) struct Obj<T>(pub Option<T>);

impl<T> Default for Obj<T> {
    fn default() -> Self {
        Obj(None)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Obj<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<Self::Value, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(m)).map(|t| Obj(Some(t)))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut s: A) -> Result<Self::Value, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Obj(None))
            }
            fn visit_borrowed_str<E>(self, _: &'de str) -> Result<Self::Value, E> {
                Ok(Obj(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Obj(None))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Obj(None))
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(Obj(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Obj(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Obj(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Obj(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Obj(None))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub(super) struct PeekUser<'a> {
    #[serde(borrow)]
    pub uuid: Str<'a>,
    #[serde(borrow)]
    pub name: Str<'a>,
    #[serde(borrow)]
    pub email: Str<'a>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub(super) struct PeekClient<'a> {
    #[serde(borrow)]
    pub ip_address: Str<'a>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub(super) struct PeekSession<'a> {
    #[serde(borrow)]
    pub ip: Str<'a>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub(super) struct Peek<'a> {
    #[serde(borrow)]
    pub uuid: Str<'a>,
    #[serde(borrow)]
    pub timestamp: Str<'a>,
    #[serde(borrow)]
    pub client: Obj<PeekClient<'a>>,
    #[serde(borrow)]
    pub session: Obj<PeekSession<'a>>,
    #[serde(borrow)]
    pub user: Obj<PeekUser<'a>>,
    #[serde(borrow)]
    pub target_user: Obj<PeekUser<'a>>,
    #[serde(borrow)]
    pub actor_details: Obj<PeekUser<'a>>,
    #[serde(borrow)]
    pub object_details: Obj<PeekUser<'a>>,
    #[serde(borrow)]
    pub aux_details: Obj<PeekUser<'a>>,
    #[serde(borrow)]
    pub item_uuid: Str<'a>,
    #[serde(borrow)]
    pub vault_uuid: Str<'a>,
    #[serde(borrow)]
    pub actor_uuid: Str<'a>,
    #[serde(borrow)]
    pub object_uuid: Str<'a>,
    #[serde(borrow)]
    pub object_type: Str<'a>,
    #[serde(borrow)]
    pub aux_uuid: Str<'a>,
}

impl<'a> Peek<'a> {
    /// Every person the event names: user, target, actor, object and auxiliary.
    pub fn users(&self) -> impl Iterator<Item = &PeekUser<'a>> {
        [
            &self.user,
            &self.target_user,
            &self.actor_details,
            &self.object_details,
            &self.aux_details,
        ]
        .into_iter()
        .filter_map(|u| u.0.as_ref())
    }
}
