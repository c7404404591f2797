//! Any bytes, split into lines, through the decoder and the reducer as `fold` runs them: nothing may panic,
//! and every notification must be a JSON object whose call is the one it names.

#![no_main]

use callgate::reduce::{Fold, Notifications};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut reducer = Fold::default();
    let mut out = Notifications::default();
    for line in data.split(|&b| b == b'\n') {
        let _ = reducer.apply_line(line, &mut out);
        for notification in out.iter() {
            let value: serde_json::Value =
                serde_json::from_str(&format!("{{{}}}", notification.members))
                    .expect("a notification is JSON");
            assert!(value["data"]["call"]["id"].is_string(), "{value}");
        }
        out.clear();
    }
});
