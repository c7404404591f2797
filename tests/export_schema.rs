//! The JSON Schemas of docs/schemas/ (docs/export.md, "Schemas") hold for what callgate writes: every
//! record of `callgate export` of a real gateway's journal (a simulated hour, then device events that
//! bring out the optional members of a device) validates against the envelope schema, which pulls in
//! the notification and CDR schemas through `$ref`s resolved to the local files; the records show the
//! cross-member rules a schema cannot say; and hand-broken records are refused.

mod export_run;
mod support;

use jsonschema::{Resource, Validator};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use support::durable::an_hour;

const EVENT: &str = "callgate.tserver.event.v1";
const CALL_NOTIFICATION: &str = "callgate.call.notification.v1";
const DEVICE_NOTIFICATION: &str = "callgate.device.notification.v1";
const QUEUE_NOTIFICATION: &str = "callgate.queue.notification.v1";
const CDR: &str = "callgate.call.cdr.v1";

fn schema(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs/schemas")
        .join(format!("{name}.schema.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("{} ships: {err}", path.display()));
    let schema: Value =
        serde_json::from_str(&text).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema",
        "{}",
        path.display()
    );
    if let Err(err) = jsonschema::draft202012::meta::validate(&schema) {
        panic!("{} is no valid draft 2020-12 schema: {err}", path.display());
    }
    schema
}

/// The envelope's validator. The schemas it names are registered under their `$id`s, read from the
/// files: this build of jsonschema fetches nothing, so a `$ref` to anything else fails the build.
fn validator() -> Validator {
    let mut options = jsonschema::options().with_draft(jsonschema::Draft::Draft202012);
    for name in [
        "call-notification.v1",
        "device-notification.v1",
        "queue-notification.v1",
        "cdr.v1",
    ] {
        let contents = schema(name);
        let id = contents["$id"]
            .as_str()
            .expect("every schema has an $id")
            .to_owned();
        options = options.with_resource(id, Resource::from_contents(contents));
    }
    options
        .build(&schema("cloudevent.v1"))
        .expect("the schemas are valid and every $ref resolves")
}

fn errors(validator: &Validator, record: &Value) -> Vec<String> {
    validator
        .iter_errors(record)
        .map(|error| format!("{} at {}", error, error.instance_path()))
        .collect()
}

/// Device events after the hour, numbered on from `after` (one without a number), so that the export
/// shows what the simulator never does: do-not-disturb, forwarding, a supervisor's monitoring, a DN out
/// of service, a walk-away with its reason, an international DN, and an event with neither ConnID nor DN.
fn device_events(after: u64) -> Vec<(u64, String)> {
    let lines = [
        json!({"event": "EventDNDOn", "ThisDN": "7001"}),
        json!({"event": "EventForwardSet", "ThisDN": "7001", "OtherDN": "7002"}),
        json!({"event": "EventMonitoringNextCall", "ThisDN": "7901", "OtherDN": "7003", "MonitorNextCallType": 1}),
        json!({"event": "EventDNOutOfService", "ThisDN": "7004"}),
        json!({"event": "EventAgentNotReady", "ThisDN": "7005", "AgentWorkMode": "AgentWalkAway", "Reasons": {"ReasonCode": "Coffee"}}),
        json!({"event": "EventDNDOn", "ThisDN": "+14155550199"}),
        json!({"event": "EventUserEvent"}),
        json!({"event": "EventDNDOff", "ThisDN": "7001"}),
        json!({"event": "EventForwardCancel", "ThisDN": "7001"}),
        json!({"event": "EventMonitoringCancelled", "ThisDN": "7901", "OtherDN": "7003"}),
        json!({"event": "EventDNBackInService", "ThisDN": "7004"}),
    ];
    let mut sequence = after;
    lines
        .into_iter()
        .map(|mut line| {
            // EventDNDOff goes unnumbered: its record is named by its journal position.
            if line["event"] != "EventDNDOff" {
                sequence += 1;
                line["EventSequenceNumber"] = sequence.into();
            }
            (sequence, line.to_string())
        })
        .collect()
}

/// What the records must show beyond the schemas: members that repeat one another, by type.
fn check_cross_members(record: &Value) {
    let text = || record.to_string();
    let id = record["id"].as_str().expect("id");
    let data = &record["data"];
    match record["type"].as_str().expect("type") {
        EVENT => {
            let server = data["Server"].as_str().unwrap_or("");
            let want = format!("callgate://{}/tserver/{server}", export_run::NODE);
            assert_eq!(record["source"], want.as_str(), "{}", text());
            if data.get("TimeinSecs").is_none() && data.get("Time").is_none() {
                assert_eq!(record["time"], record["recordedtime"], "{}", text());
            }
            let tail = id.rsplit(':').next().expect("id");
            match record.get("sequence") {
                Some(sequence) => {
                    let sequence: u64 = sequence.as_str().expect("string").parse().expect("digits");
                    assert_eq!(data["EventSequenceNumber"], sequence, "{}", text());
                    assert_eq!(tail, sequence.to_string(), "{}", text());
                }
                None => {
                    let position: u64 = record["position"]
                        .as_str()
                        .expect("a journal position")
                        .parse()
                        .expect("digits");
                    assert_eq!(tail, format!("p{position}"), "{}", text());
                }
            }
        }
        CALL_NOTIFICATION => {
            assert_eq!(record["subject"], data["data"]["call"]["id"], "{}", text());
        }
        DEVICE_NOTIFICATION => {
            assert_eq!(
                record["subject"],
                data["data"]["devices"][0]["id"],
                "{}",
                text()
            );
        }
        QUEUE_NOTIFICATION => {
            assert_eq!(record["subject"], data["data"]["queue"]["id"], "{}", text());
        }
        CDR => {
            let cdr_id = data["cdrId"].as_str().expect("cdrId");
            assert_eq!(id, format!("{cdr_id}:{}", data["version"]), "{}", text());
            assert_eq!(record["subject"], data["rootConnId"], "{}", text());
            assert_eq!(record["time"], data["endTime"], "{}", text());
            let server = data["server"].as_str().expect("server");
            let want = format!("callgate://{}/tserver/{server}", export_run::NODE);
            assert_eq!(record["source"], want.as_str(), "{}", text());
        }
        other => panic!("type {other}"),
    }
}

/// Optional members and variants that the run must bring out, so that the schemas' optional parts are
/// checked against real records: (what, whether a record shows it).
type Sighting = (&'static str, fn(&Value) -> bool);

const SIGHTINGS: [Sighting; 16] = [
    ("an event with neither ConnID nor DN", |r| {
        r["type"] == EVENT && r.get("subject").is_none()
    }),
    ("an event without a number", |r| {
        r["type"] == EVENT && r.get("sequence").is_none()
    }),
    ("a call notification with extensions", |r| {
        r["data"]["data"].get("extensions").is_some()
    }),
    ("a call with userData", |r| {
        call(r).is_some_and(|c| c.get("userData").is_some())
    }),
    ("a call without userData", |r| {
        call(r).is_some_and(|c| c.get("userData").is_none())
    }),
    ("a call with previousConnId", |r| {
        call(r).is_some_and(|c| c.get("previousConnId").is_some())
    }),
    ("a consultation with its parent", |r| {
        call(r).is_some_and(|c| c.get("parentCallUri").is_some())
    }),
    ("an international participant", |r| {
        participant(r, |p| p.get("country").is_some())
    }),
    ("a local participant", |r| {
        participant(r, |p| p["e164Number"] == "")
    }),
    ("a device forwarding calls", |r| {
        device(r).is_some_and(|d| d.get("forwardTo").is_some())
    }),
    ("a supervisor monitoring", |r| {
        device(r).is_some_and(|d| d.get("supervisorMonitoringState").is_some())
    }),
    ("a supervisor's capabilities", |r| {
        device(r).is_some_and(|d| d["capabilities"].as_array().is_some_and(|c| c.len() == 6))
    }),
    ("a device out of service", |r| {
        device(r).is_some_and(|d| d["deviceState"] == "Inactive")
    }),
    ("a device on do-not-disturb", |r| {
        device(r).is_some_and(|d| d["doNotDisturb"] == "On")
    }),
    ("an international device", |r| {
        device(r).is_some_and(|d| d["telephonyNetwork"] == "Public")
    }),
    ("a not-ready reason", |r| {
        device(r).is_some_and(|d| d["userState"].get("reason").is_some())
    }),
];

fn call(record: &Value) -> Option<&Value> {
    record["data"]["data"].get("call")
}

fn device(record: &Value) -> Option<&Value> {
    record["data"]["data"].get("devices")?.get(0)
}

fn participant(record: &Value, pred: fn(&Value) -> bool) -> bool {
    call(record)
        .and_then(|c| c["participants"].as_array())
        .is_some_and(|parties| parties.iter().any(pred))
}

#[test]
fn every_exported_record_validates_against_the_schemas() {
    let mut lines = an_hour(17);
    let last = lines.last().expect("events").0;
    lines.extend(device_events(last));
    let (dir, export) = export_run::export_of_a_run("export-schema", &lines);

    let validator = validator();
    let mut per_type: BTreeMap<String, usize> = BTreeMap::new();
    let mut seen = [false; SIGHTINGS.len()];
    let mut seqs = Vec::new();
    for (number, line) in export.lines().enumerate() {
        let record: Value = serde_json::from_str(line)
            .unwrap_or_else(|err| panic!("line {}: {err}: {line}", number + 1));
        let problems = errors(&validator, &record);
        assert!(
            problems.is_empty(),
            "line {}: {problems:?}\n{line}",
            number + 1
        );
        check_cross_members(&record);
        let kind = record["type"].as_str().expect("type");
        if [CALL_NOTIFICATION, DEVICE_NOTIFICATION, QUEUE_NOTIFICATION].contains(&kind) {
            let id = record["id"].as_str().expect("id");
            let (_, seq) = id.rsplit_once(':').expect("<epoch>:<seq>");
            seqs.push(seq.parse::<u64>().expect("seq"));
        }
        *per_type.entry(kind.to_owned()).or_default() += 1;
        for (seen, (_, shows)) in seen.iter_mut().zip(SIGHTINGS) {
            *seen |= shows(&record);
        }
    }
    eprintln!("validated {per_type:?}");
    for kind in [
        EVENT,
        CALL_NOTIFICATION,
        DEVICE_NOTIFICATION,
        QUEUE_NOTIFICATION,
        CDR,
    ] {
        assert!(
            per_type.get(kind).is_some_and(|n| *n > 0),
            "no {kind} record: {per_type:?}"
        );
    }
    assert_eq!(per_type[EVENT], lines.len(), "one record per event");
    assert!(per_type[CDR] > 100, "{per_type:?}");
    let missing: Vec<&str> = SIGHTINGS
        .iter()
        .zip(seen)
        .filter(|(_, seen)| !seen)
        .map(|((what, _), _)| *what)
        .collect();
    assert!(missing.is_empty(), "the run never showed {missing:?}");
    // A fresh journal's stream: the notifications are seq 1, 2, 3, ... in order.
    assert!(
        seqs.iter().copied().eq(1..=seqs.len() as u64),
        "notification seqs have gaps"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// One good record of each type, as callgate writes them (the CDR is fixture 01's first).
fn good_records() -> [Value; 4] {
    let event = json!({
        "specversion": "1.0", "id": "SIPTS750:7:1041", "source": "callgate://gw1/tserver/SIPTS750",
        "type": EVENT, "subject": "006f02a7b8c9d001", "time": "2025-11-23T12:13:20.250Z",
        "datacontenttype": "application/json", "sequence": "00000000000000001041",
        "position": "00000000000000000077", "recordedtime": "2025-11-23T12:13:20.260Z",
        "data": {"event": "EventRinging", "EventSequenceNumber": 1041, "ConnID": "006f02a7b8c9d001"}
    });
    let call = json!({
        "specversion": "1.0", "id": "18ecbdc26987cb1d-7450:42", "source": "callgate://gw1/stream",
        "type": CALL_NOTIFICATION, "subject": "QK59HK4FS927D7FUU41G6IE400000000",
        "time": "2025-11-23T12:13:20.250Z", "datacontenttype": "application/json",
        "sequence": "00000000000000001041", "position": "00000000000000000077",
        "data": {"channel": "/v2/me/calls", "data": {
            "notificationType": "StatusChange",
            "call": {
                "id": "QK59HK4FS927D7FUU41G6IE400000000", "state": "Established",
                "callUuid": "QK59HK4FS927D7FUU41G6IE400000000", "connId": "006f000000000000",
                "deviceUri": "http://127.0.0.1:8080/api/v2/devices/fb5df13b-5c9d-5880-b795-abcdd6ccf803",
                "participants": [{"e164Number": "", "formattedPhoneNumber": "7002", "phoneNumber": "7002", "digits": "7002"}],
                "dnis": "8001", "callType": "Inbound",
                "capabilities": ["Hangup", "Hold", "SendDtmf", "AttachUserData"],
                "userData": {"AccountNumber": "00000000", "IVR": {"Attempts": 3}},
                "duration": "0", "mute": "Off", "recordingState": "Stopped",
                "supervisorListeningIn": false, "monitoredUserMuted": false, "monitoring": false,
                "uri": "http://127.0.0.1:8080/api/v2/me/calls/QK59HK4FS927D7FUU41G6IE400000000",
                "path": "/calls/QK59HK4FS927D7FUU41G6IE400000000"
            },
            "phoneNumber": "10000", "messageType": "CallStateChangeMessage"
        }}
    });
    let device = json!({
        "specversion": "1.0", "id": "18ecbdc26987cb1d-7450:43", "source": "callgate://gw1/stream",
        "type": DEVICE_NOTIFICATION, "subject": "e3fa2f77-9306-58ee-a2fc-967d433ea2f5",
        "time": "2025-11-23T12:13:20.250Z", "datacontenttype": "application/json",
        "position": "00000000000000000078",
        "data": {"channel": "/v2/me/devices", "data": {
            "messageType": "DeviceStateChangeMessage",
            "devices": [{
                "id": "e3fa2f77-9306-58ee-a2fc-967d433ea2f5", "deviceState": "Active",
                "userState": {"id": "NotReady-AfterCallWork", "displayName": "After Call Work",
                              "state": "NotReady", "workMode": "AfterCallWork"},
                "phoneNumber": "7003", "e164Number": "7003", "telephonyNetwork": "Private",
                "doNotDisturb": "Off", "capabilities": ["DoNotDisturbOn", "ForwardCallsOn"],
                "agentId": "agent3",
                "uri": "http://127.0.0.1:8080/api/v2/devices/e3fa2f77-9306-58ee-a2fc-967d433ea2f5"
            }]
        }}
    });
    let fixture = support::fixture("01-inbound-via-queue").join("cdr.json");
    let records: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(fixture).expect("fixture")).expect("JSON");
    let data = records.into_iter().next().expect("a record");
    let cdr = json!({
        "specversion": "1.0",
        "id": format!("{}:{}", data["cdrId"].as_str().expect("cdrId"), data["version"]),
        "source": format!("callgate://gw1/tserver/{}", data["server"].as_str().expect("server")),
        "type": CDR, "subject": data["rootConnId"], "time": data["endTime"],
        "datacontenttype": "application/json", "position": "00000000000000000079",
        "data": data
    });
    [event, call, device, cdr]
}

/// `record` with the member at `pointer` set to `value`, or removed (`None`).
fn broken(record: &Value, pointer: &str, value: Option<Value>) -> Value {
    let mut record = record.clone();
    let (parent, key) = pointer.rsplit_once('/').expect("a JSON pointer");
    let parent = record
        .pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .unwrap_or_else(|| panic!("{parent} is an object"));
    match value {
        Some(value) => parent.insert(key.to_owned(), value),
        None => parent.remove(key),
    };
    record
}

#[test]
fn the_schemas_refuse_broken_records() {
    let validator = validator();
    // The `$ref`s go to the files registered: without them the envelope does not even build.
    assert!(jsonschema::draft202012::new(&schema("cloudevent.v1")).is_err());
    let [event, call, device, cdr] = good_records();
    for good in [&event, &call, &device, &cdr] {
        let problems = errors(&validator, good);
        assert!(problems.is_empty(), "{problems:?}\n{good}");
    }
    let one_device = &device["data"]["data"]["devices"][0];
    let cases = [
        ("no id", broken(&event, "/id", None)),
        (
            "an unknown type",
            broken(&event, "/type", Some("callgate.call.cdr.v2".into())),
        ),
        (
            "a type of another record",
            broken(&event, "/type", Some(CDR.into())),
        ),
        (
            "a time without milliseconds",
            broken(&event, "/time", Some("2025-11-23T12:13:20Z".into())),
        ),
        (
            "a time with an offset",
            broken(
                &event,
                "/time",
                Some("2025-11-23T12:13:20.250+01:00".into()),
            ),
        ),
        (
            "a time with a space",
            broken(&event, "/time", Some("2025-11-23 12:13:20.250Z".into())),
        ),
        ("a null time", broken(&event, "/time", Some(Value::Null))),
        (
            "an event without recordedtime",
            broken(&event, "/recordedtime", None),
        ),
        (
            "an event whose data is no object",
            broken(&event, "/data", Some("EventRinging".into())),
        ),
        (
            "a sequence of 4 digits",
            broken(&event, "/sequence", Some("1041".into())),
        ),
        (
            "position 0",
            broken(&event, "/position", Some("00000000000000000000".into())),
        ),
        (
            "another specversion",
            broken(&event, "/specversion", Some("0.3".into())),
        ),
        (
            "a member CloudEvents has not",
            broken(&event, "/dataschema", Some("x".into())),
        ),
        (
            "another source",
            broken(
                &event,
                "/source",
                Some("https://gw1/tserver/SIPTS750".into()),
            ),
        ),
        (
            "a notification with recordedtime",
            broken(
                &call,
                "/recordedtime",
                Some("2025-11-23T12:13:20.260Z".into()),
            ),
        ),
        (
            "a notification without subject",
            broken(&call, "/subject", None),
        ),
        (
            "a call notification on the devices channel",
            broken(&call, "/data/channel", Some("/v2/me/devices".into())),
        ),
        (
            "a call without connId",
            broken(&call, "/data/data/call/connId", None),
        ),
        (
            "a call in an unknown state",
            broken(&call, "/data/data/call/state", Some("Alerting".into())),
        ),
        (
            "a parentCallUri without parentCallPath",
            broken(
                &call,
                "/data/data/call/parentCallUri",
                Some("http://gw/api/v2/me/calls/P".into()),
            ),
        ),
        (
            "an unknown capability",
            broken(
                &call,
                "/data/data/call/capabilities",
                Some(json!(["Hangup", "Teleport"])),
            ),
        ),
        (
            "a true in userData",
            broken(
                &call,
                "/data/data/call/userData",
                Some(json!({"VIP": true})),
            ),
        ),
        (
            "a local participant with a country",
            broken(
                &call,
                "/data/data/call/participants/0/country",
                Some(json!({"name": "France", "code": "FR", "callingCode": "33"})),
            ),
        ),
        (
            "a device notification of two devices",
            broken(
                &device,
                "/data/data/devices",
                Some(json!([one_device, one_device])),
            ),
        ),
        (
            "a not-ready state without work mode",
            broken(&device, "/data/data/devices/0/userState/workMode", None),
        ),
        (
            "do-not-disturb on with DoNotDisturbOn",
            broken(
                &device,
                "/data/data/devices/0/doNotDisturb",
                Some("On".into()),
            ),
        ),
        (
            "a device without uri",
            broken(&device, "/data/data/devices/0/uri", None),
        ),
        (
            "a CDR data missing a member",
            broken(&cdr, "/data/talkMs", None),
        ),
        (
            "a CDR data with a value outside its set",
            broken(&cdr, "/data/releasedBy", Some("customer".into())),
        ),
        (
            "a CDR whose subject is no ConnID",
            broken(&cdr, "/subject", Some("7001".into())),
        ),
        (
            "a CDR id without its version",
            broken(&cdr, "/id", Some(cdr["data"]["cdrId"].clone())),
        ),
    ];
    for (what, record) in cases {
        assert!(
            !errors(&validator, &record).is_empty(),
            "the schemas let through {what}:\n{record}"
        );
    }
}
