//! The channels a CometD session may subscribe to (gws.md's table), and who may.

use super::session::SubscribeRefusal;
use crate::access::Principal;
use crate::subscriptions::Topics;

/// The longest channel name taken.
const MAX_NAME: usize = 64;

/// A channel a session can subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// `/v2/me/calls`: the calls of the user's own devices.
    MeCalls,
    /// `/v2/me/devices`: the user's own devices.
    MeDevices,
    /// `/v2/me/*` or `/v2/me/**`: both.
    MeAll,
    /// `/callgate/calls`: every call in scope (supervisors, admins).
    CallgateCalls,
    /// `/callgate/devices`: every device in scope (supervisors, admins).
    CallgateDevices,
    /// `/callgate/queues`: every queue (supervisors, admins).
    CallgateQueues,
}

impl Channel {
    /// The channel named `name`: `Invalid` for what is not a channel name, `Denied` for a channel
    /// nobody may read (anything outside the table).
    pub fn parse(name: &str) -> Result<Channel, SubscribeRefusal> {
        if !well_formed(name) {
            return Err(SubscribeRefusal::Invalid);
        }
        match name {
            "/v2/me/calls" => Ok(Channel::MeCalls),
            "/v2/me/devices" => Ok(Channel::MeDevices),
            "/v2/me/*" | "/v2/me/**" => Ok(Channel::MeAll),
            "/callgate/calls" => Ok(Channel::CallgateCalls),
            "/callgate/devices" => Ok(Channel::CallgateDevices),
            "/callgate/queues" => Ok(Channel::CallgateQueues),
            _ => Err(SubscribeRefusal::Denied),
        }
    }

    /// Whether `principal` may read it: `/v2/me` needs a user (open mode has none); `/callgate` a
    /// supervisor, an administrator, or open mode.
    pub fn allowed(self, principal: &Principal) -> Result<(), SubscribeRefusal> {
        let allowed = match (&principal.user, self.is_me()) {
            (None, me) => !me,
            (Some(_), true) => true,
            (Some(user), false) => user.roles.supervisor || user.roles.admin,
        };
        if allowed {
            Ok(())
        } else {
            Err(SubscribeRefusal::Denied)
        }
    }

    /// The kinds of notification it carries.
    pub fn topics(self) -> Topics {
        match self {
            Channel::MeCalls | Channel::CallgateCalls => Topics::CALLS,
            Channel::MeDevices | Channel::CallgateDevices => Topics::DEVICES,
            Channel::MeAll => Topics::CALLS.with(Topics::DEVICES),
            Channel::CallgateQueues => Topics::QUEUES,
        }
    }

    /// Whether it is one of the user's own (`/v2/me`) channels.
    pub fn is_me(self) -> bool {
        matches!(self, Channel::MeCalls | Channel::MeDevices | Channel::MeAll)
    }
}

/// Bayeux's channel names: `/` then segments of visible characters, none empty; a wildcard (`*`, `**`)
/// only as the whole last segment.
fn well_formed(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('/') else {
        return false;
    };
    if name.len() > MAX_NAME || rest.is_empty() {
        return false;
    }
    let segments: Vec<&str> = rest.split('/').collect();
    let last = segments.len() - 1;
    segments.iter().enumerate().all(|(i, segment)| {
        let wildcard = *segment == "*" || *segment == "**";
        !segment.is_empty()
            && (wildcard && i == last
                || segment
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'*' && b != b'/'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_before_permissions() {
        assert_eq!(Channel::parse("/v2/me/calls"), Ok(Channel::MeCalls));
        assert_eq!(Channel::parse("/v2/me/**"), Ok(Channel::MeAll));
        assert_eq!(
            Channel::parse("/callgate/devices"),
            Ok(Channel::CallgateDevices)
        );
        for invalid in [
            "",
            "v2/me/calls",
            "/",
            "/v2//calls",
            "/v2/*/calls",
            "/v2/me/ca lls",
            "/a*",
        ] {
            assert_eq!(
                Channel::parse(invalid),
                Err(SubscribeRefusal::Invalid),
                "{invalid:?}"
            );
        }
        for denied in ["/v2/me/agents", "/meta/connect", "/**", "/service/x"] {
            assert_eq!(
                Channel::parse(denied),
                Err(SubscribeRefusal::Denied),
                "{denied:?}"
            );
        }
        assert_eq!(
            Channel::parse(&format!("/{}", "a".repeat(64))),
            Err(SubscribeRefusal::Invalid)
        );
    }

    #[test]
    fn callgate_channels_are_for_supervisors_admins_and_open_mode() {
        let open = Principal::open();
        assert!(Channel::CallgateCalls.allowed(&open).is_ok());
        assert!(
            Channel::MeCalls.allowed(&open).is_err(),
            "open mode has no me"
        );
        let user = |agent: bool, supervisor: bool, admin: bool| Principal {
            user: Some(std::sync::Arc::new(crate::access::User {
                username: "u".into(),
                password: None,
                roles: crate::access::Roles {
                    agent,
                    supervisor,
                    admin,
                },
                devices: Vec::new(),
                team: None,
                first_name: None,
                last_name: None,
            })),
            scope: crate::subscriptions::Scope::All,
        };
        assert!(
            Channel::CallgateCalls
                .allowed(&user(true, false, false))
                .is_err()
        );
        assert!(
            Channel::MeDevices
                .allowed(&user(true, false, false))
                .is_ok()
        );
        assert!(
            Channel::CallgateDevices
                .allowed(&user(false, true, false))
                .is_ok()
        );
        assert!(
            Channel::CallgateCalls
                .allowed(&user(false, false, true))
                .is_ok()
        );
    }
}
