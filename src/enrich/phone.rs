//! Phone numbers to GWS participant objects (call-resource.md, "Participants").
//!
//! Parsing with libphonenumber's rules is by far the costliest step of folding an event, and contact
//! centers see the same numbers again and again, so participants are built once per number and shared
//! (`Arc`) by every resource that has the number.

use super::{countries, geocode};
use crate::json::write_json_str;
use hashbrown::HashMap;
use std::sync::Arc;

/// One participant: the number as received and its participant object as compact JSON.
#[derive(Debug, PartialEq, Eq)]
pub struct Participant {
    /// The number as received (`phoneNumber`); identifies the party within a call.
    pub number: Box<str>,
    /// The participant object, serialized once.
    pub json: Box<str>,
}

/// Builds participants, remembering the most recent numbers.
#[derive(Debug)]
pub struct PhoneBook {
    cache: HashMap<Box<str>, Arc<Participant>>,
    capacity: usize,
}

/// How many numbers [`PhoneBook`] remembers by default.
pub const DEFAULT_CAPACITY: usize = 65_536;

impl Default for PhoneBook {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

impl PhoneBook {
    /// A phone book that remembers at most `capacity` numbers. When full it forgets them all and starts
    /// again: a participant is a pure function of its number, so forgetting costs only time, and the
    /// bound holds whatever numbers arrive.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            cache: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// The participant for `number`.
    pub fn participant(&mut self, number: &str) -> Arc<Participant> {
        if let Some(found) = self.cache.get(number) {
            return Arc::clone(found);
        }
        if self.cache.len() >= self.capacity {
            self.cache.clear();
        }
        let participant = Arc::new(build(number));
        self.cache.insert(number.into(), Arc::clone(&participant));
        participant
    }
}

/// Loads the phone-number metadata and geocoding data and compiles the number patterns of every region,
/// by enriching one example number of each. All of it happens lazily on first use otherwise, so the first
/// event with a number (80 ms here) or the first number of each new country (several ms) would stall the
/// stream while a live gateway is serving. Returns how many regions were warmed.
pub fn warm_up() -> usize {
    let mut regions = 0;
    for metadata in phonenumber::metadata::DATABASE.iter() {
        let descriptors = metadata.descriptors();
        for descriptor in [descriptors.fixed_line(), descriptors.mobile()]
            .into_iter()
            .flatten()
        {
            if let Some(example) = descriptor.example() {
                build(&format!("+{}{example}", metadata.country_code()));
            }
        }
        regions += 1;
    }
    regions
}

/// Builds the participant object for `number` (no caching).
pub fn build(number: &str) -> Participant {
    let digits: String = number.chars().filter(char::is_ascii_digit).collect();
    let mut json = String::with_capacity(256);
    match international(number) {
        Some(intl) => {
            json.push_str("{\"e164Number\":");
            write_json_str(&mut json, &intl.e164);
            json.push_str(",\"formattedPhoneNumber\":");
            write_json_str(&mut json, &intl.international);
            json.push_str(",\"phoneNumber\":");
            write_json_str(&mut json, number);
            json.push_str(",\"digits\":");
            write_json_str(&mut json, &digits);
            json.push_str(",\"country\":{\"name\":");
            write_json_str(&mut json, intl.country_name);
            json.push_str(",\"code\":");
            write_json_str(&mut json, &intl.country_code);
            json.push_str(",\"callingCode\":");
            write_json_str(&mut json, &intl.calling_code.to_string());
            json.push_str("},\"location\":");
            write_json_str(&mut json, intl.location);
            json.push_str(",\"localPhoneNumber\":");
            write_json_str(&mut json, &intl.national);
            json.push_str(",\"E164digits\":");
            write_json_str(&mut json, intl.e164.trim_start_matches('+'));
            json.push('}');
        }
        None => {
            json.push_str("{\"e164Number\":\"\",\"formattedPhoneNumber\":");
            write_json_str(&mut json, number);
            json.push_str(",\"phoneNumber\":");
            write_json_str(&mut json, number);
            json.push_str(",\"digits\":");
            write_json_str(&mut json, &digits);
            json.push('}');
        }
    }
    Participant {
        number: number.into(),
        json: json.into_boxed_str(),
    }
}

/// `number` in E.164 (`+14155550100`) when it is written internationally (a leading `+` and a known
/// country calling code), as participants show it.
pub fn e164(number: &str) -> Option<String> {
    international(number).map(|intl| intl.e164)
}

/// What an internationally written number adds to its participant.
struct International {
    e164: String,
    international: String,
    national: String,
    calling_code: u16,
    country_code: String,
    country_name: &'static str,
    location: &'static str,
}

fn international(number: &str) -> Option<International> {
    use phonenumber::Mode;
    if !number.trim_start().starts_with('+') {
        return None;
    }
    let parsed = phonenumber::parse(None, number).ok()?;
    let calling_code = parsed.code().value();
    let region = match parsed.country().id() {
        Some(id) => id.as_ref().to_owned(),
        // Invalid numbers have no region of their own: take the calling code's main region.
        None => phonenumber::metadata::DATABASE
            .region(&calling_code)?
            .first()?
            .to_string(),
    };
    let country_name = countries::country_name(&region)?;
    let e164 = parsed.format().mode(Mode::E164).to_string();
    // As in libphonenumber's geocoder, an invalid number has no geographic description, whatever area
    // its first digits would name (`+1 650 253 00001` is not in Mountain View): it gets its country.
    let location = if parsed.is_valid() {
        geocode::describe(e164.trim_start_matches('+')).unwrap_or(country_name)
    } else {
        country_name
    };
    Some(International {
        international: parsed.format().mode(Mode::International).to_string(),
        national: parsed.format().mode(Mode::National).to_string(),
        e164,
        calling_code,
        country_code: region,
        country_name,
        location,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(number: &str) -> serde_json::Value {
        serde_json::from_str(&build(number).json).unwrap()
    }

    #[test]
    fn international_number_gets_every_key() {
        assert_eq!(
            object("+14155550100"),
            serde_json::json!({"e164Number":"+14155550100","formattedPhoneNumber":"+1 415-555-0100",
                "phoneNumber":"+14155550100","digits":"14155550100",
                "country":{"name":"United States","code":"US","callingCode":"1"},
                "location":"San Francisco, CA","localPhoneNumber":"(415) 555-0100","E164digits":"14155550100"})
        );
        let gb = object("+44 20 7946 0958");
        assert_eq!(gb["e164Number"], "+442079460958");
        assert_eq!(gb["formattedPhoneNumber"], "+44 20 7946 0958");
        assert_eq!(gb["localPhoneNumber"], "020 7946 0958");
        assert_eq!(gb["phoneNumber"], "+44 20 7946 0958");
        assert_eq!(gb["digits"], "442079460958");
        assert_eq!(gb["country"]["name"], "United Kingdom");
        assert_eq!(gb["location"], "London");
    }

    #[test]
    fn canadian_number_is_placed_in_canada() {
        let ca = object("+14165550123");
        assert_eq!(ca["country"]["code"], "CA");
        assert_eq!(ca["country"]["name"], "Canada");
    }

    #[test]
    fn extension_and_national_numbers_are_not_international() {
        assert_eq!(
            object("7001"),
            serde_json::json!({"e164Number":"","formattedPhoneNumber":"7001","phoneNumber":"7001","digits":"7001"})
        );
        assert_eq!(object("0207 946 0958")["e164Number"], "");
        assert_eq!(object("+999123")["e164Number"], "");
    }

    #[test]
    fn warm_up_visits_every_region() {
        // libphonenumber 9.0.33 has metadata for over 240 regions; the warm-up must not stop early.
        let regions = warm_up();
        assert_eq!(regions, phonenumber::metadata::DATABASE.iter().count());
        assert!(regions > 240, "{regions}");
    }

    #[test]
    fn phone_book_shares_and_stays_bounded() {
        let mut book = PhoneBook::with_capacity(2);
        let a = book.participant("7001");
        assert!(Arc::ptr_eq(&a, &book.participant("7001")));
        // Under the bound, every number stays.
        let b = book.participant("7002");
        assert!(Arc::ptr_eq(&a, &book.participant("7001")));
        assert!(Arc::ptr_eq(&b, &book.participant("7002")));
        book.participant("7002");
        book.participant("7003");
        assert!(book.cache.len() <= 2);
        assert_eq!(*book.participant("7001"), *a);
    }
}
