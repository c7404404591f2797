//! The events a script writes: one copy per monitored DN, with the attributes that copy carries.

use std::sync::Arc;

/// The identity that every event of one call carries: ConnID, CallUUID and CallType.
pub(super) struct Call {
    pub(super) conn: u64,
    pub(super) uuid: Arc<str>,
    pub(super) call_type: &'static str,
}

impl Call {
    /// The copy of event `kind` of this call that `this_dn` receives, before any other attribute is set.
    pub(super) fn event(&self, kind: &'static str, this_dn: &Arc<str>) -> Ev {
        Ev {
            kind,
            this_dn: Arc::clone(this_dn),
            conn: self.conn,
            uuid: Arc::clone(&self.uuid),
            call_type: self.call_type,
            this_role: None,
            other: None,
            other_role: None,
            third: None,
            third_role: None,
            ani: None,
            dnis: None,
            queue: None,
            user_data: None,
            extensions: None,
            previous_conn: None,
            transfer_conn: None,
            call_state: None,
        }
    }
}

/// One copy of one TLib event, before it gets its sequence number.
#[derive(Debug, Clone)]
pub(super) struct Ev {
    pub(super) kind: &'static str,
    pub(super) this_dn: Arc<str>,
    pub(super) conn: u64,
    pub(super) uuid: Arc<str>,
    pub(super) call_type: &'static str,
    pub(super) this_role: Option<&'static str>,
    pub(super) other: Option<Arc<str>>,
    pub(super) other_role: Option<&'static str>,
    pub(super) third: Option<Arc<str>>,
    pub(super) third_role: Option<&'static str>,
    pub(super) ani: Option<Arc<str>>,
    pub(super) dnis: Option<Arc<str>>,
    pub(super) queue: Option<Arc<str>>,
    pub(super) user_data: Option<Arc<str>>,
    pub(super) extensions: Option<&'static str>,
    pub(super) previous_conn: Option<u64>,
    pub(super) transfer_conn: Option<u64>,
    pub(super) call_state: Option<u32>,
}

/// Setters for the attributes a script adds to an event copy.
impl Ev {
    pub(super) fn this_role(mut self, role: &'static str) -> Self {
        self.this_role = Some(role);
        self
    }
    pub(super) fn other(mut self, dn: &Arc<str>) -> Self {
        self.other = Some(Arc::clone(dn));
        self
    }
    pub(super) fn other_role(mut self, role: &'static str) -> Self {
        self.other_role = Some(role);
        self
    }
    pub(super) fn third(mut self, dn: &Arc<str>) -> Self {
        self.third = Some(Arc::clone(dn));
        self
    }
    pub(super) fn third_role(mut self, role: &'static str) -> Self {
        self.third_role = Some(role);
        self
    }
    pub(super) fn ani(mut self, number: &Arc<str>) -> Self {
        self.ani = Some(Arc::clone(number));
        self
    }
    pub(super) fn dnis(mut self, number: &Arc<str>) -> Self {
        self.dnis = Some(Arc::clone(number));
        self
    }
    pub(super) fn queue(mut self, dn: &Arc<str>) -> Self {
        self.queue = Some(Arc::clone(dn));
        self
    }
    pub(super) fn user_data(mut self, data: Arc<str>) -> Self {
        self.user_data = Some(data);
        self
    }
    pub(super) fn extensions(mut self, extensions: &'static str) -> Self {
        self.extensions = Some(extensions);
        self
    }
    pub(super) fn previous_conn(mut self, conn: u64) -> Self {
        self.previous_conn = Some(conn);
        self
    }
    pub(super) fn transfer_conn(mut self, conn: u64) -> Self {
        self.transfer_conn = Some(conn);
        self
    }
    pub(super) fn call_state(mut self, state: CallState) -> Self {
        self.call_state = Some(state as u32);
        self
    }
}

/// The TLib CallState codes the scripts give (the reason a party left the call).
#[derive(Clone, Copy)]
pub(super) enum CallState {
    Ok = 0,
    Transferred = 1,
    Conferenced = 2,
    RemoteRelease = 5,
    Busy = 6,
    NoAnswer = 7,
    Abandoned = 21,
}
