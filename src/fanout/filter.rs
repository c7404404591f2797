//! Subscription filters (api.md): a call matches when, for every member given, its value is in the list.

use crate::event::ConnId;
use crate::store::CallMeta;
use serde::Deserialize;

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

    /// Whether the call matches.
    pub fn matches(&self, call: &CallMeta) -> bool {
        fn allows(values: &Option<Vec<String>>, value: &str) -> bool {
            values
                .as_ref()
                .is_none_or(|list| list.iter().any(|v| v == value))
        }
        allows(&self.dn, &call.dn)
            && allows(&self.device_id, &call.device_id)
            && allows(&self.call_id, &call.call_id)
            && allows(&self.state, call.state.as_str())
            && self
                .conn_id
                .as_ref()
                .is_none_or(|list| list.iter().any(|v| *v == call.conn_id.to_string()))
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

#[cfg(test)]
mod tests {
    use super::*;
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
}
