//! Reference tests of `callgate::enrich` (call-resource.md, "Participants") against data that does not
//! come from the code under test:
//!
//! - country names: the ISO 3166-1 table of the Debian package `iso-codes`
//!   (`/usr/share/iso-codes/json/iso_3166-1.json`, checked with iso-codes 4.15.0), plus CLDR's English
//!   names for the three libphonenumber regions that ISO does not assign
//!   (<https://github.com/unicode-org/cldr/blob/main/common/main/en.xml>, `<territories>`);
//! - participants: libphonenumber 9.0.33, the release whose metadata the `phonenumber` crate ships
//!   (<https://github.com/google/libphonenumber/tree/v9.0.33>, commit 5178ee5b450e37a3adda9808abb09200acbae5db).
//!   Numbers are the real-metadata example numbers of `resources/PhoneNumberMetadata.xml` and those numbers
//!   of `java/libphonenumber/test/com/google/i18n/phonenumbers/PhoneNumberUtilTest.java` that are valid in
//!   the real metadata (that test runs on test metadata, so only its numbers are taken, never its
//!   formats). Formats follow the real metadata's `availableFormats`; locations are the longest matching
//!   prefix of `resources/geocoding/en/<calling code>.txt` and follow `PhoneNumberOfflineGeocoder`
//!   (`getDescriptionForNumber`): only a valid number of a geographical type has one (fixed line, fixed
//!   line or mobile, and mobile in `PhoneNumberUtil.GEO_MOBILE_COUNTRIES`: 52, 54, 55, 62, 86); any other
//!   number gets the country name, as the spec says. Main regions of shared calling codes come from
//!   `java/libphonenumber/src/com/google/i18n/phonenumbers/CountryCodeToRegionCodeMap.java` (the first
//!   region listed, which `getRegionCodeForCountryCode` returns). Every expectation was also cross-checked
//!   with the Python port `phonenumbers` 9.0.33 (PyPI), run by hand, outside this suite. The rows are
//!   in `tests/data/libphonenumber-participants.tsv`, whose header names each source file; rows the code
//!   is known to get wrong stay there too, in an ignored test that says why.

use callgate::enrich::countries::country_name;
use callgate::enrich::phone::build;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

// ---------------------------------------------------------------------------------------------------
// Country names
// ---------------------------------------------------------------------------------------------------

/// Where Debian's (and Ubuntu's) `iso-codes` package installs ISO 3166-1.
const ISO_3166_1: &str = "/usr/share/iso-codes/json/iso_3166-1.json";

/// Table names that are neither ISO's `common_name` nor its `name`: (code, the table's name, ISO's `name`,
/// why). The table follows CLDR's English short names with the spelling choices its module doc lists.
#[rustfmt::skip]
const EXCEPTIONS: [(&str, &str, &str, &str); 19] = [
    ("BN", "Brunei", "Brunei Darussalam", "CLDR short name; ISO gives the formal name"),
    ("BQ", "Caribbean Netherlands", "Bonaire, Sint Eustatius and Saba", "CLDR short name for the three islands"),
    ("CD", "Democratic Republic of the Congo", "Congo, The Democratic Republic of the", "the Congos spelled out in full (CLDR: Congo - Kinshasa); ISO inverts the name"),
    ("CG", "Republic of the Congo", "Congo", "the Congos spelled out in full (CLDR: Congo - Brazzaville); it is ISO's official_name"),
    ("CV", "Cape Verde", "Cabo Verde", "CLDR's English name; ISO uses the Portuguese form"),
    ("FK", "Falkland Islands", "Falkland Islands (Malvinas)", "CLDR short name, without ISO's parenthesised alternative"),
    ("FM", "Micronesia", "Micronesia, Federated States of", "CLDR short name; ISO inverts the formal name"),
    ("MF", "Saint Martin", "Saint Martin (French part)", "CLDR (St. Martin) with Saint spelled out, without '(French part)'"),
    ("PN", "Pitcairn Islands", "Pitcairn", "CLDR name"),
    ("PS", "Palestinian Territories", "Palestine, State of", "CLDR name"),
    ("RU", "Russia", "Russian Federation", "CLDR short name; ISO gives the formal name"),
    ("SH", "Saint Helena", "Saint Helena, Ascension and Tristan da Cunha", "CLDR (St. Helena): Ascension (AC) and Tristan da Cunha (TA) have entries of their own, as in libphonenumber"),
    ("ST", "São Tomé and Príncipe", "Sao Tome and Principe", "CLDR's accented spelling, with 'and' for '&'"),
    ("SX", "Sint Maarten", "Sint Maarten (Dutch part)", "CLDR short name, without '(Dutch part)'"),
    ("TR", "Turkey", "Türkiye", "the English name CLDR keeps (module doc: 'Turkey' rather than 'Türkiye')"),
    ("UM", "U.S. Outlying Islands", "United States Minor Outlying Islands", "CLDR short name"),
    ("VA", "Vatican City", "Holy See (Vatican City State)", "CLDR short name"),
    ("VG", "British Virgin Islands", "Virgin Islands, British", "CLDR name; ISO inverts it"),
    ("VI", "U.S. Virgin Islands", "Virgin Islands, U.S.", "CLDR name; ISO inverts it"),
];

/// Regions of libphonenumber's metadata that ISO 3166-1 does not assign, with their CLDR English names.
const NON_ISO_REGIONS: [(&str, &str); 3] = [
    ("AC", "Ascension Island"),
    ("TA", "Tristan da Cunha"),
    ("XK", "Kosovo"),
];

/// One ISO 3166-1 entry: (`name`, `common_name` when ISO has one).
type IsoNames = (String, Option<String>);

/// ISO 3166-1 by alpha-2 code, read from the `iso-codes` package. Panics, never skips, when it is missing.
fn iso_3166_1() -> BTreeMap<String, IsoNames> {
    let text = std::fs::read_to_string(ISO_3166_1).unwrap_or_else(|error| {
        panic!(
            "cannot read {ISO_3166_1} ({error}): the country-name reference test needs the Debian \
             package iso-codes (apt-get install iso-codes)"
        )
    });
    let document: Value = serde_json::from_str(&text).expect("iso_3166-1.json is JSON");
    let entries = document["3166-1"]
        .as_array()
        .expect("iso_3166-1.json has a \"3166-1\" array");
    let field = |entry: &Value, key: &str| entry[key].as_str().map(str::to_owned);
    entries
        .iter()
        .map(|entry| {
            let code = field(entry, "alpha_2").expect("every entry has alpha_2");
            let name = field(entry, "name").expect("every entry has name");
            (code, (name, field(entry, "common_name")))
        })
        .collect()
}

/// Every name of the hand-kept country table, checked against ISO 3166-1 as published by `iso-codes`.
/// Why: the table is 252 hand-typed names, and a mistyped one (found by a mutation review) went unnoticed
/// because the unit tests check only 13 names. Each ISO code must be in the table under ISO's
/// `common_name` or `name`, or under the name of a listed exception; the table must hold nothing but
/// the ISO codes and libphonenumber's three extra regions. So a change to any single name fails here.
#[test]
fn country_table_matches_iso_3166_1() {
    let iso = iso_3166_1();
    assert!(
        iso.len() >= 249,
        "{ISO_3166_1} lists only {} codes",
        iso.len()
    );
    let exceptions: BTreeMap<&str, (&str, &str, &str)> = EXCEPTIONS
        .iter()
        .map(|&(code, table, iso_name, why)| (code, (table, iso_name, why)))
        .collect();
    assert_eq!(
        exceptions.len(),
        EXCEPTIONS.len(),
        "an exception is listed twice"
    );

    let mut failures = Vec::new();
    for (code, (name, common_name)) in &iso {
        let Some(table) = country_name(code) else {
            failures.push(format!(
                "{code}: in ISO 3166-1 ({name}) but not in the table"
            ));
            continue;
        };
        let iso_agrees = table == name || common_name.as_deref() == Some(table);
        match exceptions.get(code.as_str()) {
            None if iso_agrees => {}
            None => failures.push(format!(
                "{code}: table says {table:?}, ISO says name {name:?}, common_name {common_name:?}"
            )),
            Some(_) if iso_agrees => failures.push(format!(
                "{code}: table name {table:?} now matches ISO; drop its exception"
            )),
            Some(&(expected, iso_name, why)) => {
                if table != expected {
                    failures.push(format!(
                        "{code}: table says {table:?}, expected {expected:?} (exception: {why})"
                    ));
                }
                if name != iso_name {
                    failures.push(format!(
                        "{code}: exception records ISO name {iso_name:?} but {ISO_3166_1} says {name:?}"
                    ));
                }
            }
        }
    }
    for code in exceptions.keys() {
        if !iso.contains_key(*code) {
            failures.push(format!(
                "{code}: exception for a code ISO 3166-1 does not have"
            ));
        }
    }
    for (code, expected) in NON_ISO_REGIONS {
        assert!(
            !iso.contains_key(code),
            "{code} is now an ISO code: move it"
        );
        if country_name(code) != Some(expected) {
            failures.push(format!(
                "{code}: table says {:?}, CLDR says {expected:?}",
                country_name(code)
            ));
        }
    }
    // Nothing else: every two-letter code is either ISO's, one of the three, or unknown.
    let known: BTreeSet<String> = iso
        .keys()
        .cloned()
        .chain(NON_ISO_REGIONS.iter().map(|(code, _)| (*code).to_owned()))
        .collect();
    for first in b'A'..=b'Z' {
        for second in b'A'..=b'Z' {
            let code = String::from_utf8(vec![first, second]).expect("ASCII");
            if let Some(table) = country_name(&code).filter(|_| !known.contains(&code)) {
                failures.push(format!(
                    "{code}: table has {table:?} for a code neither ISO nor libphonenumber uses"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "country table disagrees with ISO 3166-1 ({ISO_3166_1}):\n{}",
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------------
// Participants
// ---------------------------------------------------------------------------------------------------

/// The reference rows, `tests/data/libphonenumber-participants.tsv` (its header names the sources).
const PARTICIPANTS: &str = include_str!("data/libphonenumber-participants.tsv");

/// What libphonenumber makes of an internationally written number: one row of [`PARTICIPANTS`].
#[derive(Debug)]
struct Reference {
    /// Which test takes the row: `valid`, `invalid` or `known-disagreement`.
    group: &'static str,
    /// The number as received (`phoneNumber`).
    number: &'static str,
    /// `format(E164)`.
    e164: &'static str,
    /// `format(INTERNATIONAL)`.
    international: &'static str,
    /// `format(NATIONAL)`.
    national: &'static str,
    /// `getRegionCodeForNumber`, or for a number that has none, `getRegionCodeForCountryCode`.
    region: &'static str,
    /// The English short name of `region` (the table checked against ISO above).
    name: &'static str,
    calling_code: &'static str,
    /// The geocoder's description, or the country name where it gives none.
    location: &'static str,
}

/// The rows of one group, in file order.
fn references(group: &str) -> Vec<Reference> {
    let rows: Vec<Reference> = PARTICIPANTS
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let fields: Vec<&'static str> = line.split('\t').collect();
            let [
                group,
                number,
                e164,
                international,
                national,
                region,
                name,
                calling_code,
                location,
                _source,
            ] = fields[..]
            else {
                panic!("{line:?}: expected 10 tab-separated fields");
            };
            Reference {
                group,
                number,
                e164,
                international,
                national,
                region,
                name,
                calling_code,
                location,
            }
        })
        .filter(|row| row.group == group)
        .collect();
    assert!(!rows.is_empty(), "no {group} rows in the reference file");
    rows
}

/// The participant object the spec derives from a libphonenumber reference row.
fn expected(reference: &Reference) -> Value {
    let digits: String = reference
        .number
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    let e164_digits = reference
        .e164
        .strip_prefix('+')
        .expect("E.164 starts with +");
    json!({
        "e164Number": reference.e164,
        "formattedPhoneNumber": reference.international,
        "phoneNumber": reference.number,
        "digits": digits,
        "country": {"name": reference.name, "code": reference.region, "callingCode": reference.calling_code},
        "location": reference.location,
        "localPhoneNumber": reference.national,
        "E164digits": e164_digits,
    })
}

/// Builds every participant and lists each one that differs from its reference, key by key.
fn check(references: &[Reference]) {
    let mut failures = Vec::new();
    for reference in references {
        let json = build(reference.number).json;
        let actual: Value = serde_json::from_str(&json).expect("participant is JSON");
        let wanted = expected(reference);
        let (Some(actual), Some(wanted)) = (actual.as_object(), wanted.as_object()) else {
            panic!(
                "{:?}: participant {json} is not an object",
                reference.number
            );
        };
        let keys: BTreeSet<&String> = actual.keys().chain(wanted.keys()).collect();
        for key in keys {
            if actual.get(key) != wanted.get(key) {
                failures.push(format!(
                    "{:?} {key}: got {}, want {}",
                    reference.number,
                    actual.get(key).unwrap_or(&Value::Null),
                    wanted.get(key).unwrap_or(&Value::Null)
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "participants differ from libphonenumber 9.0.33 (tests/data/libphonenumber-participants.tsv):\n{}",
        failures.join("\n")
    );
}

/// Valid numbers across regions (US, CA, BS, GB, GG, DE, FR, AU, JP, IN, BR, RU, KZ, IT, CN, AR, MX, NZ,
/// SG), every key of the participant object compared with libphonenumber.
/// Why: the unit tests pin two numbers, so wrong E.164 digits (a mutant taking `E164digits` from the
/// digits as received: in `+44 (0)20 7946 0958` they keep the trunk 0, E.164 does not), a wrong
/// format, a region mix-up inside a shared calling code (CA and BS in +1, GG in +44, KZ in +7) or a
/// wrong location went unnoticed.
#[test]
fn valid_numbers_match_libphonenumber() {
    check(&references("valid"));
}

/// Calling codes that several regions share, with the main region libphonenumber's
/// `getRegionCodeForCountryCode` returns for each: the first region of its list in
/// CountryCodeToRegionCodeMap.java (v9.0.33). These are all twelve such codes.
const MAIN_REGIONS: [(&str, &str); 12] = [
    ("1", "US"),
    ("7", "RU"),
    ("39", "IT"),
    ("44", "GB"),
    ("47", "NO"),
    ("61", "AU"),
    ("212", "MA"),
    ("262", "RE"),
    ("290", "SH"),
    ("358", "FI"),
    ("590", "GP"),
    ("599", "CW"),
];

/// Invalid but internationally written numbers of every shared calling code: the country is the main
/// region of the code, and `location` is the country name even where the digits begin like a known area.
/// Why: a mutant placing an unplaceable +1 number in another NANP region went unnoticed; and the
/// geocoder gives an invalid number no description (`getDescriptionForNumber` returns "" for type
/// UNKNOWN), so "New Jersey" for a too-long +1 201 number would be invented.
#[test]
fn invalid_numbers_take_the_main_region_of_their_calling_code() {
    let rows = references("invalid");
    let main: BTreeMap<&str, &str> = MAIN_REGIONS.into_iter().collect();
    for row in &rows {
        assert_eq!(
            main.get(row.calling_code),
            Some(&row.region),
            "row {:?} must expect the main region of its calling code",
            row.number
        );
    }
    let covered: BTreeSet<&str> = rows.iter().map(|row| row.calling_code).collect();
    assert_eq!(
        covered,
        main.keys().copied().collect(),
        "the reference file needs an invalid number for every shared calling code"
    );
    check(&rows);
}

/// Numbers on which the code is known to disagree with libphonenumber 9.0.33, through the `phonenumber`
/// crate (0.3.10) or a geocoder rule it does not implement. Ignored so that the suite stays green; kept
/// so that each disagreement stays visible and is noticed once fixed:
/// `cargo test --test enrich_reference -- --ignored`.
/// - RU, BY, LT toll-free: the crate strips a leading 8 that belongs to the number as if it were the
///   national prefix (whisperfish/rust-phonenumber#76): `+7 800 123-45-67` becomes `+7001234567`;
/// - VA: the crate drops the leading 0 of `06 698…` when it picks the region, so VA's leading digits
///   `06698` never match and `+39 06 698 12345` is taken for IT;
/// - IT, too long: the crate accepts a number when a pattern matches a prefix of it, so it takes
///   `+39 021234567812` for valid and geocodes it (Milan); libphonenumber finds it invalid;
/// - BE, IE, TH, TW toll-free: libphonenumber describes only numbers of a geographical type (fixed line,
///   and mobile in a few countries); the code looks every valid number up by prefix, so Belgium's 0800
///   freephone numbers land in Stavelot (area code 080) and Ireland's 1800 in Dublin (area code 01).
///   The crate's `number_type` loses the leading zeros of Italian numbers, so that rule needs more than
///   a call to it;
/// - AR mobile: libphonenumber removes the mobile token 9 before geocoding
///   (`PhoneNumberOfflineGeocoder.getDescriptionForValidNumber`); the code does not.
#[test]
#[ignore = "known disagreements with libphonenumber, see the doc comment"]
fn known_disagreements_with_libphonenumber() {
    check(&references("known-disagreement"));
}
