//! Handing an inbound call to a second agent: a consultation (ended by a transfer, a cancel or a
//! conference), or a single-step transfer.

use super::inbound::InboundCall;
use crate::event::Micros;
use crate::ingest::sim::tlib_event::{Call, CallState};
use crate::ingest::sim::{Simulator, micros};
use std::sync::Arc;

/// How a consultation ends.
#[derive(Clone, Copy)]
pub(super) enum Ending {
    /// The second agent takes the customer; the first leaves.
    Transfer,
    /// The first agent takes the customer back.
    Cancel,
    /// All three talk, then the first agent leaves.
    Conference,
}

/// Agent `agent` holds the customer's call and consults agent `other` over a call of its own.
struct Consultation<'a> {
    customer_call: &'a InboundCall,
    consult: Call,
    agent: Arc<str>,
    other: Arc<str>,
    /// When the agent put the customer on hold to consult.
    held_at: Micros,
}

impl Simulator {
    /// Agent `a` consults agent `b` about the customer's call at `start`, then ends as `ending` says.
    /// Returns when agent `a` is done with the call.
    pub(super) fn consult(
        &mut self,
        inbound: &InboundCall,
        a: usize,
        b: usize,
        start: Micros,
        ending: Ending,
    ) -> Micros {
        let agent = Arc::clone(&self.agents[a].dn);
        let other = Arc::clone(&self.agents[b].dn);
        let consult = self.new_call("Consult");
        let c = Consultation {
            customer_call: inbound,
            consult,
            agent,
            other,
            held_at: start,
        };
        let answered = self.dial_consultation(&c, start);
        let done = answered + micros(self.rng.between(10.0, 40.0));
        self.plan(|p| {
            p.consult_count += 1;
            p.talk(&c.agent, answered, done);
            p.talk(&c.other, answered, done);
        });
        // Drawn whatever the ending, a cancel included, so that every later draw keeps its place.
        let other_talk = micros(
            self.rng
                .lognormal(self.config.talk_secs * 0.6, 0.7)
                .max(10.0),
        );
        let (agent_free, other_free) = match ending {
            Ending::Transfer => self.complete_transfer(&c, done, other_talk),
            Ending::Cancel => self.cancel_consultation(&c, done),
            Ending::Conference => self.complete_conference(&c, done, other_talk),
        };
        self.wrap_up(b, other_free);
        agent_free
    }

    /// The agent holds the customer and dials the other agent at `start`. Returns when the other answers.
    fn dial_consultation(&mut self, c: &Consultation, start: Micros) -> Micros {
        let customer_call = &c.customer_call.call;
        self.push(start, customer_call.event("EventHeld", &c.agent));
        let dial_at = start + micros(1.0);
        let user_data = &c.customer_call.user_data;
        self.push(
            dial_at,
            c.consult
                .event("EventDialing", &c.agent)
                .this_role("RoleOrigination")
                .other(&c.other)
                .transfer_conn(customer_call.conn)
                .user_data(Arc::clone(user_data)),
        );
        self.push(
            dial_at + micros(0.2),
            c.consult
                .event("EventRinging", &c.other)
                .this_role("RoleDestination")
                .other(&c.agent)
                .transfer_conn(customer_call.conn)
                .user_data(Arc::clone(user_data)),
        );
        let answered = dial_at + micros(self.rng.between(2.0, 6.0));
        let at_other = c
            .consult
            .event("EventEstablished", &c.other)
            .other(&c.agent);
        self.push(answered, at_other);
        let at_agent = c
            .consult
            .event("EventEstablished", &c.agent)
            .other(&c.other);
        self.push(answered, at_agent);
        self.plan(|p| p.ring(&c.other, dial_at + micros(0.2), answered));
        answered
    }

    /// At `done` the customer's call passes to the other agent, who talks `other_talk` more. Returns when
    /// each agent is done with the call.
    fn complete_transfer(
        &mut self,
        c: &Consultation,
        done: Micros,
        other_talk: Micros,
    ) -> (Micros, Micros) {
        let customer_call = &c.customer_call.call;
        let released = customer_call.event("EventReleased", &c.agent);
        self.push(done, released.call_state(CallState::Transferred));
        self.push(
            done,
            customer_call
                .event("EventPartyChanged", &c.other)
                .previous_conn(c.consult.conn)
                .other(&c.customer_call.customer)
                .third(&c.agent),
        );
        let consult_released = c.consult.event("EventReleased", &c.agent);
        self.push(done, consult_released.call_state(CallState::Transferred));
        let other_end = done + other_talk;
        self.push(other_end, customer_call.event("EventReleased", &c.other));
        self.plan(|p| {
            p.hold(&c.agent, c.held_at, done, false);
            p.talk(&c.other, done, other_end);
            p.transfer_count += 1;
            p.outcome = "Transferred";
            p.end = other_end;
        });
        (done, other_end)
    }

    /// At `done` both agents hang up the consultation and the agent takes the customer back, for a while.
    /// Returns when each agent is done with the call.
    fn cancel_consultation(&mut self, c: &Consultation, done: Micros) -> (Micros, Micros) {
        let customer_call = &c.customer_call.call;
        self.push(done, c.consult.event("EventReleased", &c.agent));
        self.push(done, c.consult.event("EventReleased", &c.other));
        let back = done + micros(1.0);
        self.push(back, customer_call.event("EventRetrieved", &c.agent));
        let end = back + micros(self.rng.between(10.0, 60.0));
        self.push(end, customer_call.event("EventReleased", &c.agent));
        self.plan(|p| {
            p.hold(&c.agent, c.held_at, back, false);
            p.talk(&c.agent, back, end);
            p.end = end;
        });
        (end, done)
    }

    /// At `done` the consultation becomes a conference of the customer and both agents; the agent leaves
    /// a while later, the other talks `other_talk` more. Returns when each agent is done with the call.
    fn complete_conference(
        &mut self,
        c: &Consultation,
        done: Micros,
        other_talk: Micros,
    ) -> (Micros, Micros) {
        let customer_call = &c.customer_call.call;
        let consult_released = c.consult.event("EventReleased", &c.agent);
        self.push(done, consult_released.call_state(CallState::Conferenced));
        self.push(done, customer_call.event("EventRetrieved", &c.agent));
        self.push(
            done,
            customer_call
                .event("EventPartyAdded", &c.agent)
                .third(&c.other)
                .third_role("RoleConferenceMember"),
        );
        self.push(
            done,
            customer_call
                .event("EventPartyChanged", &c.other)
                .previous_conn(c.consult.conn)
                .other(&c.customer_call.customer),
        );
        self.push(
            done,
            customer_call
                .event("EventPartyAdded", &c.other)
                .third(&c.agent)
                .third_role("RoleConferenceMember"),
        );
        let agent_leaves = done + micros(self.rng.between(20.0, 90.0));
        self.push(agent_leaves, customer_call.event("EventReleased", &c.agent));
        let deleted = customer_call
            .event("EventPartyDeleted", &c.other)
            .third(&c.agent);
        self.push(agent_leaves, deleted);
        let other_end = agent_leaves + other_talk;
        self.push(other_end, customer_call.event("EventReleased", &c.other));
        self.plan(|p| {
            p.hold(&c.agent, c.held_at, done, false);
            p.talk(&c.agent, done, agent_leaves);
            p.talk(&c.other, done, other_end);
            p.conference_count += 1;
            p.outcome = "Conferenced";
            p.end = other_end;
        });
        (agent_leaves, other_end)
    }

    /// Agent `a` transfers the customer's call to agent `b` in one step at `at`. Returns `at`, when agent
    /// `a` is done with the call.
    pub(super) fn single_step(
        &mut self,
        inbound: &InboundCall,
        a: usize,
        b: usize,
        at: Micros,
    ) -> Micros {
        let agent = Arc::clone(&self.agents[a].dn);
        let other = Arc::clone(&self.agents[b].dn);
        let customer = &inbound.customer;
        self.push(
            at,
            inbound
                .event("EventReleased", &agent)
                .call_state(CallState::Transferred)
                .third(&other),
        );
        self.push(
            at + micros(0.2),
            inbound
                .event("EventRinging", &other)
                .other(customer)
                .ani(customer)
                .user_data(Arc::clone(&inbound.user_data)),
        );
        let answered = at + micros(self.rng.between(2.0, 6.0));
        self.push(
            answered,
            inbound.event("EventEstablished", &other).other(customer),
        );
        let talk = self.rng.lognormal(self.config.talk_secs * 0.6, 0.7);
        let end = answered + micros(talk.max(10.0));
        self.push(end, inbound.event("EventReleased", &other));
        self.plan(|p| {
            p.ring(&other, at + micros(0.2), answered);
            p.talk(&other, answered, end);
            p.transfer_count += 1;
            p.outcome = "Transferred";
            p.end = end;
        });
        self.wrap_up(b, end);
        at
    }
}
