//! Geographic descriptions of phone numbers from libphonenumber's English geocoding data.
//!
//! The data (`data/geocoding-en.txt`, libphonenumber 9.0.33 as the phonenumber crate ships it, Apache-2.0)
//! is one `prefix|description` line per E.164 digit prefix, sorted by prefix as text. Because the lines are
//! sorted as text, every prefix length can be looked up by binary search; the longest prefix found wins, as
//! in libphonenumber's own geocoder. The data is embedded in the binary and indexed on first use.

use std::sync::OnceLock;

static DATA: &str = include_str!("../../data/geocoding-en.txt");

/// Byte offsets of the starts of the lines of [`DATA`].
fn line_starts() -> &'static [u32] {
    static STARTS: OnceLock<Vec<u32>> = OnceLock::new();
    STARTS.get_or_init(|| {
        let mut starts = Vec::with_capacity(DATA.len() / 20);
        let mut offset = 0usize;
        for line in DATA.split_inclusive('\n') {
            // The data is a few MiB, far below u32::MAX; a longer file would fail the unit test below.
            starts.push(u32::try_from(offset).unwrap_or(u32::MAX));
            offset += line.len();
        }
        starts
    })
}

fn line_at(start: u32) -> (&'static str, &'static str) {
    let rest = DATA.get(start as usize..).unwrap_or("");
    let line = rest.split('\n').next().unwrap_or("");
    line.split_once('|').unwrap_or((line, ""))
}

/// The most precise description of the number with E.164 digits `digits` (no `+`), if the data has one.
pub fn describe(digits: &str) -> Option<&'static str> {
    let starts = line_starts();
    for len in (1..=digits.len()).rev() {
        let prefix = digits.get(..len)?;
        if let Ok(found) = starts.binary_search_by(|&start| line_at(start).0.cmp(prefix)) {
            return Some(line_at(starts[found]).1).filter(|d| !d.is_empty());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins() {
        assert_eq!(describe("14155550100"), Some("San Francisco, CA"));
        assert_eq!(describe("14159990000"), Some("California"));
        assert_eq!(describe("442079460958"), Some("London"));
        assert_eq!(describe("999"), None);
        assert_eq!(describe(""), None);
    }

    #[test]
    fn data_is_sorted_and_well_formed() {
        assert!(u32::try_from(DATA.len()).is_ok());
        let mut previous = "";
        for line in DATA.lines() {
            let (prefix, description) = line.split_once('|').expect("prefix|description");
            assert!(prefix.bytes().all(|b| b.is_ascii_digit()), "{line}");
            assert!(!description.is_empty(), "{line}");
            assert!(previous < prefix, "{previous} then {prefix}");
            previous = prefix;
        }
    }
}
