//! The UserData attached to inbound calls: what an IVR would have collected, and the keys agents add.

use super::Rng;

/// The UserData an inbound call arrives with, as a JSON object.
pub(super) fn arrival_user_data(rng: &mut Rng) -> String {
    const SEGMENTS: [&str; 3] = ["Gold", "Silver", "Bronze"];
    const SERVICES: [&str; 3] = ["Sales", "Support", "Billing"];
    const LANGUAGES: [&str; 3] = ["en", "es", "fr"];
    format!(
        r#"{{"AccountNumber":"{:08}","Segment":"{}","ServiceType":"{}","Language":"{}","IVRPath":{{"Menu":"{}","Attempts":{}}}}}"#,
        rng.below(100_000_000),
        SEGMENTS[rng.below(3) as usize],
        SERVICES[rng.below(3) as usize],
        LANGUAGES[rng.below(3) as usize],
        1 + rng.below(4),
        1 + rng.below(3),
    )
}

/// `data` (a flat-or-nested JSON object written by this module) with `key` set to the string `value`.
pub(super) fn with_key(data: &str, key: &str, value: &str) -> String {
    let needle = format!(r#","{key}":""#);
    let body = data.strip_suffix('}').unwrap_or(data);
    let body = match body.find(&needle) {
        Some(at) => {
            let rest = &body[at + needle.len()..];
            let end = rest
                .find('"')
                .map_or(body.len(), |e| at + needle.len() + e + 1);
            format!("{}{}", &body[..at], &body[end..])
        }
        None => body.to_owned(),
    };
    format!(r#"{body},"{key}":"{value}"}}"#)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_key_adds_and_replaces() {
        let data = r#"{"A":"1","N":{"x":1}}"#;
        let once = with_key(data, "GSIP_RECORD", "ON");
        assert_eq!(once, r#"{"A":"1","N":{"x":1},"GSIP_RECORD":"ON"}"#);
        assert_eq!(
            with_key(&once, "GSIP_RECORD", "OFF"),
            r#"{"A":"1","N":{"x":1},"GSIP_RECORD":"OFF"}"#
        );
    }
}
