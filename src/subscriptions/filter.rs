//! Subscription filters (api.md): a call matches when, for every member given, its value is in the list;
//! and scope (access.md): the devices a subscriber may see at all.
//!
//! [`CallFilter`] is the request as clients send it (WebSocket JSON, REST query string). A subscription
//! compiles it with its scope into a [`Matcher`]: sets for the string members, parsed ConnIDs, a bit mask
//! of states, so that matching a notification allocates nothing and costs the same whatever the list
//! lengths, under the stream's lock.

use crate::event::ConnId;
use crate::reduce::{CallState, Topic};
use crate::store::{CallMeta, DeviceMeta, Lookup, Meta};
use hashbrown::HashSet;
use serde::Deserialize;
use std::sync::Arc;

/// The most values a filter member may list.
pub const MAX_FILTER_VALUES: usize = 1024;

/// A filter as clients send it, and as REST takes it from the query string.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CallFilter {
    /// Device DNs.
    pub dn: Option<Vec<String>>,
    /// Device ids.
    pub device_id: Option<Vec<String>>,
    /// Call ids.
    pub call_id: Option<Vec<String>>,
    /// ConnIDs (any case, zero-padding optional).
    pub conn_id: Option<Vec<String>>,
    /// States (`Ringing`, `Established`, ...).
    pub state: Option<Vec<String>>,
}

/// Why a filter was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// A member lists too many values.
    #[error("filter member {0} lists more than {MAX_FILTER_VALUES} values")]
    TooManyValues(&'static str),
}

impl CallFilter {
    /// Checks the bounds and normalises ConnIDs.
    pub fn validated(mut self) -> Result<Self, FilterError> {
        for (name, values) in [
            ("dn", &self.dn),
            ("deviceId", &self.device_id),
            ("callId", &self.call_id),
            ("connId", &self.conn_id),
            ("state", &self.state),
        ] {
            if values.as_ref().is_some_and(|v| v.len() > MAX_FILTER_VALUES) {
                return Err(FilterError::TooManyValues(name));
            }
        }
        if let Some(conn_ids) = &mut self.conn_id {
            for value in conn_ids.iter_mut() {
                if let Some(conn_id) = ConnId::parse(value) {
                    *value = conn_id.to_string();
                }
            }
        }
        Ok(self)
    }

    /// Whether every member is absent: every call matches.
    pub fn is_empty(&self) -> bool {
        *self == CallFilter::default()
    }

    /// Builds a filter from a URL query string (`dn=7001&dn=7002&state=Established`).
    pub fn from_query(query: &str) -> Result<Self, String> {
        let mut filter = CallFilter::default();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            let list = match &*key {
                "dn" => &mut filter.dn,
                "deviceId" => &mut filter.device_id,
                "callId" => &mut filter.call_id,
                "connId" => &mut filter.conn_id,
                "state" => &mut filter.state,
                other => return Err(format!("unknown query parameter {other:?}")),
            };
            list.get_or_insert_with(Vec::new).push(value.into_owned());
        }
        filter.validated().map_err(|err| err.to_string())
    }
}

/// The devices a subscriber may see (access.md): every device, or a set of device ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Scope {
    /// Every device (an administrator, or the gateway without an access file).
    #[default]
    All,
    /// These devices only (by device id); shared by every subscription of principals with the same scope.
    Devices(Arc<HashSet<Arc<str>>>),
}

impl Scope {
    fn allows(&self, call: &CallMeta) -> bool {
        self.allows_device(&call.device_id)
    }

    /// Whether the device `device_id` is in scope.
    pub fn allows_device(&self, device_id: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Devices(devices) => devices.contains(device_id),
        }
    }
}

/// The topics of a subscription (api.md `topics`): which kinds of notification it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topics(u8);

impl Topics {
    /// No topic at all.
    pub const NONE: Topics = Topics(0);
    /// Calls only: what a subscription without `topics` gets.
    pub const CALLS: Topics = Topics(1);
    /// Devices only.
    pub const DEVICES: Topics = Topics(2);
    /// Queues only.
    pub const QUEUES: Topics = Topics(4);

    fn bit(topic: Topic) -> u8 {
        match topic {
            Topic::Calls => 1,
            Topic::Devices => 2,
            Topic::Queues => 4,
        }
    }

    /// The topics named in `names`; the first unknown name is the error.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Topics, &'a str> {
        let mut bits = 0;
        for name in names {
            bits |= Topic::from_name(name).map(Topics::bit).ok_or(name)?;
        }
        Ok(Topics(bits))
    }

    /// Whether `topic` is one of them.
    pub fn contains(self, topic: Topic) -> bool {
        self.0 & Topics::bit(topic) != 0
    }

    /// Both sets' topics.
    #[must_use]
    pub fn with(self, other: Topics) -> Topics {
        Topics(self.0 | other.0)
    }
}

/// One string member of a filter: its distinct values as a list (for index lookups) and as a set.
#[derive(Debug, Clone)]
struct Values {
    list: Box<[Arc<str>]>,
    set: HashSet<Arc<str>>,
}

impl Values {
    fn new(values: Vec<String>) -> Self {
        let set: HashSet<Arc<str>> = values.into_iter().map(Arc::from).collect();
        let mut list: Vec<Arc<str>> = set.iter().cloned().collect();
        list.sort_unstable();
        Self {
            list: list.into(),
            set,
        }
    }

    fn allows(values: &Option<Values>, value: &str) -> bool {
        values.as_ref().is_none_or(|v| v.set.contains(value))
    }
}

/// A filter compiled with a scope: what a subscription or a REST query matches calls with.
#[derive(Debug, Clone)]
pub struct Matcher {
    dn: Option<Values>,
    device_id: Option<Values>,
    call_id: Option<Values>,
    /// ConnIDs; a value that is not a ConnID can match no call and is left out.
    conn_id: Option<HashSet<ConnId>>,
    /// Bit `1 << state as u8` for each state listed.
    states: Option<u8>,
    scope: Scope,
    /// The filter has no member.
    unfiltered: bool,
    /// Every call of the scope matches: no member and no scope restriction.
    everything: bool,
    /// The device ids of a device scope, as a list for index lookups; empty for a scope too large to
    /// file under (see [`MAX_SCOPE_KEYS`]).
    scope_list: Box<[Arc<str>]>,
    /// What kinds of notification it receives.
    topics: Topics,
    /// Whether a member that only calls have (callId, connId, state) is given: no device can match.
    call_members: bool,
}

/// A scope of more devices than this (a supervisor of a large team) files its subscription among the
/// broad ones, tried against every notification with one set lookup, rather than under every device:
/// ten thousand index entries per wallboard would cost more memory and subscribe time than the lookups.
pub const MAX_SCOPE_KEYS: usize = 256;

fn scope_list(scope: &Scope) -> Box<[Arc<str>]> {
    match scope {
        Scope::Devices(devices) if devices.len() <= MAX_SCOPE_KEYS => {
            let mut list: Vec<Arc<str>> = devices.iter().cloned().collect();
            list.sort_unstable();
            list.into()
        }
        _ => Box::default(),
    }
}

/// Which index of subscribers a matcher is filed under (see [`crate::subscriptions`]).
#[derive(Debug, Clone, Copy)]
pub enum IndexKeys<'a> {
    /// Every notification: no member and no scope.
    Everything,
    /// No selective member: tried against every notification.
    Broad,
    /// By DN.
    Dn(&'a [Arc<str>]),
    /// By device id.
    Device(&'a [Arc<str>]),
    /// By call id.
    Call(&'a [Arc<str>]),
}

impl Matcher {
    /// Compiles a validated filter with the subscriber's scope, for calls.
    pub fn new(filter: CallFilter, scope: Scope) -> Self {
        Self::for_topics(filter, scope, Topics::CALLS)
    }

    /// Compiles a validated filter with the subscriber's scope, for `topics`. A device matches when its
    /// DN and id pass the `dn` and `deviceId` members; a filter with a member only calls have (`callId`,
    /// `connId`, `state`) matches no device.
    pub fn for_topics(filter: CallFilter, scope: Scope, topics: Topics) -> Self {
        let unfiltered = filter.is_empty();
        let call_members =
            filter.call_id.is_some() || filter.conn_id.is_some() || filter.state.is_some();
        let everything = unfiltered && scope == Scope::All;
        let states = filter.state.map(|names| {
            names
                .iter()
                .filter_map(|name| CallState::ALL.iter().find(|s| s.as_str() == name))
                .fold(0u8, |mask, state| mask | 1 << *state as u8)
        });
        let conn_id = filter.conn_id.map(|values| {
            values
                .iter()
                .filter_map(|value| ConnId::parse(value))
                .collect()
        });
        Self {
            unfiltered,
            dn: filter.dn.map(Values::new),
            device_id: filter.device_id.map(Values::new),
            call_id: filter.call_id.map(Values::new),
            conn_id,
            states,
            scope_list: scope_list(&scope),
            scope,
            everything,
            topics,
            call_members,
        }
    }

    /// The same filter with another scope (the access file was reloaded).
    pub fn rescoped(&self, scope: Scope) -> Self {
        Self {
            dn: self.dn.clone(),
            device_id: self.device_id.clone(),
            call_id: self.call_id.clone(),
            conn_id: self.conn_id.clone(),
            states: self.states,
            unfiltered: self.unfiltered,
            everything: self.unfiltered && scope == Scope::All,
            scope_list: scope_list(&scope),
            scope,
            topics: self.topics,
            call_members: self.call_members,
        }
    }

    /// Every notification of `topic` matches (no member, no scope, and the topic is one of its own).
    /// Queues are shown whole to whoever may subscribe to them (supervisors, admins: the doors check):
    /// neither filter members nor device scope apply to them.
    pub fn everything(&self, topic: Topic) -> bool {
        match topic {
            Topic::Queues => self.topics.contains(Topic::Queues),
            _ => self.everything && self.topics.contains(topic),
        }
    }

    /// Its topics.
    pub fn topics(&self) -> Topics {
        self.topics
    }

    /// Whether the notification about `meta` matches.
    pub fn matches_meta(&self, meta: &Meta) -> bool {
        match meta {
            Meta::Call(call) => self.topics.contains(Topic::Calls) && self.matches(call),
            Meta::Device(device) => self.matches_device(device),
            Meta::Queue(_) => self.topics.contains(Topic::Queues),
        }
    }

    /// Whether the device matches the filter, is in scope, and devices are among its topics.
    pub fn matches_device(&self, device: &DeviceMeta) -> bool {
        self.topics.contains(Topic::Devices)
            && (self.everything
                || (!self.call_members
                    && Values::allows(&self.dn, &device.dn)
                    && Values::allows(&self.device_id, &device.device_id)
                    && self.scope.allows_device(&device.device_id)))
    }

    /// Whether the call matches the filter and is in scope (whatever the topics: REST and snapshots ask
    /// this of calls only).
    pub fn matches(&self, call: &CallMeta) -> bool {
        self.everything
            || (Values::allows(&self.dn, &call.dn)
                && Values::allows(&self.device_id, &call.device_id)
                && Values::allows(&self.call_id, &call.call_id)
                && self
                    .states
                    .is_none_or(|mask| mask & (1 << call.state as u8) != 0)
                && self
                    .conn_id
                    .as_ref()
                    .is_none_or(|set| set.contains(&call.conn_id))
                && self.scope.allows(call))
    }

    /// The subscriber index to file it under: its most selective member, else its scope's devices.
    pub fn index_keys(&self) -> IndexKeys<'_> {
        if self.everything {
            IndexKeys::Everything
        } else if let Some(dn) = &self.dn {
            IndexKeys::Dn(&dn.list)
        } else if let Some(devices) = &self.device_id {
            IndexKeys::Device(&devices.list)
        } else if let Some(calls) = &self.call_id {
            IndexKeys::Call(&calls.list)
        } else if matches!(&self.scope, Scope::Devices(devices) if devices.len() <= MAX_SCOPE_KEYS)
        {
            IndexKeys::Device(&self.scope_list)
        } else {
            IndexKeys::Broad
        }
    }

    /// The store index that finds its candidates, for snapshots and REST.
    pub fn lookup(&self) -> Lookup<'_> {
        match self.index_keys() {
            IndexKeys::Everything | IndexKeys::Broad => Lookup::All,
            IndexKeys::Dn(values) => Lookup::Dns(values),
            IndexKeys::Device(values) => Lookup::Devices(values),
            IndexKeys::Call(values) => Lookup::Calls(values),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tests compare filters as clients send them; matching goes through the compiled form.
    trait Matches {
        fn matches(&self, call: &CallMeta) -> bool;
    }

    impl Matches for CallFilter {
        fn matches(&self, call: &CallMeta) -> bool {
            Matcher::new(self.clone(), Scope::All).matches(call)
        }
    }
    use crate::reduce::CallState;
    use crate::store::CallKey;

    fn call() -> CallMeta {
        CallMeta {
            key: CallKey {
                shard: 0,
                number: 1,
            },
            dn: "7001".into(),
            device_id: "dev".into(),
            call_id: "C1".into(),
            conn_id: ConnId(0x1a),
            state: CallState::Established,
        }
    }

    #[test]
    fn every_member_given_must_match() {
        assert!(CallFilter::default().matches(&call()));
        let f = CallFilter::from_query("dn=7002&dn=7001&state=Established").unwrap();
        assert!(f.matches(&call()));
        let f = CallFilter::from_query("dn=7001&state=Ringing").unwrap();
        assert!(!f.matches(&call()));
        let f = CallFilter::from_query("connId=1A").unwrap();
        assert!(f.matches(&call()), "ConnIDs are normalised");
        assert!(CallFilter::from_query("colour=red").is_err());
    }

    // A call whose five filterable values all differ, and none of which is a value of another member (the
    // ConnID's text is not a DN, device id, call id or state), so a member compared against the wrong field
    // cannot pass.
    const DN: &str = "7001";
    const DEVICE: &str = "dev-7001";
    const CALL: &str = "call-42";
    const CONN: &str = "000000000000001a";
    const STATE: &str = "Established";

    fn filter_on(member: &str, values: &[&str]) -> CallFilter {
        let values = Some(values.iter().map(|v| v.to_string()).collect());
        let mut filter = CallFilter::default();
        match member {
            "dn" => filter.dn = values,
            "deviceId" => filter.device_id = values,
            "callId" => filter.call_id = values,
            "connId" => filter.conn_id = values,
            "state" => filter.state = values,
            other => panic!("no member {other}"),
        }
        filter.validated().expect("valid filter")
    }

    const MEMBERS: [(&str, &str); 5] = [
        ("dn", DN),
        ("deviceId", DEVICE),
        ("callId", CALL),
        ("connId", CONN),
        ("state", STATE),
    ];

    fn distinct_call() -> CallMeta {
        CallMeta {
            key: CallKey {
                shard: 3,
                number: 9,
            },
            dn: DN.into(),
            device_id: DEVICE.into(),
            call_id: CALL.into(),
            conn_id: ConnId(0x1a),
            state: CallState::Established,
        }
    }

    #[test]
    fn each_member_is_matched_against_its_own_field_only() {
        let call = distinct_call();
        for (member, own) in MEMBERS {
            for (other_member, value) in MEMBERS {
                let filter = filter_on(member, &[value]);
                assert_eq!(
                    filter.matches(&call),
                    member == other_member,
                    "filter {member}=[{value}] (the call's {other_member}) on {call:?}"
                );
            }
            assert!(
                !filter_on(member, &["nothing-like-it"]).matches(&call),
                "{member}: an unknown value"
            );
            // Through the query string and the WebSocket's JSON too: each name lands in its own member.
            let query = CallFilter::from_query(&format!("{member}={own}")).unwrap();
            assert_eq!(query, filter_on(member, &[own]), "{member} from a query");
            let json: CallFilter =
                serde_json::from_value(serde_json::json!({ member: [own] })).unwrap();
            assert_eq!(
                json.validated().unwrap(),
                filter_on(member, &[own]),
                "{member} from JSON"
            );
        }
    }

    #[test]
    fn every_state_is_matched_by_its_own_name_only() {
        let states = [
            CallState::Ringing,
            CallState::Dialing,
            CallState::Established,
            CallState::Held,
            CallState::Released,
        ];
        let names = ["Ringing", "Dialing", "Established", "Held", "Released"];
        for state in states {
            let call = CallMeta {
                state,
                ..distinct_call()
            };
            for name in names {
                assert_eq!(
                    filter_on("state", &[name]).matches(&call),
                    state.as_str() == name,
                    "state=[{name}] on a {state:?} call"
                );
            }
        }
    }

    #[test]
    fn any_value_of_a_list_matches() {
        let call = distinct_call();
        for (member, own) in MEMBERS {
            let first = filter_on(member, &[own, "other-1", "other-2"]);
            let middle = filter_on(member, &["other-1", own, "other-2"]);
            let last = filter_on(member, &["other-1", "other-2", own]);
            let none = filter_on(member, &["other-1", "other-2"]);
            assert!(first.matches(&call), "{member}: first of three");
            assert!(middle.matches(&call), "{member}: middle of three");
            assert!(last.matches(&call), "{member}: last of three");
            assert!(!none.matches(&call), "{member}: none of two");
            assert!(
                !filter_on(member, &[]).matches(&call),
                "{member}: an empty list holds no value"
            );
        }
    }

    #[test]
    fn all_members_given_must_match_together() {
        let call = distinct_call();
        let all = CallFilter {
            dn: Some(vec![DN.into()]),
            device_id: Some(vec![DEVICE.into()]),
            call_id: Some(vec![CALL.into()]),
            conn_id: Some(vec!["1A".into()]),
            state: Some(vec!["Held".into(), STATE.into()]),
        }
        .validated()
        .unwrap();
        assert!(all.matches(&call), "every member matches");
        // One member that does not match is enough to refuse, whichever it is.
        for (member, _) in MEMBERS {
            let mut one_wrong = all.clone();
            let wrong = Some(vec!["wrong".to_owned()]);
            match member {
                "dn" => one_wrong.dn = wrong,
                "deviceId" => one_wrong.device_id = wrong,
                "callId" => one_wrong.call_id = wrong,
                "connId" => one_wrong.conn_id = wrong,
                _ => one_wrong.state = wrong,
            }
            assert!(!one_wrong.matches(&call), "{member} does not match");
        }
        // Pairs of members: both must match.
        for (a, a_value) in MEMBERS {
            for (b, b_value) in MEMBERS {
                if a >= b {
                    continue;
                }
                let both = CallFilter::from_query(&format!("{a}={a_value}&{b}={b_value}")).unwrap();
                assert!(both.matches(&call), "{a} and {b}");
                let second_wrong =
                    CallFilter::from_query(&format!("{a}={a_value}&{b}=wrong")).unwrap();
                assert!(!second_wrong.matches(&call), "{a} right, {b} wrong");
                let first_wrong =
                    CallFilter::from_query(&format!("{a}=wrong&{b}={b_value}")).unwrap();
                assert!(!first_wrong.matches(&call), "{a} wrong, {b} right");
            }
        }
    }

    #[test]
    fn conn_ids_match_in_any_case_with_or_without_padding() {
        let call = distinct_call();
        for value in [
            "1a",
            "1A",
            "01a",
            "001A",
            "000000000000001a",
            "000000000000001A",
        ] {
            assert!(filter_on("connId", &[value]).matches(&call), "{value}");
            assert!(
                CallFilter::from_query(&format!("connId={value}"))
                    .unwrap()
                    .matches(&call),
                "{value} from a query"
            );
        }
        for value in ["1b", "a1", "1a0", "0x1a", "", "0000000000000001a", "x1a"] {
            assert!(!filter_on("connId", &[value]).matches(&call), "{value}");
        }
        let big = CallMeta {
            conn_id: ConnId(0x006f_02a7_b8c9_d001),
            ..distinct_call()
        };
        assert!(filter_on("connId", &["006F02A7B8C9D001"]).matches(&big));
        assert!(filter_on("connId", &["6f02a7b8c9d001"]).matches(&big));
        assert!(!filter_on("connId", &["006f02a7b8c9d002"]).matches(&big));
        // Normalisation is of ConnIDs only: other members compare exactly.
        assert!(!filter_on("dn", &["7001 "]).matches(&call));
        assert!(!filter_on("callId", &["CALL-42"]).matches(&call));
        assert!(!filter_on("state", &["established"]).matches(&call));
    }

    #[test]
    fn queries_repeat_keys_decode_values_and_refuse_the_unknown() {
        assert_eq!(CallFilter::from_query("").unwrap(), CallFilter::default());
        let filter = CallFilter::from_query(
            "dn=7001&state=Ringing&dn=7002&deviceId=d1&callId=c1&dn=7003&callId=c2&connId=1A&state=Held",
        )
        .unwrap();
        assert_eq!(
            filter,
            CallFilter {
                dn: Some(vec!["7001".into(), "7002".into(), "7003".into()]),
                device_id: Some(vec!["d1".into()]),
                call_id: Some(vec!["c1".into(), "c2".into()]),
                conn_id: Some(vec!["000000000000001a".into()]),
                state: Some(vec!["Ringing".into(), "Held".into()]),
            }
        );
        // Percent-encoding and `+` (a space in a query string) are decoded, in values and in names.
        let filter =
            CallFilter::from_query("dn=%2B14155550100&callId=a+b%26c%3Dd&device%49d=x%2Fy")
                .unwrap();
        assert_eq!(filter.dn, Some(vec!["+14155550100".to_owned()]));
        assert_eq!(filter.call_id, Some(vec!["a b&c=d".to_owned()]));
        assert_eq!(filter.device_id, Some(vec!["x/y".to_owned()]));
        let call = CallMeta {
            dn: "+14155550100".into(),
            call_id: "a b&c=d".into(),
            device_id: "x/y".into(),
            ..distinct_call()
        };
        assert!(filter.matches(&call));
        // An empty value is a value.
        assert_eq!(
            CallFilter::from_query("dn=").unwrap().dn,
            Some(vec![String::new()])
        );
        // Unknown parameters, names in another case included, are refused and named.
        for query in [
            "colour=red",
            "dn=7001&colour=red",
            "deviceid=x",
            "DN=7001",
            "call_id=c",
        ] {
            let err = CallFilter::from_query(query).expect_err(query);
            let name = query.rsplit('&').next().unwrap().split('=').next().unwrap();
            assert!(err.contains(name), "{query}: {err}");
        }
        // At most MAX_FILTER_VALUES values a member.
        for member in ["dn", "deviceId", "callId", "connId", "state"] {
            let query = |n: usize| {
                (0..n)
                    .map(|i| format!("{member}={i}"))
                    .collect::<Vec<_>>()
                    .join("&")
            };
            assert!(
                CallFilter::from_query(&query(MAX_FILTER_VALUES)).is_ok(),
                "{member}: at the bound"
            );
            let err = CallFilter::from_query(&query(MAX_FILTER_VALUES + 1)).expect_err(member);
            assert!(err.contains(member), "{member}: {err}");
        }
    }

    #[test]
    fn json_filters_refuse_unknown_members_and_bound_their_lists() {
        assert!(serde_json::from_str::<CallFilter>(r#"{"colour":["red"]}"#).is_err());
        assert!(serde_json::from_str::<CallFilter>(r#"{"device_id":["x"]}"#).is_err());
        assert_eq!(
            serde_json::from_str::<CallFilter>("{}").unwrap(),
            CallFilter::default()
        );
        let many: Vec<String> = (0..=MAX_FILTER_VALUES).map(|i| i.to_string()).collect();
        let filter: CallFilter =
            serde_json::from_value(serde_json::json!({ "deviceId": many })).unwrap();
        assert_eq!(
            filter.validated(),
            Err(FilterError::TooManyValues("deviceId"))
        );
    }
}
