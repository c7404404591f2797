//! An internal call: the agent free the earliest calls another agent who is free then.

use super::earliest;
use crate::event::Micros;
use crate::ingest::sim::{Simulator, micros};
use std::sync::Arc;

impl Simulator {
    /// Scripts an internal call placed at `t0`, or as soon after as an agent is free; skipped when no
    /// second agent is free then.
    pub(super) fn internal(&mut self, t0: Micros) {
        let Some((a, start)) = earliest(&self.agents, t0, None) else {
            return;
        };
        let Some((b, free)) = earliest(&self.agents, start, Some(a)) else {
            return;
        };
        if free > start {
            self.stats.internal_skipped += 1;
            return;
        }
        let caller = Arc::clone(&self.agents[a].dn);
        let callee = Arc::clone(&self.agents[b].dn);
        let call = self.new_call("Internal");
        self.begin_plan(call.conn, "internal", start);
        self.push(
            start,
            call.event("EventDialing", &caller)
                .this_role("RoleOrigination")
                .other(&callee),
        );
        self.push(
            start + micros(0.1),
            call.event("EventRinging", &callee)
                .this_role("RoleDestination")
                .other(&caller),
        );
        let answered = start + micros(self.rng.between(2.0, 6.0));
        for (dn, other) in [(&callee, &caller), (&caller, &callee)] {
            self.push(answered, call.event("EventEstablished", dn).other(other));
        }
        let end = answered + micros(self.rng.lognormal(60.0, 0.6).max(5.0));
        self.push(end, call.event("EventReleased", &caller));
        self.push(end + micros(0.05), call.event("EventReleased", &callee));
        self.plan(|p| {
            p.party(&caller);
            p.ring(&callee, start + micros(0.1), answered);
            // The callee's EventEstablished comes first: the callee is the answering DN.
            p.answered(answered, Some(start + micros(0.1)));
            p.talk(&caller, answered, end);
            p.talk(&callee, answered, end + micros(0.05));
            p.end = end + micros(0.05);
        });
        self.wrap_up(a, end);
        // The callee's after-call work starts at its own release.
        self.wrap_up(b, end + micros(0.05));
    }
}
