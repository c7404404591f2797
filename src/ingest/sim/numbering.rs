//! The numbers and identifiers of the simulated center: its directory numbers, its customers' phone numbers,
//! ConnIDs and CallUUIDs.

use super::Rng;
use std::sync::Arc;

/// Directory numbers: agents 7001..., supervisors 7901..., queues 8001... while they fit in four digits.
/// A larger center gets wider numbers (agents 70001..., supervisors 79001...), because an agent numbered
/// like a supervisor or a queue would be one device in two places at once.
pub(super) struct NumberPlan {
    /// 10^k: agents are 7·10^k + i (i < 9·10^(k-1)), supervisors 7·10^k + 9·10^(k-1) + i (i < 10^(k-1)).
    staff: u64,
    /// 10^m: queues are 8·10^m + i (i < 10^m); a leading 8 never meets a staff number.
    queues: u64,
}

impl NumberPlan {
    pub(super) fn new(agents: u32, supervisors: u32, queues: u32) -> Self {
        let mut staff = 1_000u64;
        while u64::from(agents) >= staff / 10 * 9 || u64::from(supervisors) >= staff / 10 {
            staff *= 10;
        }
        let mut queue_width = 1_000u64;
        while u64::from(queues) >= queue_width {
            queue_width *= 10;
        }
        Self {
            staff,
            queues: queue_width,
        }
    }
    pub(super) fn agent(&self, i: u32) -> u64 {
        7 * self.staff + u64::from(i)
    }
    pub(super) fn supervisor(&self, i: u32) -> u64 {
        7 * self.staff + self.staff / 10 * 9 + u64::from(i)
    }
    pub(super) fn queue(&self, i: u32) -> u64 {
        8 * self.queues + u64::from(i)
    }
}

/// The ConnID just before the first call's: fixed high bits, and a middle drawn from the seed so that each
/// seed numbers its calls differently.
pub(super) fn conn_base(rng: &mut Rng) -> u64 {
    0x006f_02a7_0000_0000 | (rng.next_u64() & 0xffff_0000)
}

/// A CallUUID: 32 characters of a base-32 alphabet.
pub(super) fn call_uuid(rng: &mut Rng) -> Arc<str> {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUV";
    let mut bits = rng.next_u64();
    let mut more = rng.next_u64();
    let uuid: String = (0..32)
        .map(|i| {
            if i == 12 {
                bits = more;
                more = 0;
            }
            let c = ALPHABET[(bits & 31) as usize] as char;
            bits >>= 5;
            c
        })
        .collect();
    uuid.into()
}

/// A customer's phone number, in E.164: mostly American, some British, French and German.
pub(super) fn customer_number(rng: &mut Rng) -> Arc<str> {
    const US_AREAS: [u32; 7] = [415, 212, 312, 617, 206, 303, 713];
    let n = rng.below(100);
    let number = match rng.below(10) {
        0..=5 => format!("+1{}5550{:03}", US_AREAS[rng.below(7) as usize], 100 + n),
        6..=7 => format!("+4420794600{n:02}"),
        8 => format!("+3314268{:04}", 5300 + n),
        _ => format!("+4930{:06}", 123_400 + n),
    };
    number.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_stay_four_digits_while_they_fit_and_never_collide() {
        let small = NumberPlan::new(899, 99, 999);
        assert_eq!(
            (small.agent(1), small.agent(899), small.supervisor(1)),
            (7001, 7899, 7901)
        );
        assert_eq!((small.supervisor(99), small.queue(1)), (7999, 8001));
        for (agents, supervisors, queues) in [(900, 3, 4), (2000, 20, 8), (50, 100, 1000)] {
            let plan = NumberPlan::new(agents, supervisors, queues);
            let mut all: Vec<u64> = (1..=agents).map(|i| plan.agent(i)).collect();
            all.extend((1..=supervisors).map(|i| plan.supervisor(i)));
            all.extend((1..=queues).map(|i| plan.queue(i)));
            let count = all.len();
            all.sort_unstable();
            all.dedup();
            assert_eq!(all.len(), count, "{agents} {supervisors} {queues}");
            assert!(plan.agent(1).to_string().starts_with("70"));
            assert!(plan.supervisor(1).to_string().starts_with("79"));
            assert!(plan.queue(1).to_string().starts_with("80"));
        }
    }
}
