//! An outbound call: the agent free the earliest dials a customer, who is busy, does not answer, or talks.

use super::earliest;
use crate::event::Micros;
use crate::ingest::sim::numbering::customer_number;
use crate::ingest::sim::tlib_event::{Call, CallState};
use crate::ingest::sim::{Mix, Simulator, micros};
use std::sync::Arc;

/// What becomes of an outbound dial.
enum Outcome {
    Busy,
    NoAnswer,
    Answered,
}

/// The outcome that `roll` picks: the busy and no-answer shares of the mix are consecutive slices of one
/// roll.
fn pick_outcome(mix: &Mix, roll: f64) -> Outcome {
    if roll < mix.outbound_busy {
        Outcome::Busy
    } else if roll < mix.outbound_busy + mix.outbound_no_answer {
        Outcome::NoAnswer
    } else {
        Outcome::Answered
    }
}

impl Simulator {
    /// Scripts an outbound call placed at `t0`, or as soon after as an agent is free.
    pub(super) fn outbound(&mut self, t0: Micros) {
        let Some((a, start)) = earliest(&self.agents, t0, None) else {
            return;
        };
        let agent = Arc::clone(&self.agents[a].dn);
        let customer = customer_number(&mut self.rng);
        let call = self.new_call("Outbound");
        self.begin_plan(call.conn, "outbound", start);
        self.plan(|p| {
            p.party(&agent);
        });
        self.push(
            start,
            call.event("EventDialing", &agent)
                .this_role("RoleOrigination")
                .other(&customer)
                .dnis(&customer),
        );
        let reached = call.event("EventNetworkReached", &agent);
        self.push(start + micros(1.0), reached);
        let roll = self.rng.unit();
        let end = match pick_outcome(&self.config.mix, roll) {
            Outcome::Busy => {
                let busy_at = start + micros(2.0);
                let end = busy_at + micros(1.0);
                self.push(busy_at, call.event("EventDestinationBusy", &agent));
                let released = call.event("EventReleased", &agent);
                self.push(end, released.call_state(CallState::Busy));
                self.plan(|p| p.outcome = "Busy");
                end
            }
            Outcome::NoAnswer => {
                let end = start + micros(25.0);
                let released = call.event("EventReleased", &agent);
                self.push(end, released.call_state(CallState::NoAnswer));
                self.plan(|p| p.outcome = "NoAnswer");
                end
            }
            Outcome::Answered => self.customer_answers(&call, &agent, &customer, start),
        };
        self.plan(|p| p.end = end);
        self.wrap_up(a, end);
    }

    /// The customer answers the call `agent` dialled at `start`, and they talk. Returns when the call ends.
    fn customer_answers(
        &mut self,
        call: &Call,
        agent: &Arc<str>,
        customer: &Arc<str>,
        start: Micros,
    ) -> Micros {
        let answered = start + micros(self.rng.between(5.0, 20.0));
        self.push(
            answered,
            call.event("EventEstablished", agent).other(customer),
        );
        let talk = self.rng.lognormal(self.config.talk_secs * 0.7, 0.8);
        let end = answered + micros(talk.max(5.0));
        self.push(end, call.event("EventReleased", agent));
        self.plan(|p| {
            p.answered(answered, None);
            p.talk(agent, answered, end);
        });
        end
    }
}
