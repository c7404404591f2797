//! The resources, in a slab addressed by call numbers that also give the creation order.
//!
//! A hash map of resources would move every resource at each growth; a slab keeps them in place and turns
//! every lookup into an index. The slab grows by chunks of [`CHUNK`] slots, never by copying: a `Vec`
//! that doubled moved every resource at each growth (a 16 MB copy at 50,000 calls, while the shard's
//! events waited) and kept up to half its capacity unused.
//!
//! A call number is `serial << 24 | slot`: the serial counts creations (so numbers sort in creation
//! order and are never reused), the slot is where the resource lives. A number whose slot holds a
//! different serial is stale and finds nothing.

/// Bits of a call number that address the slot.
const SLOT_BITS: u32 = 24;
/// The most resources a table can hold at once (16,777,216).
pub const MAX_SLOTS: usize = 1 << SLOT_BITS;
/// Slots added at a time.
pub const CHUNK: usize = 1024;

/// A slab of `T` keyed by call numbers.
#[derive(Debug)]
pub struct Table<T> {
    /// Chunks of [`CHUNK`] slots, each allocated at once and never moved; only the last may be short.
    chunks: Vec<Vec<Option<(u64, T)>>>,
    /// Slots in use or free (in every chunk together).
    slots: usize,
    free: Vec<u32>,
    next_serial: u64,
    len: usize,
    /// The most values held at once (at most [`MAX_SLOTS`], which the slot bits of a number can address).
    limit: usize,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Self::with_limit(MAX_SLOTS)
    }
}

impl<T> Table<T> {
    /// An empty table that holds at most `limit` values (never more than [`MAX_SLOTS`]).
    pub fn with_limit(limit: usize) -> Self {
        Self {
            chunks: Vec::new(),
            slots: 0,
            free: Vec::new(),
            next_serial: 0,
            len: 0,
            limit: limit.min(MAX_SLOTS),
        }
    }

    /// Stores `value` and returns its number, or gives it back when the table is full.
    pub fn insert(&mut self, value: T) -> Result<u64, T> {
        let slot = match self.free.pop() {
            Some(slot) => slot as usize,
            None if self.slots < self.limit => {
                if self.slots.is_multiple_of(CHUNK) {
                    self.chunks.push(Vec::with_capacity(CHUNK));
                }
                if let Some(chunk) = self.chunks.last_mut() {
                    chunk.push(None);
                }
                self.slots += 1;
                self.slots - 1
            }
            None => return Err(value),
        };
        let number = (self.next_serial << SLOT_BITS) | slot as u64;
        let Some(place) = self.place_mut(slot) else {
            return Err(value);
        };
        *place = Some((number, value));
        self.next_serial += 1;
        self.len += 1;
        Ok(number)
    }

    /// The value with `number`, if it is still held.
    pub fn get(&self, number: u64) -> Option<&T> {
        match self.place(Self::slot(number))? {
            Some((n, value)) if *n == number => Some(value),
            _ => None,
        }
    }

    /// The value with `number`, mutably.
    pub fn get_mut(&mut self, number: u64) -> Option<&mut T> {
        match self.place_mut(Self::slot(number))? {
            Some((n, value)) if *n == number => Some(value),
            _ => None,
        }
    }

    /// Removes and returns the value with `number`.
    pub fn remove(&mut self, number: u64) -> Option<T> {
        let slot = Self::slot(number);
        let place = self.place_mut(slot)?;
        match place {
            Some((n, _)) if *n == number => {}
            _ => return None,
        }
        let (_, value) = place.take()?;
        self.free.push(slot as u32);
        self.len -= 1;
        Some(value)
    }

    /// How many values are held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every number held, in creation order.
    pub fn numbers(&self) -> Vec<u64> {
        let mut numbers: Vec<u64> = self.iter().map(|(n, _)| n).collect();
        numbers.sort_unstable();
        numbers
    }

    /// Every value held with its number, in slot order (not creation order).
    pub fn iter(&self) -> impl Iterator<Item = (u64, &T)> {
        self.chunks
            .iter()
            .flatten()
            .flatten()
            .map(|(number, value)| (*number, value))
    }

    fn place(&self, slot: usize) -> Option<&Option<(u64, T)>> {
        self.chunks.get(slot / CHUNK)?.get(slot % CHUNK)
    }

    fn place_mut(&mut self, slot: usize) -> Option<&mut Option<(u64, T)>> {
        self.chunks.get_mut(slot / CHUNK)?.get_mut(slot % CHUNK)
    }

    fn slot(number: u64) -> usize {
        (number & ((1 << SLOT_BITS) - 1)) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_in_creation_order_and_never_reused() {
        let mut table = Table::default();
        let a = table.insert("a").unwrap();
        let b = table.insert("b").unwrap();
        assert_eq!(table.remove(a), Some("a"));
        let c = table.insert("c").unwrap();
        assert!(a < b && b < c);
        assert_eq!(
            table.get(a),
            None,
            "a stale number finds nothing, though its slot was reused"
        );
        assert_eq!(table.get(c), Some(&"c"));
        assert_eq!(table.get_mut(a), None, "nor mutably");
        assert_eq!(table.get_mut(c), Some(&mut "c"));
        assert!(!table.is_empty());
        assert_eq!(table.numbers(), vec![b, c]);
        assert_eq!(table.len(), 2);
        assert_eq!(table.remove(a), None);
    }

    #[test]
    fn slots_across_chunks_are_found_and_reused() {
        let mut table = Table::default();
        let numbers: Vec<u64> = (0..3 * CHUNK + 5)
            .map(|i| table.insert(i).unwrap())
            .collect();
        assert_eq!(table.chunks.len(), 4);
        assert!(table.chunks.iter().all(|chunk| chunk.capacity() == CHUNK));
        for (i, number) in numbers.iter().enumerate() {
            assert_eq!(table.get(*number), Some(&i));
        }
        assert_eq!(table.remove(numbers[CHUNK + 7]), Some(CHUNK + 7));
        let again = table.insert(usize::MAX).unwrap();
        assert_eq!(
            Table::<usize>::slot(again),
            CHUNK + 7,
            "a freed slot is reused"
        );
        assert_eq!(table.get(again), Some(&usize::MAX));
        assert_eq!(
            table.chunks.len(),
            4,
            "no chunk added while a slot was free"
        );
        assert_eq!(table.iter().count(), 3 * CHUNK + 5);
        assert_eq!(table.numbers().len(), 3 * CHUNK + 5);
    }

    #[test]
    fn a_full_table_gives_the_value_back_until_a_slot_is_free() {
        let mut table = Table::with_limit(2);
        let a = table.insert("a").unwrap();
        table.insert("b").unwrap();
        assert_eq!(table.insert("c"), Err("c"));
        assert_eq!(table.len(), 2);
        table.remove(a);
        assert!(table.insert("c").is_ok());
        assert_eq!(Table::<()>::with_limit(usize::MAX).limit, MAX_SLOTS);
    }
}
