//! Each call's plan: what its script scheduled (queue wait, ringing, talk, holds, handoffs, wrap-up), as
//! the call detail record should show it. Written by the scripts from the times they schedule, never read
//! back from the events, so that a test can use the simulator as an oracle for the CDR fold.
//!
//! Durations follow docs/cdr-interpretations.md, item 1: every time is truncated to the millisecond and a
//! duration is the difference of two truncated times.

use crate::event::Micros;

/// `micros` truncated to milliseconds.
fn ms(micros: Micros) -> i64 {
    micros.div_euclid(1000)
}

/// `from` to `to` in milliseconds, each end truncated first.
fn span(from: Micros, to: Micros) -> i64 {
    ms(to) - ms(from)
}

/// A queue visit as planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuePlan {
    /// The queue's DN.
    pub dn: String,
    /// EventQueued.
    pub enter: Micros,
    /// EventDiverted (an agent rings) or EventAbandoned (the caller hung up in the queue).
    pub exit: Micros,
}

impl QueuePlan {
    /// The wait in milliseconds.
    pub fn wait_ms(&self) -> i64 {
        span(self.enter, self.exit)
    }
}

/// One handling party of a call (an agent, or a supervisor listening in), as planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartyPlan {
    /// Its DN.
    pub dn: String,
    /// Sum of its ringing (`None`: its phone never rang on this call).
    pub ring_ms: Option<i64>,
    /// Sum of its time connected and not held, on every ConnID of the call.
    pub talk_ms: i64,
    /// Sum of its holds.
    pub hold_ms: i64,
    /// Its holds.
    pub hold_count: u32,
    /// Its after-call work right after the call (`None`: none scripted, or no agent states).
    pub wrap_up_ms: Option<i64>,
}

/// One call as its script planned it: the call detail record's expected values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallPlan {
    /// The root ConnID as events and records write it: 16 lower-case hex digits.
    pub conn_id: String,
    /// `inbound`, `outbound` or `internal`.
    pub direction: &'static str,
    /// The call's first event (EventQueued, or the originator's EventDialing).
    pub start: Micros,
    /// The call's last release (or the caller's abandon).
    pub end: Micros,
    /// The first EventEstablished at an agent (`None`: never answered).
    pub answer: Option<Micros>,
    /// The queue visit of an inbound call.
    pub queue: Option<QueuePlan>,
    /// `Some("queue")` or `Some("ringing")` when the caller hung up before an answer.
    pub abandon_phase: Option<&'static str>,
    /// Answer minus the ringing at the answering DN (`None`: the answering DN never rang, or no answer).
    pub ring_ms: Option<i64>,
    /// Transfers (two-step and single-step) of the customer's call.
    pub transfer_count: u32,
    /// Consultation calls.
    pub consult_count: u32,
    /// Parties that joined by conference.
    pub conference_count: u32,
    /// A supervisor listened in.
    pub monitored: bool,
    /// `Completed`, `Abandoned`, `Transferred`, `Conferenced`, `Busy` or `NoAnswer`.
    pub outcome: &'static str,
    /// Every handling party, in order of its first part in the call.
    pub parties: Vec<PartyPlan>,
}

impl CallPlan {
    pub(super) fn new(conn: u64, direction: &'static str, start: Micros) -> Self {
        Self {
            conn_id: format!("{conn:016x}"),
            direction,
            start,
            end: start,
            answer: None,
            queue: None,
            abandon_phase: None,
            ring_ms: None,
            transfer_count: 0,
            consult_count: 0,
            conference_count: 0,
            monitored: false,
            outcome: "Completed",
            parties: Vec::new(),
        }
    }

    /// End minus start, in milliseconds.
    pub fn duration_ms(&self) -> i64 {
        span(self.start, self.end)
    }

    /// Answer minus start, in milliseconds.
    pub fn time_to_answer_ms(&self) -> Option<i64> {
        self.answer.map(|answer| span(self.start, answer))
    }

    /// The queue wait in milliseconds (0 without a queue).
    pub fn queue_wait_ms(&self) -> i64 {
        self.queue.as_ref().map_or(0, QueuePlan::wait_ms)
    }

    /// Talk over all parties.
    pub fn talk_ms(&self) -> i64 {
        self.parties.iter().map(|p| p.talk_ms).sum()
    }

    /// Holds over all parties.
    pub fn hold_ms(&self) -> i64 {
        self.parties.iter().map(|p| p.hold_ms).sum()
    }

    /// Holds over all parties.
    pub fn hold_count(&self) -> u32 {
        self.parties.iter().map(|p| p.hold_count).sum()
    }

    /// DNs that rang.
    pub fn alerts(&self) -> u32 {
        self.parties.iter().filter(|p| p.ring_ms.is_some()).count() as u32
    }

    /// The party at `dn`, added when new.
    pub(super) fn party(&mut self, dn: &str) -> &mut PartyPlan {
        let index = match self.parties.iter().position(|p| p.dn == dn) {
            Some(index) => index,
            None => {
                self.parties.push(PartyPlan {
                    dn: dn.to_owned(),
                    ring_ms: None,
                    talk_ms: 0,
                    hold_ms: 0,
                    hold_count: 0,
                    wrap_up_ms: None,
                });
                self.parties.len() - 1
            }
        };
        &mut self.parties[index]
    }

    /// The call is answered at `at`, at a DN whose phone rang from `rang_from` (`None`: an originator
    /// connected when the far end answered).
    pub(super) fn answered(&mut self, at: Micros, rang_from: Option<Micros>) {
        self.answer = Some(at);
        self.ring_ms = rang_from.map(|from| span(from, at));
    }

    /// `dn` rings from `from` to `to`.
    pub(super) fn ring(&mut self, dn: &str, from: Micros, to: Micros) {
        let party = self.party(dn);
        party.ring_ms = Some(party.ring_ms.unwrap_or(0) + span(from, to));
    }

    /// `dn` is connected (not held) from `from` to `to`.
    pub(super) fn talk(&mut self, dn: &str, from: Micros, to: Micros) {
        self.party(dn).talk_ms += span(from, to);
    }

    /// `dn` holds the call from `from` to `to`; `within_talk`: inside a stretch already counted as
    /// talk, which the hold cuts.
    pub(super) fn hold(&mut self, dn: &str, from: Micros, to: Micros, within_talk: bool) {
        let party = self.party(dn);
        let held = span(from, to);
        party.hold_ms += held;
        party.hold_count += 1;
        if within_talk {
            party.talk_ms -= held;
        }
    }

    /// `dn`'s after-call work, from `from` to `to`.
    pub(super) fn wrap_up(&mut self, dn: &str, from: Micros, to: Micros) {
        self.party(dn).wrap_up_ms = Some(span(from, to));
    }
}
