//! An inbound call: the caller waits in a queue until an agent rings (or hangs up first), the agent answers
//! and talks (with recording, a disposition, a supervisor listening in, a hold), and the call ends, perhaps
//! handed to a second agent.

use super::consult::Ending;
use super::earliest;
use crate::event::Micros;
use crate::ingest::sim::numbering::customer_number;
use crate::ingest::sim::tlib_event::{Call, CallState, Ev};
use crate::ingest::sim::user_data::{arrival_user_data, with_key};
use crate::ingest::sim::{Mix, QueuePlan, Simulator, micros};
use std::sync::Arc;

/// What every step of an inbound call's script needs to know about the call.
pub(super) struct InboundCall {
    pub(super) call: Call,
    pub(super) queue: Arc<str>,
    pub(super) customer: Arc<str>,
    /// The UserData attached on arrival, which a consulted or transferred agent receives.
    pub(super) user_data: Arc<str>,
}

impl InboundCall {
    /// The copy of event `kind` of this call that `this_dn` receives.
    pub(super) fn event(&self, kind: &'static str, this_dn: &Arc<str>) -> Ev {
        self.call.event(kind, this_dn)
    }

    /// Event `kind` at the queue, about the waiting caller.
    fn at_queue(&self, kind: &'static str) -> Ev {
        self.event(kind, &self.queue)
            .other(&self.customer)
            .ani(&self.customer)
            .dnis(&self.queue)
            .queue(&self.queue)
    }
}

/// The agent's talk with the caller: from `answered`, `length` long.
struct Talk {
    answered: Micros,
    length: Micros,
}

impl Talk {
    /// The moment `share` of the way through the talk.
    fn at(&self, share: f64) -> Micros {
        self.answered + (self.length as f64 * share) as Micros
    }

    fn end(&self) -> Micros {
        self.answered + self.length
    }
}

/// How an answered inbound call is handed to a second agent.
#[derive(Clone, Copy)]
enum Handoff {
    Consult(Ending),
    SingleStep,
}

/// The handoff that `roll` picks, if any: the four shares of the mix are consecutive slices of one roll.
fn pick_handoff(mix: &Mix, roll: f64) -> Option<Handoff> {
    let slices = [
        (mix.two_step_transfer, Handoff::Consult(Ending::Transfer)),
        (mix.consult_cancelled, Handoff::Consult(Ending::Cancel)),
        (mix.single_step_transfer, Handoff::SingleStep),
        (mix.conference, Handoff::Consult(Ending::Conference)),
    ];
    let mut threshold = 0.0;
    for (share, handoff) in slices {
        threshold += share;
        if roll < threshold {
            return Some(handoff);
        }
    }
    None
}

impl Simulator {
    /// Scripts an inbound call arriving at `t0`.
    pub(super) fn inbound(&mut self, t0: Micros) {
        let inbound = self.inbound_arrives(t0);
        let Some((a, ring_at)) = self.wait_in_queue(&inbound, t0) else {
            return;
        };
        let agent = Arc::clone(&self.agents[a].dn);
        let Some(answered) = self.ring_agent(&inbound, a, &agent, ring_at) else {
            return;
        };
        let talk = Talk {
            answered,
            length: micros(self.rng.lognormal(self.config.talk_secs, 0.8).max(10.0)),
        };
        self.plan(|p| p.talk(&agent, answered, talk.end()));
        self.during_talk(&inbound, &agent, &talk);
        let agent_free = self.end_inbound(&inbound, a, &agent, talk.end());
        self.wrap_up(a, agent_free);
    }

    /// The call arrives in a random queue, from a random customer, with random UserData.
    fn inbound_arrives(&mut self, t0: Micros) -> InboundCall {
        let queue = self.rng.below(self.queues.len() as u64) as usize;
        let queue = Arc::clone(&self.queues[queue]);
        let customer = customer_number(&mut self.rng);
        let call = self.new_call("Inbound");
        let user_data = arrival_user_data(&mut self.rng).into();
        self.begin_plan(call.conn, "inbound", t0);
        self.plan(|p| {
            p.queue = Some(QueuePlan {
                dn: queue.to_string(),
                enter: t0,
                exit: t0,
            });
        });
        let inbound = InboundCall {
            call,
            queue,
            customer,
            user_data,
        };
        let queued = inbound.at_queue("EventQueued");
        self.push(t0, queued.user_data(Arc::clone(&inbound.user_data)));
        inbound
    }

    /// The caller waits in the queue for the agent free the earliest. Returns that agent and when their
    /// phone rings, or `None` if the caller hangs up first.
    fn wait_in_queue(&mut self, inbound: &InboundCall, t0: Micros) -> Option<(usize, Micros)> {
        // Routing (announcement, strategy) takes a few seconds even when an agent is free; after that the
        // call waits, first come first served, for the agent free the earliest.
        let routed = t0 + micros(self.rng.between(1.0, 6.0));
        let (a, ring_at) = earliest(&self.agents, routed, None)?;
        let Some((at, out_of_patience)) = self.hang_up_in_queue(t0, routed, ring_at) else {
            return Some((a, ring_at));
        };
        self.stats.abandoned_in_queue += 1;
        self.stats.abandoned_waiting += u64::from(out_of_patience);
        // The agent was never rung, so it stays free for the next caller.
        let abandoned = inbound.at_queue("EventAbandoned");
        self.push(at, abandoned.call_state(CallState::Abandoned));
        self.plan(|p| {
            if let Some(queue) = &mut p.queue {
                queue.exit = at;
            }
            p.abandon_phase = Some("queue");
            p.outcome = "Abandoned";
            p.end = at;
        });
        None
    }

    /// When the caller, routed at `routed` and due to ring an agent at `ring_at`, hangs up in the queue,
    /// if they do, and whether it is for lack of patience.
    fn hang_up_in_queue(
        &mut self,
        t0: Micros,
        routed: Micros,
        ring_at: Micros,
    ) -> Option<(Micros, bool)> {
        if self.rng.chance(self.config.mix.abandon_queue) {
            // This caller hangs up before being routed, however soon an agent would be free.
            let waited = (ring_at - t0) as f64 * self.rng.between(0.2, 0.95);
            return Some((t0 + waited as Micros, false));
        }
        // Patience counts from the end of routing, so that a center with free agents loses no calls
        // beyond the abandon-queue share; a long wait for an agent does lose them.
        let patience = micros(self.rng.lognormal(self.config.patience_secs, 0.8));
        (ring_at - routed > patience).then_some((routed + patience, true))
    }

    /// Agent `a`'s phone rings at `ring_at`. Returns when the agent answers, or `None` if the caller hangs
    /// up first.
    fn ring_agent(
        &mut self,
        inbound: &InboundCall,
        a: usize,
        agent: &Arc<str>,
        ring_at: Micros,
    ) -> Option<Micros> {
        let (queue, customer) = (&inbound.queue, &inbound.customer);
        self.plan(|p| {
            if let Some(queue) = &mut p.queue {
                queue.exit = ring_at;
            }
        });
        self.push(
            ring_at,
            inbound
                .event("EventDiverted", queue)
                .third(agent)
                .queue(queue),
        );
        self.push(
            ring_at,
            inbound
                .event("EventRinging", agent)
                .this_role("RoleDestination")
                .other(customer)
                .other_role("RoleOrigination")
                .ani(customer)
                .dnis(queue)
                .queue(queue)
                .user_data(Arc::clone(&inbound.user_data)),
        );
        let ring = micros(self.rng.between(2.0, 8.0));
        if self.rng.chance(self.config.mix.abandon_ringing) {
            self.stats.abandoned_ringing += 1;
            let at = ring_at + ring / 2;
            let abandoned = inbound.event("EventAbandoned", agent);
            self.push(at, abandoned.call_state(CallState::Abandoned));
            self.agents[a].free_at = at + micros(1.0);
            self.plan(|p| {
                p.ring(agent, ring_at, at);
                p.abandon_phase = Some("ringing");
                p.outcome = "Abandoned";
                p.end = at;
            });
            return None;
        }
        let answered = ring_at + ring;
        let established = inbound.event("EventEstablished", agent).other(customer);
        self.push(answered, established);
        self.plan(|p| {
            p.ring(agent, ring_at, answered);
            p.answered(answered, Some(ring_at));
        });
        Some(answered)
    }

    /// What may happen while the agent talks with the caller: recording, a disposition, a supervisor
    /// listening in, a hold.
    fn during_talk(&mut self, inbound: &InboundCall, agent: &Arc<str>, talk: &Talk) {
        let mut data = String::from(&*inbound.user_data);
        self.record(inbound, agent, talk, &mut data);
        if self.rng.chance(self.config.mix.user_data_update) {
            let disposition = ["Resolved", "FollowUp", "Escalated"][self.rng.below(3) as usize];
            data = with_key(&data, "Disposition", disposition);
            let changed = inbound.event("EventAttachedDataChanged", agent);
            self.push(talk.at(0.15), changed.user_data(data.into()));
        }
        if self.rng.chance(self.config.mix.supervisor)
            && let Some((s, free)) = earliest(&self.supervisors, talk.at(0.2), None)
            && free <= talk.at(0.2)
        {
            self.supervise(s, agent, &inbound.call, talk.at(0.2), talk.at(0.45));
        }
        if self.rng.chance(self.config.mix.hold) {
            self.push(talk.at(0.5), inbound.event("EventHeld", agent));
            self.push(talk.at(0.58), inbound.event("EventRetrieved", agent));
            self.plan(|p| p.hold(agent, talk.at(0.5), talk.at(0.58), true));
        }
    }

    /// The call may be recorded, controlled through Extensions `record`, or else through UserData
    /// `GSIP_RECORD` (written into `data`).
    fn record(&mut self, inbound: &InboundCall, agent: &Arc<str>, talk: &Talk, data: &mut String) {
        if self.rng.chance(self.config.mix.recording_extensions) {
            for (share, directive) in [
                (0.02, r#"{"record":"start"}"#),
                (0.6, r#"{"record":"pause"}"#),
                (0.7, r#"{"record":"resume"}"#),
            ] {
                let info = inbound.event("EventPrivateInfo", agent);
                self.push(talk.at(share), info.extensions(directive));
            }
        } else if self.rng.chance(self.config.mix.recording_gsip) {
            for (share, value) in [(0.02, "ON"), (0.65, "PAUSED"), (0.75, "ON")] {
                *data = with_key(data, "GSIP_RECORD", value);
                let changed = inbound.event("EventAttachedDataChanged", agent);
                self.push(talk.at(share), changed.user_data(data.as_str().into()));
            }
        }
    }

    /// The call ends at `end`: handed to a second agent when the mix picks a handoff and one is free,
    /// otherwise one side hangs up. Returns when agent `a` is done with the call.
    fn end_inbound(
        &mut self,
        inbound: &InboundCall,
        a: usize,
        agent: &Arc<str>,
        end: Micros,
    ) -> Micros {
        let roll = self.rng.unit();
        let handoff = pick_handoff(&self.config.mix, roll);
        let second =
            earliest(&self.agents, end, Some(a)).filter(|(b, free)| *free <= end && *b != a);
        match (second, handoff) {
            (Some((b, _)), Some(Handoff::Consult(ending))) => {
                self.consult(inbound, a, b, end, ending)
            }
            (Some((b, _)), Some(Handoff::SingleStep)) => self.single_step(inbound, a, b, end),
            _ => {
                // Either side hangs up: the agent, or the customer.
                let state = if self.rng.chance(0.5) {
                    CallState::Ok
                } else {
                    CallState::RemoteRelease
                };
                let released = inbound.event("EventReleased", agent).call_state(state);
                self.push(end, released);
                self.plan(|p| p.end = end);
                end
            }
        }
    }
}
