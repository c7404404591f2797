//! The fast path of [`super::decode_line`]: a scanner for the form nearly every T-Server line has (one flat
//! object, strings without escapes, integers), written by hand because serde_json's generic visitor was
//! most of the cost of decoding a line, and decoding is the largest single cost of ingest, recovery,
//! `callgate cdr` and the export.
//!
//! It never decides a line on its own: anything outside that form (an escape, a fraction, a repeated
//! attribute, a nested value where a scalar belongs, malformed JSON) makes it answer `None`, and the line
//! goes through serde_json as before. So every rejection, and every line the scanner cannot read, gets
//! exactly serde_json's outcome; the lines it does read give the same [`super::RawEvent`] serde_json
//! gives (property-tested against the serde path in `super::tests`). KV lists (`UserData`, `Extensions`,
//! `Reasons`) and nested values of unknown attributes are handed to serde_json as their own slice.

use super::{RawEvent, Scalar};
use crate::event::kv::{
    ExtensionsAttribute, KvList, ReasonsAttribute, RecordDirective, UserDataAttribute,
};
use serde::de::IgnoredAny;
use std::borrow::Cow;

/// Nesting deeper than this inside one value goes to serde_json with the whole line: serde_json counts
/// depth from the line's start (its limit is 128), and a slice parsed alone would start one level lower.
const MAX_DEPTH: usize = 100;

/// Reads the line into `raw` (empty when called); `None` to let serde_json read it instead (`raw` is
/// then partly filled: the caller starts again). Filled in place rather than returned: a [`RawEvent`]
/// is most of a kilobyte, and moving it showed in profiles.
pub(super) fn scan<'a>(text: &'a str, raw: &mut RawEvent<'a>) -> Option<()> {
    let mut cursor = Cursor {
        text,
        bytes: text.as_bytes(),
        at: 0,
    };
    cursor.skip_space();
    cursor.expect(b'{')?;
    cursor.skip_space();
    if cursor.peek() == Some(b'}') {
        cursor.at += 1;
    } else {
        loop {
            let key = cursor.plain_string()?;
            cursor.skip_space();
            cursor.expect(b':')?;
            cursor.skip_space();
            cursor.member(raw, key)?;
            cursor.skip_space();
            match cursor.next()? {
                b',' => cursor.skip_space(),
                b'}' => break,
                _ => return None,
            }
        }
    }
    cursor.skip_space();
    (cursor.at == cursor.bytes.len()).then_some(())
}

struct Cursor<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
}

/// Sets a scalar attribute as the serde path does: null is absent, and a second value of an attribute
/// already set is left to serde_json (which rejects it as a duplicate).
fn set<'a>(field: &mut Option<Scalar<'a>>, value: Scalar<'a>) -> Option<()> {
    if field.is_some() {
        return None;
    }
    if !matches!(value, Scalar::Null) {
        *field = Some(value);
    }
    Some(())
}

/// Sets a KV list attribute from its slice `value` (null: absent): scanned when it is in the plain form,
/// else read by the serde path's own reader. `record_key` as [`KvList::parse`] takes it.
fn set_list<'de, T: serde::Deserialize<'de>>(
    field: &mut Option<T>,
    value: &'de str,
    record_key: &str,
    wrap: fn(Result<KvList, String>) -> T,
) -> Option<()> {
    if field.is_some() {
        return None;
    }
    *field = match scan_list(value, record_key) {
        Some(list) => Some(wrap(Ok(list))),
        None => serde_json::from_str::<Option<T>>(value).ok()?,
    };
    Some(())
}

/// A KV list in the plain form (objects of plain strings and integers, at most [`MAX_DEPTH`] deep) in
/// its compact form, as `kv::parse_lenient` writes it; `None` for anything else.
fn scan_list(value: &str, record_key: &str) -> Option<KvList> {
    let mut cursor = Cursor {
        text: value,
        bytes: value.as_bytes(),
        at: 0,
    };
    let mut json = String::with_capacity(value.len());
    let record = cursor.list(&mut json, record_key, 0)?;
    cursor.skip_space();
    (cursor.at == cursor.bytes.len()).then(|| KvList {
        json: json.into_boxed_str(),
        record,
    })
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.next()? == byte).then_some(())
    }

    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// A string without escapes or control characters, borrowed; `None` for anything else.
    fn plain_string(&mut self) -> Option<&'a str> {
        self.expect(b'"')?;
        let start = self.at;
        // Eight bytes at a time: the lowest byte the mask marks is the first special one.
        let mut end = start;
        loop {
            let Some(chunk) = self.bytes.get(end..end + 8) else {
                end += self.bytes.get(end..)?.iter().position(|&b| is_special(b))?;
                break;
            };
            let mask = special_bytes(u64::from_le_bytes(chunk.try_into().ok()?));
            if mask != 0 {
                end += (mask.trailing_zeros() / 8) as usize;
                break;
            }
            end += 8;
        }
        if self.bytes.get(end) != Some(&b'"') {
            return None;
        }
        self.at = end + 1;
        self.text.get(start..end)
    }

    /// One member's value, into `raw` under `key` (the serde path's names and rules).
    fn member(&mut self, raw: &mut RawEvent<'a>, key: &str) -> Option<()> {
        let name = key.strip_prefix("Attribute").unwrap_or(key);
        let field = match name {
            "event" => &mut raw.event,
            "EventSequenceNumber" => &mut raw.sequence,
            "TimeinSecs" => &mut raw.time_secs,
            "TimeinuSecs" => &mut raw.time_usecs,
            "ConnID" => &mut raw.conn_id,
            "CallUUID" => &mut raw.call_uuid,
            "CallType" => &mut raw.call_type,
            "ThisDN" => &mut raw.this_dn,
            "OtherDN" => &mut raw.other_dn,
            "ThisDNRole" => &mut raw.this_dn_role,
            "OtherDNRole" => &mut raw.other_dn_role,
            "ANI" => &mut raw.ani,
            "DNIS" => &mut raw.dnis,
            "ThisQueue" => &mut raw.this_queue,
            "ThirdPartyDN" => &mut raw.third_party_dn,
            "ThirdPartyDNRole" => &mut raw.third_party_dn_role,
            "PreviousConnID" => &mut raw.previous_conn_id,
            "TransferConnID" => &mut raw.transfer_conn_id,
            "CallState" => &mut raw.call_state,
            "AgentID" => &mut raw.agent_id,
            "AgentWorkMode" => &mut raw.work_mode,
            "MonitorNextCallType" => &mut raw.monitor_scope,
            "Server" => &mut raw.server,
            "Time" => &mut raw.time_text,
            "UserData" => {
                let value = self.value()?;
                return set_list(&mut raw.user_data, value, "GSIP_RECORD", UserDataAttribute);
            }
            "Extensions" => {
                let value = self.value()?;
                return set_list(&mut raw.extensions, value, "record", ExtensionsAttribute);
            }
            "Reasons" => {
                let value = self.value()?;
                return set_list(&mut raw.reasons, value, "", ReasonsAttribute);
            }
            _ => {
                // Ignored, but read: malformed JSON there still rejects the line.
                serde_json::from_str::<IgnoredAny>(self.value()?).ok()?;
                return Some(());
            }
        };
        let value = self.scalar()?;
        set(field, value)
    }

    /// One KV list object, written compact into `out`: its top level (`depth` 0) returns the record
    /// directive of `record_key`'s value, as the serde path finds it (the last such key decides).
    fn list(
        &mut self,
        out: &mut String,
        record_key: &str,
        depth: usize,
    ) -> Option<Option<RecordDirective>> {
        if depth >= MAX_DEPTH {
            return None;
        }
        let mut record = None;
        self.skip_space();
        self.expect(b'{')?;
        out.push('{');
        self.skip_space();
        if self.peek() == Some(b'}') {
            self.at += 1;
            out.push('}');
            return Some(None);
        }
        loop {
            let key = self.plain_string()?;
            out.push('"');
            out.push_str(key);
            out.push_str("\":");
            self.skip_space();
            self.expect(b':')?;
            self.skip_space();
            let is_record_key = depth == 0 && !record_key.is_empty() && key == record_key;
            match self.peek()? {
                b'"' => {
                    let text = self.plain_string()?;
                    out.push('"');
                    out.push_str(text);
                    out.push('"');
                    if is_record_key {
                        record = Some(RecordDirective::from_value(text));
                    }
                }
                b'{' => {
                    self.list(out, "", depth + 1)?;
                    if is_record_key {
                        record = None;
                    }
                }
                _ => {
                    // The scanner reads integers only in their canonical form: written as they came.
                    let start = self.at;
                    self.integer()?;
                    out.push_str(self.text.get(start..self.at)?);
                    if is_record_key {
                        record = None;
                    }
                }
            }
            self.skip_space();
            match self.next()? {
                b',' => {
                    out.push(',');
                    self.skip_space();
                }
                b'}' => break,
                _ => return None,
            }
        }
        out.push('}');
        Some(record)
    }

    /// A string, an integer, a boolean or null; `None` for anything else (objects and arrays included).
    fn scalar(&mut self) -> Option<Scalar<'a>> {
        match self.peek()? {
            b'"' => self
                .plain_string()
                .map(|text| Scalar::Str(Cow::Borrowed(text))),
            b'-' | b'0'..=b'9' => self.integer(),
            b't' => self.literal("true", Scalar::Bool),
            b'f' => self.literal("false", Scalar::Bool),
            b'n' => self.literal("null", Scalar::Null),
            _ => None,
        }
    }

    fn literal(&mut self, word: &str, value: Scalar<'a>) -> Option<Scalar<'a>> {
        let end = self.at + word.len();
        (self.bytes.get(self.at..end)? == word.as_bytes()).then(|| {
            self.at = end;
            value
        })
    }

    /// An integer as serde_json reads it (negative: `Int`, else `UInt`), of at most 18 digits: longer
    /// ones, `-0`, fractions and exponents are left to serde_json.
    fn integer(&mut self) -> Option<Scalar<'a>> {
        let negative = self.peek() == Some(b'-');
        if negative {
            self.at += 1;
        }
        let start = self.at;
        let mut value: u64 = 0;
        while let Some(digit @ b'0'..=b'9') = self.peek() {
            value = value * 10 + u64::from(digit - b'0');
            self.at += 1;
            if self.at - start > 18 {
                return None;
            }
        }
        let digits = self.at - start;
        let leading_zero = digits > 1 && self.bytes.get(start) == Some(&b'0');
        if digits == 0 || leading_zero || matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        match (negative, value) {
            (false, value) => Some(Scalar::UInt(value)),
            (true, 0) => None,
            // At most 18 digits: within i64.
            (true, value) => Some(Scalar::Int(-(value as i64))),
        }
    }

    /// The text of the value that starts here, whatever it is (its form is checked by whoever reads it;
    /// the extent only needs strings and nesting right).
    fn value(&mut self) -> Option<&'a str> {
        let start = self.at;
        let mut depth = 0usize;
        loop {
            match self.peek()? {
                b'"' => self.skip_string()?,
                b'{' | b'[' => {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return None;
                    }
                    self.at += 1;
                }
                b'}' | b']' => {
                    if depth == 0 {
                        break;
                    }
                    depth -= 1;
                    self.at += 1;
                }
                b',' if depth == 0 => break,
                _ => self.at += 1,
            }
            if depth == 0 && !self.in_scalar() {
                break;
            }
        }
        self.text.get(start..self.at)
    }

    /// Whether the byte here continues a bare scalar (a number or a literal) at the top of a value.
    fn in_scalar(&self) -> bool {
        matches!(
            self.peek(),
            Some(b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' | b'-' | b'+' | b'.')
        )
    }

    /// Past a string, escapes included (their validity is serde_json's to check).
    fn skip_string(&mut self) -> Option<()> {
        self.expect(b'"')?;
        loop {
            match self.next()? {
                b'"' => return Some(()),
                b'\\' => {
                    self.next()?;
                }
                _ => {}
            }
        }
    }
}

/// A byte that ends a plain string: `"`, `\\` or a control character.
fn is_special(byte: u8) -> bool {
    byte == b'"' || byte == b'\\' || byte < 0x20
}

/// The high bit of each byte of `word` that [`is_special`], and possibly of bytes above the lowest such
/// byte (the borrows of the subtraction run upwards): so the lowest marked byte is exact, and no mark
/// means no special byte. Bytes of 0x80 and above (UTF-8 sequences) are never marked.
fn special_bytes(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // A byte is zero after the XOR exactly where it equals the searched byte.
    let zero_at = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let quote = zero_at(word ^ (ONES * u64::from(b'"')));
    let backslash = zero_at(word ^ (ONES * u64::from(b'\\')));
    // Below 0x20: subtracting 0x20 borrows into the high bit only for those bytes (of the ASCII ones).
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
    quote | backslash | control
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lowest_marked_byte_is_the_first_special_one() {
        let alphabet = [
            b'a',
            b'"',
            b'\\',
            0x00,
            0x1f,
            0x20,
            0x7f,
            0x80,
            0xff,
            b'0',
            0x21,
            0x5c - 1,
        ];
        // Every word of bytes from the alphabet, in a sample that covers every pair of neighbours.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..200_000 {
            let mut bytes = [0u8; 8];
            for byte in &mut bytes {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *byte = alphabet[(state % alphabet.len() as u64) as usize];
            }
            let mask = special_bytes(u64::from_le_bytes(bytes));
            let first = bytes.iter().position(|&b| is_special(b));
            let marked = (mask != 0).then(|| (mask.trailing_zeros() / 8) as usize);
            assert_eq!(marked, first, "{bytes:?}");
        }
    }
}
