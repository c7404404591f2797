//! A supervisor listening in on an agent's call.

use crate::event::Micros;
use crate::ingest::sim::tlib_event::Call;
use crate::ingest::sim::{Simulator, micros};
use std::sync::Arc;

impl Simulator {
    /// Supervisor `s` silently monitors `agent`'s call from `from` to `until`, and may mute the agent a
    /// while.
    pub(super) fn supervise(
        &mut self,
        s: usize,
        agent: &Arc<str>,
        call: &Call,
        from: Micros,
        until: Micros,
    ) {
        let supervisor = Arc::clone(&self.supervisors[s].dn);
        self.push(
            from,
            call.event("EventPartyAdded", agent)
                .third(&supervisor)
                .third_role("RoleObserver"),
        );
        self.push(
            from,
            call.event("EventEstablished", &supervisor)
                .this_role("RoleObserver")
                .other(agent),
        );
        if self.rng.chance(0.3) {
            let third = (until - from) / 3;
            for (kind, at) in [
                ("EventMuteOn", from + third),
                ("EventMuteOff", from + third + third),
            ] {
                for dn in [agent, &supervisor] {
                    self.push(at, call.event(kind, dn).other(agent));
                }
            }
        }
        let deleted = call.event("EventPartyDeleted", agent).third(&supervisor);
        self.push(until, deleted);
        self.push(until, call.event("EventReleased", &supervisor));
        self.supervisors[s].free_at = until + micros(1.0);
        self.plan(|p| {
            p.monitored = true;
            p.talk(&supervisor, from, until);
        });
    }
}
