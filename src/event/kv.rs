//! TLib key-value lists (`UserData`, `Extensions`, `Reasons`): validated and kept as compact JSON.
//!
//! A resource's `userData` is output as received, and compared with the previous set to decide whether it
//! changed. Keeping the list as one compact JSON string makes both cheap: no tree of values per event, a
//! byte comparison for change, and the string is written into notifications verbatim.

use crate::json::{push_integer, write_json_str};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// What a recording key (`GSIP_RECORD` in UserData, `record` in Extensions) asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordDirective {
    /// `start`, `started`, `on`, `resume`, `resumed` (`ON`).
    Record,
    /// `pause`, `paused` (`PAUSED`).
    Pause,
    /// `stop`, `stopped`, `off` (`OFF`).
    Stop,
    /// Any other value: changes nothing.
    Unrecognised,
}

impl RecordDirective {
    pub(crate) fn from_value(value: &str) -> Self {
        const RECORD: [&str; 5] = ["start", "started", "on", "resume", "resumed"];
        const PAUSE: [&str; 2] = ["pause", "paused"];
        const STOP: [&str; 3] = ["stop", "stopped", "off"];
        let is = |words: &[&str]| words.iter().any(|w| w.eq_ignore_ascii_case(value));
        if is(&RECORD) {
            RecordDirective::Record
        } else if is(&PAUSE) {
            RecordDirective::Pause
        } else if is(&STOP) {
            RecordDirective::Stop
        } else {
            RecordDirective::Unrecognised
        }
    }
}

/// A validated KV list in compact JSON form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvList {
    /// The list as a compact JSON object, keys in the order received.
    pub json: Box<str>,
    /// The value of the recording key at the top level, if the list has that key with a string value.
    pub record: Option<RecordDirective>,
}

impl KvList {
    /// True for `{}`.
    pub fn is_empty(&self) -> bool {
        self.json.len() == 2
    }

    /// The value of top-level key `key` as text: a string as it is, an integer in decimal; `None` when the
    /// key is absent or holds a list. Parses the list, so it is for rare events, not the hot path.
    pub fn value_text(&self, key: &str) -> Option<String> {
        let map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&self.json).ok()?;
        match map.get(key)? {
            serde_json::Value::String(text) => Some(text.clone()),
            serde_json::Value::Number(number) => Some(number.to_string()),
            _ => None,
        }
    }

    /// Validates the raw JSON of attribute `attribute` and compacts it. `record_key` names the top-level key
    /// whose string value is read as a [`RecordDirective`].
    ///
    /// Values must be strings, integers or nested objects (TLib KV lists); the error names the key path.
    pub fn parse(raw: &str, attribute: &str, record_key: &str) -> Result<Self, String> {
        let mut de = serde_json::Deserializer::from_str(raw);
        let parsed = parse_lenient(&mut de, attribute, record_key)
            .map_err(|err| format!("{attribute}: {err}"))?;
        de.end().map_err(|err| format!("{attribute}: {err}"))?;
        parsed
    }
}

/// Reads one KV list from `de`, compacting and checking it in the same pass. Only malformed JSON fails the
/// deserializer; a value of the wrong type is consumed and reported in the inner `Err`, so that the caller
/// can decide later whether it matters (for events outside the table it does not).
pub(crate) fn parse_lenient<'de, D: Deserializer<'de>>(
    de: D,
    attribute: &str,
    record_key: &str,
) -> Result<Result<KvList, String>, D::Error> {
    let mut writer = KvWriter {
        // Most attached data sets fit; the string is moved, not copied, into the resource that keeps it.
        out: String::with_capacity(256),
        problem: None,
        attribute,
    };
    let seed = ValueSeed {
        writer: &mut writer,
        path: None,
        record_key,
    };
    let record = seed.deserialize(de)?;
    Ok(match writer.problem {
        Some(problem) => Err(problem),
        None => Ok(KvList {
            json: writer.out.into_boxed_str(),
            record,
        }),
    })
}

/// Defines a `Deserialize` wrapper that reads one named KV list attribute leniently (see [`parse_lenient`]).
macro_rules! kv_attribute {
    ($(#[$doc:meta])* $name:ident, $attribute:literal, $record_key:literal) => {
        $(#[$doc])*
        pub(crate) struct $name(pub(crate) Result<KvList, String>);

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
                parse_lenient(de, $attribute, $record_key).map($name)
            }
        }
    };
}

kv_attribute!(
    /// `UserData`, whose `GSIP_RECORD` controls recording.
    UserDataAttribute, "UserData", "GSIP_RECORD"
);
kv_attribute!(
    /// `Extensions`, whose `record` controls recording.
    ExtensionsAttribute, "Extensions", "record"
);
kv_attribute!(
    /// `Reasons` (checked, not used).
    ReasonsAttribute, "Reasons", ""
);

struct KvWriter<'a> {
    out: String,
    /// The first problem found, naming its key path.
    problem: Option<String>,
    attribute: &'a str,
}

/// A key path, built only when a problem must be reported.
struct PathNode<'p> {
    parent: Option<&'p PathNode<'p>>,
    key: &'p str,
}

impl KvWriter<'_> {
    fn report(&mut self, path: Option<&PathNode<'_>>, found: &str) {
        if self.problem.is_some() {
            return;
        }
        let mut keys = Vec::new();
        let mut node = path;
        while let Some(n) = node {
            keys.push(n.key);
            node = n.parent;
        }
        let mut text = self.attribute.to_owned();
        for key in keys.iter().rev() {
            text.push('.');
            text.push_str(key);
        }
        let expected = if path.is_none() {
            "an object"
        } else {
            "a string, an integer or an object"
        };
        self.problem = Some(format!("{text}: expected {expected}, found {found}"));
    }
}

/// Deserializes one value at `path` (`None`: the list itself), writing its compact form. Returns the record
/// directive found at the top level.
struct ValueSeed<'w, 'a, 'p> {
    writer: &'w mut KvWriter<'a>,
    path: Option<&'p PathNode<'p>>,
    record_key: &'p str,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_, '_, '_> {
    type Value = Option<RecordDirective>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_any(self)
    }
}

impl ValueSeed<'_, '_, '_> {
    fn wrong<E>(self, found: &str) -> Result<Option<RecordDirective>, E> {
        self.writer.report(self.path, found);
        Ok(None)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_, '_, '_> {
    type Value = Option<RecordDirective>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a TLib KV list value")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        if self.path.is_none() {
            return self.wrong("a string");
        }
        write_json_str(&mut self.writer.out, v);
        Ok(None)
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
        if self.path.is_none() {
            return self.wrong("a number");
        }
        push_integer(&mut self.writer.out, v, false);
        Ok(None)
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
        if self.path.is_none() {
            return self.wrong("a number");
        }
        push_integer(&mut self.writer.out, v.unsigned_abs(), v < 0);
        Ok(None)
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
        self.wrong("a fractional number")
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
        self.wrong("a boolean")
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        self.wrong("null")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        self.wrong("an array")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let top = self.path.is_none();
        let mut record = None;
        self.writer.out.push('{');
        let mut first = true;
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            if !first {
                self.writer.out.push(',');
            }
            first = false;
            write_json_str(&mut self.writer.out, &key);
            self.writer.out.push(':');
            let value_start = self.writer.out.len();
            let node = PathNode {
                parent: self.path,
                key: &key,
            };
            map.next_value_seed(ValueSeed {
                writer: &mut *self.writer,
                path: Some(&node),
                record_key: "",
            })?;
            if top && !self.record_key.is_empty() && *key == *self.record_key {
                let value = &self.writer.out[value_start..];
                record = value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .map(RecordDirective::from_value);
            }
        }
        self.writer.out.push('}');
        Ok(record)
    }
}

/// A map key or string that borrows from the input when it has no escapes. (serde's own `Cow<str>`
/// always allocates.)
pub(crate) struct Key<'a>(pub(crate) std::borrow::Cow<'a, str>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct KeyVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for KeyVisitor<'a> {
            type Value = Key<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(std::borrow::Cow::Owned(v.to_owned())))
            }
        }
        de.deserialize_str(KeyVisitor(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compacts_keeps_order_and_finds_record_key() {
        let kv = KvList::parse(
            r#"{ "b": 1, "a" : {"x":"y\n"}, "GSIP_RECORD":"on", "n":-3 }"#,
            "UserData",
            "GSIP_RECORD",
        )
        .unwrap();
        assert_eq!(
            &*kv.json,
            r#"{"b":1,"a":{"x":"y\n"},"GSIP_RECORD":"on","n":-3}"#
        );
        assert_eq!(kv.record, Some(RecordDirective::Record));
        assert!(!kv.is_empty());
    }

    #[test]
    fn record_key_only_at_top_level_and_only_strings() {
        let kv = KvList::parse(r#"{"x":{"record":"stop"}}"#, "Extensions", "record").unwrap();
        assert_eq!(kv.record, None);
        let kv = KvList::parse(r#"{"record":1}"#, "Extensions", "record").unwrap();
        assert_eq!(kv.record, None);
        let kv = KvList::parse(r#"{"record":"Paused"}"#, "Extensions", "record").unwrap();
        assert_eq!(kv.record, Some(RecordDirective::Pause));
        let kv = KvList::parse(r#"{"record":"maybe"}"#, "Extensions", "record").unwrap();
        assert_eq!(kv.record, Some(RecordDirective::Unrecognised));
    }

    #[test]
    fn rejects_bad_values_naming_the_path() {
        let err = KvList::parse(r#"{"a":{"b":1.5}}"#, "UserData", "").unwrap_err();
        assert_eq!(
            err,
            "UserData.a.b: expected a string, an integer or an object, found a fractional number"
        );
        let err = KvList::parse(r#""text""#, "UserData", "").unwrap_err();
        assert_eq!(err, "UserData: expected an object, found a string");
        let err = KvList::parse(r#"{"l":[1]}"#, "Reasons", "").unwrap_err();
        assert_eq!(
            err,
            "Reasons.l: expected a string, an integer or an object, found an array"
        );
        assert!(KvList::parse(r#"{}"#, "UserData", "").unwrap().is_empty());
    }

    #[test]
    fn writes_integers_at_their_edges() {
        let kv = KvList::parse(
            r#"{"z":0,"n":-1,"max":18446744073709551615,"min":-9223372036854775808}"#,
            "UserData",
            "",
        )
        .unwrap();
        assert_eq!(
            &*kv.json,
            r#"{"z":0,"n":-1,"max":18446744073709551615,"min":-9223372036854775808}"#
        );
    }
}
