//! The scripts of the kinds of call. Each call is scripted in full when it arrives, with parties that are
//! free for the whole time they are needed.
//!
//! The order of a script's random draws is part of its output: moving a draw, even one whose value goes
//! unused, changes the traffic of every seed.

mod consult;
mod inbound;
mod internal;
mod outbound;
mod supervise;

use super::numbering::call_uuid;
use super::tlib_event::Call;
use super::{CallPlan, Party, Simulator};
use crate::event::Micros;

impl Simulator {
    /// Scripts the call arriving at `t0`: outbound, internal or inbound, by one roll of the mix.
    pub(super) fn start_call(&mut self, t0: Micros) {
        self.calls_started += 1;
        self.stats.calls += 1;
        let roll = self.rng.unit();
        if roll < self.config.mix.outbound {
            self.stats.outbound += 1;
            self.outbound(t0);
        } else if roll < self.config.mix.outbound + self.config.mix.internal
            && self.agents.len() > 1
        {
            self.stats.internal += 1;
            self.internal(t0);
        } else {
            self.stats.inbound += 1;
            self.inbound(t0);
        }
        if let Some(plan) = self.planning.take()
            && let Some(plans) = &mut self.plans
        {
            plans.push(plan);
        }
    }

    /// A new call of `call_type`: the next ConnID and a random CallUUID.
    fn new_call(&mut self, call_type: &'static str) -> Call {
        self.next_conn = self.next_conn.wrapping_add(1);
        Call {
            conn: self.next_conn,
            uuid: call_uuid(&mut self.rng),
            call_type,
        }
    }
}

impl Simulator {
    /// Begins the plan of the call being scripted (its root ConnID `conn`), when plans are kept.
    fn begin_plan(&mut self, conn: u64, direction: &'static str, start: Micros) {
        if self.plans.is_some() {
            self.planning = Some(CallPlan::new(conn, direction, start));
        }
    }

    /// Writes to the plan of the call being scripted, if one is kept.
    pub(in crate::ingest::sim) fn plan(&mut self, write: impl FnOnce(&mut CallPlan)) {
        if let Some(plan) = &mut self.planning {
            write(plan);
        }
    }
}

/// The party of `pool` free the earliest, and when it is free (never before `not_before`).
fn earliest(pool: &[Party], not_before: Micros, except: Option<usize>) -> Option<(usize, Micros)> {
    pool.iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != except)
        .min_by_key(|(_, p)| p.free_at)
        .map(|(i, p)| (i, p.free_at.max(not_before)))
}
