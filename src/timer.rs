//! A hierarchical timing wheel for the daemon's timers (TCP retransmission timeouts, Homa
//! RESENDs, per-RTT congestion-control updates): O(1) insert and cancel, expiry in tick order,
//! thousands of timers without a heap.
//!
//! Four levels of 64 slots; level l slots are 64^l ticks wide. A timer sits at the lowest level
//! whose span covers its distance, and moves down (cascades) as the wheel turns towards it.
use std::time::{Duration, Instant};

const SLOT_BITS: u32 = 6;
const SLOTS: usize = 1 << SLOT_BITS;
const LEVELS: usize = 4;
/// Farthest a timer can be placed, in ticks; later deadlines wait at the top and cascade again.
const HORIZON: u64 = 1 << (SLOT_BITS * LEVELS as u32);

/// Names a timer for cancelling; stale ids (already fired or cancelled) are harmless.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId {
    index: usize,
    generation: u32,
}

struct Entry<T> {
    deadline: u64,
    generation: u32,
    value: Option<T>,
}

pub struct TimerWheel<T> {
    tick: Duration,
    start: Instant,
    /// Every tick up to and including this one has been processed.
    now: u64,
    slots: Vec<Vec<usize>>,
    /// Entries held in each level's slots (cancelled ones included until recycled).
    level_len: [usize; LEVELS],
    entries: Vec<Entry<T>>,
    free: Vec<usize>,
    /// Timers whose deadline had already passed when they were added.
    overdue: Vec<usize>,
    len: usize,
}

impl<T> TimerWheel<T> {
    pub fn new(tick: Duration, start: Instant) -> Self {
        assert!(!tick.is_zero(), "a timer wheel needs a non-zero tick");
        TimerWheel {
            tick,
            start,
            now: 0,
            slots: (0..SLOTS * LEVELS).map(|_| Vec::new()).collect(),
            level_len: [0; LEVELS],
            entries: Vec::new(),
            free: Vec::new(),
            overdue: Vec::new(),
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first tick boundary at or after `t`: a timer for `t` fires once the wheel has
    /// turned past it, never early.
    fn tick_of(&self, t: Instant) -> u64 {
        let nanos = t.saturating_duration_since(self.start).as_nanos();
        nanos.div_ceil(self.tick.as_nanos()) as u64
    }

    /// When tick `tick` begins.
    fn instant_of(&self, tick: u64) -> Instant {
        let nanos = u64::try_from(self.tick.as_nanos()).unwrap_or(u64::MAX);
        self.start + Duration::from_nanos(tick.saturating_mul(nanos))
    }

    /// Adds a timer that fires at `deadline` (at the first `expire` at or after it).
    pub fn insert(&mut self, deadline: Instant, value: T) -> TimerId {
        let deadline = self.tick_of(deadline);
        let index = match self.free.pop() {
            Some(i) => {
                let e = &mut self.entries[i];
                e.deadline = deadline;
                e.value = Some(value);
                i
            }
            None => {
                self.entries.push(Entry { deadline, generation: 0, value: Some(value) });
                self.entries.len() - 1
            }
        };
        self.len += 1;
        self.place(index);
        TimerId { index, generation: self.entries[index].generation }
    }

    fn place(&mut self, index: usize) {
        let deadline = self.entries[index].deadline;
        if deadline <= self.now {
            self.overdue.push(index);
            return;
        }
        let distance = (deadline - self.now).min(HORIZON - 1);
        let level = (63 - distance.leading_zeros()) as usize / SLOT_BITS as usize;
        let at = (self.now + distance) >> (SLOT_BITS * level as u32);
        self.slots[level * SLOTS + (at as usize & (SLOTS - 1))].push(index);
        self.level_len[level] += 1;
    }

    /// Cancels a pending timer and returns its value; None when it already fired or was
    /// cancelled.
    pub fn cancel(&mut self, id: TimerId) -> Option<T> {
        let e = self.entries.get_mut(id.index)?;
        if e.generation != id.generation {
            return None;
        }
        let value = e.value.take()?;
        // The slot keeps the index until the wheel reaches it; release() recycles it then.
        e.generation = e.generation.wrapping_add(1);
        self.len -= 1;
        Some(value)
    }

    /// Takes the value of a due entry (None if cancelled) and, either way, frees its slot.
    fn release(&mut self, index: usize) -> Option<T> {
        let e = &mut self.entries[index];
        let value = e.value.take();
        if value.is_some() {
            e.generation = e.generation.wrapping_add(1);
            self.len -= 1;
        }
        self.free.push(index);
        value
    }

    /// Fires every timer due at `now`, in deadline order, pushing their values to `fired`.
    pub fn expire(&mut self, now: Instant, fired: &mut Vec<T>) {
        for index in std::mem::take(&mut self.overdue) {
            fired.extend(self.release(index));
        }
        let elapsed = now.saturating_duration_since(self.start).as_nanos() / self.tick.as_nanos();
        let target = (elapsed as u64).max(self.now);
        // Skip idle stretches quickly: nothing pending means nothing to cascade.
        if self.len == 0 && self.overdue.is_empty() {
            self.now = target;
            self.free_cancelled_slots();
            return;
        }
        while self.now < target {
            // Jump over ticks where the lower levels hold nothing: no timer fires and no slot
            // cascades before the next boundary of the first non-empty level.
            let mut next = self.now + 1;
            for level in 0..LEVELS - 1 {
                if self.level_len[level] != 0 {
                    break;
                }
                let span = 1u64 << (SLOT_BITS * (level as u32 + 1));
                next = (self.now / span + 1) * span;
            }
            if next > target {
                self.now = target;
                break;
            }
            self.now = next;
            self.cascade();
            let slot = std::mem::take(&mut self.slots[self.now as usize & (SLOTS - 1)]);
            self.level_len[0] -= slot.len();
            for index in slot {
                fired.extend(self.release(index));
            }
        }
    }

    /// Moves the timers of each higher-level slot the wheel has just entered one level down.
    fn cascade(&mut self) {
        for level in 1..LEVELS {
            let shift = SLOT_BITS * level as u32;
            if self.now & ((1 << shift) - 1) != 0 {
                break;
            }
            let slot = (self.now >> shift) as usize & (SLOTS - 1);
            let taken = std::mem::take(&mut self.slots[level * SLOTS + slot]);
            self.level_len[level] -= taken.len();
            for index in taken {
                if self.entries[index].value.is_none() {
                    self.free.push(index);
                } else if self.entries[index].deadline <= self.now {
                    // Due this very tick: join the level-0 slot that expire() drains next.
                    self.slots[self.now as usize & (SLOTS - 1)].push(index);
                    self.level_len[0] += 1;
                } else {
                    self.place(index);
                }
            }
        }
    }

    /// With nothing pending, slots may still hold cancelled entries: recycle them all.
    fn free_cancelled_slots(&mut self) {
        for slot in &mut self.slots {
            self.free.append(slot);
        }
        self.level_len = [0; LEVELS];
    }

    /// When the earliest pending timer is due (at tick resolution; timers far away are
    /// reported at their current slot's start, which is never late). For a poll timeout.
    pub fn next_deadline(&self) -> Option<Instant> {
        if !self.overdue.is_empty() {
            return Some(self.instant_of(self.now));
        }
        if self.len == 0 {
            return None;
        }
        for level in 0..LEVELS {
            let shift = SLOT_BITS * level as u32;
            let base = self.now >> shift;
            for step in 1..=SLOTS as u64 {
                let at = base + step;
                let slot = &self.slots[level * SLOTS + (at as usize & (SLOTS - 1))];
                if slot.iter().any(|&i| self.entries[i].value.is_some()) {
                    return Some(self.instant_of((at << shift).max(self.now + 1)));
                }
            }
        }
        Some(self.instant_of(self.now + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_micros(100);

    fn wheel() -> (TimerWheel<u32>, Instant) {
        let t0 = Instant::now();
        (TimerWheel::new(TICK, t0), t0)
    }

    #[test]
    fn timers_fire_at_their_deadline_not_before() {
        let (mut w, t0) = wheel();
        w.insert(t0 + TICK * 10, 1);
        let mut fired = Vec::new();
        w.expire(t0 + TICK * 9, &mut fired);
        assert!(fired.is_empty());
        w.expire(t0 + TICK * 10, &mut fired);
        assert_eq!(fired, [1]);
        assert!(w.is_empty());
    }

    #[test]
    fn cancelled_timers_never_fire_and_stale_ids_are_harmless() {
        let (mut w, t0) = wheel();
        let a = w.insert(t0 + TICK * 5, 1);
        let b = w.insert(t0 + TICK * 5000, 2);
        assert_eq!(w.cancel(a), Some(1));
        assert_eq!(w.cancel(a), None);
        let mut fired = Vec::new();
        w.expire(t0 + TICK * 6000, &mut fired);
        assert_eq!(fired, [2]);
        assert_eq!(w.cancel(b), None, "already fired");
        // The recycled entry gets a new generation: the old id cannot cancel the new timer.
        let c = w.insert(t0 + TICK * 7000, 3);
        assert_eq!(w.cancel(a), None);
        assert_eq!(w.cancel(c), Some(3));
    }

    #[test]
    fn overdue_timers_fire_at_the_next_expire() {
        let (mut w, t0) = wheel();
        let mut fired = Vec::new();
        w.expire(t0 + TICK * 100, &mut fired);
        w.insert(t0, 7);
        w.expire(t0 + TICK * 100, &mut fired);
        assert_eq!(fired, [7]);
    }

    #[test]
    fn random_timers_fire_in_order_across_every_level() {
        let (mut w, t0) = wheel();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut expected = Vec::new();
        let mut ids = Vec::new();
        for v in 0..3000u32 {
            // Distances from one tick to beyond the horizon, log-spread over the levels.
            let ticks = 1 + rand() % (1 << (rand() % 26));
            ids.push((w.insert(t0 + TICK * ticks as u32, v), ticks, v));
        }
        for (id, ticks, v) in ids {
            if v % 7 == 0 {
                assert_eq!(w.cancel(id), Some(v));
            } else {
                expected.push((ticks, v));
            }
        }
        expected.sort();
        let mut fired = Vec::new();
        let mut now = 0u64;
        while !w.is_empty() {
            let next = w.next_deadline().expect("pending timers have a deadline");
            let next_tick = (next - t0).as_nanos().div_ceil(TICK.as_nanos()) as u64;
            assert!(next_tick > now || now == 0, "next deadline moves forward");
            now = next_tick.max(now + 1);
            let before = fired.len();
            w.expire(t0 + TICK * now as u32, &mut fired);
            for &v in &fired[before..] {
                let (deadline, _) = expected.iter().find(|(_, e)| *e == v).unwrap();
                assert_eq!(*deadline, now, "timer {v} fires exactly at its deadline tick");
            }
        }
        let mut by_value: Vec<u32> = expected.iter().map(|(_, v)| *v).collect();
        let mut got = fired.clone();
        by_value.sort();
        got.sort();
        assert_eq!(got, by_value, "every live timer fired exactly once");
    }

    #[test]
    fn big_jumps_fire_everything_due_and_nothing_else() {
        let (mut w, t0) = wheel();
        let deadlines: Vec<u64> = (0..500u64).map(|i| (i * i * 7919) % 300_000 + 1).collect();
        for (v, d) in deadlines.iter().enumerate() {
            w.insert(t0 + TICK * *d as u32, v as u32);
        }
        let mut fired = Vec::new();
        let mut now = 0u64;
        for step in [1u64, 63, 64, 65, 4000, 4096, 30_000, 262_144, 1_000_000] {
            now += step;
            w.expire(t0 + TICK * now as u32, &mut fired);
            let due = deadlines.iter().filter(|d| **d <= now).count();
            assert_eq!(fired.len(), due, "after jumping to tick {now}");
            assert!(fired.iter().all(|v| deadlines[*v as usize] <= now));
        }
        assert!(w.is_empty());
    }
}
