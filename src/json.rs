//! The crate's JSON writer: every document callgate writes by hand (call resources, notification and
//! control frames, REST bodies, acknowledgements) goes through these functions.
//!
//! Hand-written rather than serde: notifications are built once per event from the reducer's state, in a
//! fixed member order (docs/semantics.md), straight into the buffer that becomes the shared frame; a
//! serializer would need an intermediate value per document. Strings are escaped eight bytes at a time
//! because they are most of what is written and rarely need escaping.

/// A number in decimal, formatted without going through `fmt` (this runs for every notification).
pub struct Decimal {
    digits: [u8; 20],
    start: usize,
}

impl Decimal {
    /// The decimal digits of `value`.
    pub fn new(value: u64) -> Self {
        let mut decimal = Decimal {
            digits: [0; 20],
            start: 20,
        };
        let mut rest = value;
        loop {
            decimal.start -= 1;
            decimal.digits[decimal.start] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        decimal
    }

    /// The digits as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits were written.
        std::str::from_utf8(&self.digits[self.start..]).unwrap_or("0")
    }
}

/// Appends a decimal integer (with a minus sign when `negative`).
pub fn push_integer(out: &mut String, value: u64, negative: bool) {
    if negative {
        out.push('-');
    }
    out.push_str(Decimal::new(value).as_str());
}

/// Appends `value` as a JSON string literal (quotes and escapes) to `out`.
pub fn write_json_str(out: &mut String, value: &str) {
    out.push('"');
    push_json_escaped(out, value);
    out.push('"');
}

/// Appends `value` JSON-escaped, without quotes, to `out`.
pub fn push_json_escaped(out: &mut String, value: &str) {
    let bytes = value.as_bytes();
    let mut start = 0;
    while let Some(offset) = find_escape(&bytes[start..]) {
        let i = start + offset;
        out.push_str(&value[start..i]);
        match bytes[i] {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x08 => out.push_str("\\b"),
            0x0c => out.push_str("\\f"),
            b => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(HEX[(b >> 4) as usize] as char);
                out.push(HEX[(b & 15) as usize] as char);
            }
        }
        start = i + 1;
    }
    out.push_str(&value[start..]);
}

/// The position of the first byte that needs escaping. Scans eight bytes at a time (SWAR): strings in
/// events rarely need escaping, and this runs for every string of every notification.
fn find_escape(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let mut chunks = bytes.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let v = u64::from_le_bytes(word);
        let below_space = v.wrapping_sub(ONES * 0x20) & !v & HIGHS;
        if below_space | has_zero(v ^ (ONES * b'"' as u64)) | has_zero(v ^ (ONES * b'\\' as u64))
            != 0
        {
            return chunk
                .iter()
                .position(|&b| NEEDS_ESCAPE[b as usize])
                .map(|p| offset + p);
        }
        offset += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| NEEDS_ESCAPE[b as usize])
        .map(|p| offset + p)
}

/// Bytes that JSON strings must escape: control characters, `"` and `\`.
static NEEDS_ESCAPE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// Appends a ConnID in its normalised form (16 lower-case hex digits) without going through `fmt`.
pub fn push_conn_id(out: &mut String, conn_id: crate::event::ConnId) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // Pushed as chars: ASCII by construction, and a UTF-8 check of the digits showed in profiles.
    out.extend((0..16).map(|i| char::from(HEX[((conn_id.0 >> (60 - 4 * i)) & 15) as usize])));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_byte_that_needs_escaping_at_any_position() {
        for len in 0..20 {
            for at in 0..len {
                for special in [b'"', b'\\', 0x00, 0x1f, b'\n'] {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = special;
                    assert_eq!(find_escape(&bytes), Some(at), "{bytes:?}");
                }
            }
            let plain: Vec<u8> = (0..len)
                .map(|i| [b'a', 0x20, 0x7f, 0xc3, 0xa9, b'~'][i % 6])
                .collect();
            assert_eq!(find_escape(&plain), None, "{plain:?}");
        }
    }

    #[test]
    fn escapes_control_characters() {
        let mut out = String::new();
        write_json_str(&mut out, "a\"b\\c\u{1}d\u{e9}");
        assert_eq!(out, "\"a\\\"b\\\\c\\u0001d\u{e9}\"");
    }
}
