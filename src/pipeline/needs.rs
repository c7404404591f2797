//! Which journal positions a shard still needs: for every live call and every device not in its default
//! state, the position of the event that began it. Journal retention deletes no segment at or after the
//! oldest of them (analytics.md, "Retention"), so a restart can replay each of them from its start.

use crate::journal::Position;
use crate::store::CallKey;
use std::collections::{BTreeMap, HashMap};

/// The first positions of what a shard holds.
#[derive(Debug, Default)]
pub struct Needs {
    by_key: HashMap<CallKey, Position>,
    /// How many keys began at each position.
    positions: BTreeMap<Position, u32>,
}

impl Needs {
    /// `key` is held from `position` on, unless it is held already (a call or device keeps the position
    /// of the event that began it).
    pub fn hold(&mut self, key: CallKey, position: Position) {
        if position == 0 || self.by_key.contains_key(&key) {
            return;
        }
        self.by_key.insert(key, position);
        *self.positions.entry(position).or_default() += 1;
    }

    /// `key` is no longer held (the call ended, the device is back to its default state).
    pub fn release(&mut self, key: CallKey) {
        let Some(position) = self.by_key.remove(&key) else {
            return;
        };
        if let Some(count) = self.positions.get_mut(&position) {
            *count -= 1;
            if *count == 0 {
                self.positions.remove(&position);
            }
        }
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// The oldest position still needed (`None`: nothing is held).
    pub fn oldest(&self) -> Option<Position> {
        self.positions.keys().next().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_held_position_is_kept_until_its_key_is_released() {
        let mut needs = Needs::default();
        let (a, b, c) = (
            CallKey::device(0, 1),
            CallKey::device(0, 2),
            CallKey::device(1, 1),
        );
        assert_eq!(needs.oldest(), None);
        needs.hold(a, 10);
        needs.hold(b, 12);
        needs.hold(a, 20); // a began at 10
        needs.hold(c, 10);
        assert_eq!(needs.oldest(), Some(10));
        needs.release(a);
        assert_eq!(needs.oldest(), Some(10), "c began at 10 too");
        needs.release(c);
        assert_eq!(needs.oldest(), Some(12));
        needs.release(b);
        needs.release(b);
        assert_eq!(needs.oldest(), None);
        needs.hold(a, 0);
        assert_eq!(needs.oldest(), None, "no position, nothing to keep");
    }
}
