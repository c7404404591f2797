//! TLib key-value lists (`UserData`, `Extensions`, `Reasons`): validated and kept as compact JSON.
//!
//! A resource's `userData` is output as received, and compared with the previous set to decide whether it
//! changed. Keeping the list as one compact JSON string makes both cheap: no tree of values per event, a
//! byte comparison for change, and the string is written into notifications verbatim.

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt::{self, Write as _};

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
    fn from_value(value: &str) -> Self {
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

    /// Validates the raw JSON of attribute `attribute` and compacts it. `record_key` names the top-level key
    /// whose string value is read as a [`RecordDirective`].
    ///
    /// Values must be strings, integers or nested objects (TLib KV lists); the error names the key path.
    pub fn parse(raw: &str, attribute: &str, record_key: &str) -> Result<Self, String> {
        let mut writer = KvWriter {
            out: String::with_capacity(raw.len()),
            problem: None,
        };
        let mut de = serde_json::Deserializer::from_str(raw);
        let seed = ValueSeed {
            writer: &mut writer,
            path: attribute,
            top: true,
            record_key,
            record: None,
        };
        match seed.deserialize(&mut de) {
            Ok(record) => Ok(KvList {
                json: writer.out.into_boxed_str(),
                record,
            }),
            Err(err) => Err(writer
                .problem
                .unwrap_or_else(|| format!("{attribute}: {err}"))),
        }
    }
}

struct KvWriter {
    out: String,
    /// Our own message for the first problem found, without serde_json's position suffix.
    problem: Option<String>,
}

/// Deserializes one value at `path`, writing its compact form. Returns the record directive found at the
/// top level (only the top-level map looks for it).
struct ValueSeed<'w, 'p> {
    writer: &'w mut KvWriter,
    path: &'p str,
    top: bool,
    record_key: &'p str,
    record: Option<RecordDirective>,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_, '_> {
    type Value = Option<RecordDirective>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_any(self)
    }
}

impl ValueSeed<'_, '_> {
    fn reject<E: serde::de::Error>(self, found: &str) -> Result<Option<RecordDirective>, E> {
        let expected = if self.top {
            "an object"
        } else {
            "a string, an integer or an object"
        };
        let message = format!("{}: expected {expected}, found {found}", self.path);
        self.writer.problem.get_or_insert(message);
        Err(E::custom("invalid KV list"))
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_, '_> {
    type Value = Option<RecordDirective>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a TLib KV list value")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        if self.top {
            return self.reject("a string");
        }
        write_json_str(&mut self.writer.out, v);
        Ok(None)
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
        if self.top {
            return self.reject("a number");
        }
        let _ = write!(self.writer.out, "{v}");
        Ok(None)
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
        if self.top {
            return self.reject("a number");
        }
        let _ = write!(self.writer.out, "{v}");
        Ok(None)
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
        self.reject("a fractional number")
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
        self.reject("a boolean")
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        self.reject("null")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        self.reject("an array")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Self::Value, A::Error> {
        self.writer.out.push('{');
        let mut first = true;
        let mut child_path = String::new();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if !first {
                self.writer.out.push(',');
            }
            first = false;
            write_json_str(&mut self.writer.out, &key);
            self.writer.out.push(':');
            let value_start = self.writer.out.len();
            child_path.clear();
            let _ = write!(child_path, "{}.{}", self.path, key);
            map.next_value_seed(ValueSeed {
                writer: self.writer,
                path: &child_path,
                top: false,
                record_key: "",
                record: None,
            })?;
            if self.top && *key == *self.record_key {
                let value = &self.writer.out[value_start..];
                self.record = value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .map(RecordDirective::from_value);
            }
        }
        self.writer.out.push('}');
        Ok(self.record)
    }
}

/// Appends `value` as a JSON string literal (quotes and escapes) to `out`.
pub(crate) fn write_json_str(out: &mut String, value: &str) {
    out.push('"');
    push_json_escaped(out, value);
    out.push('"');
}

/// Appends `value` JSON-escaped, without quotes, to `out`.
pub(crate) fn push_json_escaped(out: &mut String, value: &str) {
    let bytes = value.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        out.push_str(&value[start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&value[start..]);
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
    fn escapes_control_characters() {
        let mut out = String::new();
        write_json_str(&mut out, "a\"b\\c\u{1}d\u{e9}");
        assert_eq!(out, "\"a\\\"b\\\\c\\u0001d\u{e9}\"");
    }
}
