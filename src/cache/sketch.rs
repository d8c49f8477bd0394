//! The admission filter's frequency sketch: a count-min sketch of 4-bit counters with aging,
//! as in W-TinyLFU (Caffeine, moka).
//!
//! Each shard keeps one, sized to its capacity, and updates it under the shard lock, so it needs
//! no atomics. A key's frequency is the least of its four counters (one per row of the
//! count-min sketch), 16 counters a `u64` word; the four counters of one key lie in one block
//! of 8 words, one cache line. Every `40 × capacity` increments the sketch halves every counter, so that what was
//! popular an hour ago does not keep out what is popular now.

/// A count-min sketch of 4-bit counters over key hashes.
pub(crate) struct FrequencySketch {
    table: Box<[u64]>,
    mask: usize,
    /// Increments since the last halving.
    additions: usize,
    /// Increments after which every counter is halved.
    sample_size: usize,
}

/// Where a sketch's counters lie in memory, kept outside the shard lock: a lookup asks for the
/// key's cache line before it takes the lock, so that the line arrives while the lock is taken
/// and the shard's map is searched, instead of after (a wide cache misses it on most hits).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SketchLines {
    /// The table's address; its allocation never moves while the sketch lives.
    base: usize,
    mask: usize,
}

impl SketchLines {
    /// Asks the CPU for the cache line of `hash`'s counters. A hint only: it reads nothing and
    /// cannot fault, whatever the address.
    #[inline]
    pub fn prefetch(&self, hash: u64) {
        let block = FrequencySketch::block_of(FrequencySketch::mix(hash), self.mask);
        let line = self.base.wrapping_add(block * std::mem::size_of::<u64>());
        #[cfg(target_arch = "x86_64")]
        // SAFETY: PREFETCHT0 is a hint that never faults and writes nothing, valid for any
        // address; SSE is part of the x86_64 baseline.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                line as *const i8,
            );
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = line;
    }
}

/// Odd 64-bit constants (from Caffeine's sketch) that mix a hash before it picks the words.
const SEEDS: [u64; 2] = [0xc3a5_c85c_97cb_3127, 0xb492_b66f_be98_f273];

/// The sketch halves its counters every this many increments per entry of capacity. Caffeine
/// and moka use 10; on the traces (Zipf 0.8-1.2 over 1M keys, and a scan loop mixed
/// in) 40 gave 1-2 points more hit ratio (10: 30.4% at s = 0.8, 20: 31.9%, 40: 32.6%), and
/// moka's figure lies between 10's and 20's. The price is slower forgetting: a key that was hot
/// keeps its count for about 40 × capacity lookups after it cooled.
const AGING_PERIOD: usize = 40;

/// Every 4-bit counter of a word with its top bit cleared: `(word >> 1) & RESET_MASK` halves all
/// sixteen counters at once.
const RESET_MASK: u64 = 0x7777_7777_7777_7777;

impl FrequencySketch {
    /// A sketch for a shard of `capacity` entries: one word (16 counters) per entry, rounded up
    /// to a power of two, at least 8.
    pub fn new(capacity: usize) -> Self {
        let words = capacity.max(8).next_power_of_two();
        FrequencySketch {
            table: vec![0; words].into_boxed_slice(),
            mask: words - 1,
            additions: 0,
            sample_size: capacity.max(8).saturating_mul(AGING_PERIOD),
        }
    }

    /// Where this sketch's counters lie, for [`SketchLines::prefetch`].
    pub fn lines(&self) -> SketchLines {
        SketchLines {
            base: self.table.as_ptr() as usize,
            mask: self.mask,
        }
    }

    /// The estimated number of recent accesses to the key with `hash`, 0 to 15.
    pub fn frequency(&self, hash: u64) -> u8 {
        let mixed = Self::mix(hash);
        let block = self.block(mixed);
        let mut least = 0xf;
        for row in 0..4 {
            let word = self.table[block + Self::word(mixed, row)];
            least = least.min((word >> Self::offset(mixed, row)) & 0xf);
        }
        least as u8
    }

    /// Counts one access to the key with `hash`; halves every counter once enough were counted.
    pub fn increment(&mut self, hash: u64) {
        let mixed = Self::mix(hash);
        let block = self.block(mixed);
        let mut added = false;
        for row in 0..4 {
            let offset = Self::offset(mixed, row);
            let word = &mut self.table[block + Self::word(mixed, row)];
            if (*word >> offset) & 0xf != 0xf {
                *word += 1 << offset;
                added = true;
            }
        }
        if added {
            self.additions += 1;
            if self.additions >= self.sample_size {
                self.age();
            }
        }
    }

    /// Halves every counter and the count of additions.
    fn age(&mut self) {
        for word in self.table.iter_mut() {
            *word = (*word >> 1) & RESET_MASK;
        }
        self.additions /= 2;
    }

    /// The first word of the key's block: 8 words, one 64-byte cache line, that hold all four
    /// of its counters (Caffeine's layout), so that an access misses the CPU cache once, not
    /// four times.
    fn block(&self, mixed: u64) -> usize {
        Self::block_of(mixed, self.mask)
    }

    fn block_of(mixed: u64, mask: usize) -> usize {
        ((mixed >> 32) as usize & mask) & !7
    }

    /// The word of `row` in the block: each row has its own two words.
    fn word(mixed: u64, row: usize) -> usize {
        row * 2 + ((mixed >> (8 * row)) & 1) as usize
    }

    /// The bit offset of `row`'s counter in its word (one of 16).
    fn offset(mixed: u64, row: usize) -> u32 {
        (((mixed >> (8 * row + 1)) & 15) as u32) << 2
    }

    /// One multiply per access for all four rows (the shard's hash already picked the shard
    /// with its low bits, so they are mixed again).
    #[inline]
    fn mix(hash: u64) -> u64 {
        let mixed = hash.wrapping_add(SEEDS[0]).wrapping_mul(SEEDS[1]);
        mixed ^ (mixed >> 29)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Result;

    fn hash(k: u64) -> u64 {
        k.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17)
    }

    #[test]
    fn counts_saturate_at_fifteen_and_age_by_halving() -> Result<()> {
        let mut sketch = FrequencySketch::new(64);
        assert_eq!(sketch.frequency(hash(1)), 0);
        for _ in 0..5 {
            sketch.increment(hash(1));
        }
        assert_eq!(sketch.frequency(hash(1)), 5);
        for _ in 0..20 {
            sketch.increment(hash(2));
        }
        assert_eq!(sketch.frequency(hash(2)), 15);
        // Fill the sample with other keys: the counters halve.
        let (mut k, mut before) = (100, 0);
        while sketch.frequency(hash(2)) == 15 {
            before = sketch.frequency(hash(1)); // grows with collisions of the filler keys
            sketch.increment(hash(k));
            k += 1;
            assert!(k < 100_000, "the sketch never aged");
        }
        assert_eq!(sketch.frequency(hash(2)), 7);
        // Halved, give or take the one increment that triggered the halving.
        assert!(sketch.frequency(hash(1)) <= before / 2 + 1);
        Ok(())
    }

    #[test]
    fn frequent_keys_stand_out_from_one_off_keys() -> Result<()> {
        let mut sketch = FrequencySketch::new(1000);
        for round in 0..4 {
            for k in 0..100 {
                sketch.increment(hash(k));
            }
            for k in 0..250 {
                sketch.increment(hash(10_000 + round * 1000 + k));
            }
        }
        let hot = (0..100).filter(|&k| sketch.frequency(hash(k)) >= 4).count();
        let cold = (0..250)
            .filter(|&k| sketch.frequency(hash(10_000 + k)) >= 4)
            .count();
        assert_eq!(hot, 100);
        assert!(cold < 25, "{cold} one-off keys look frequent");
        Ok(())
    }
}
