//! Single-producer/single-consumer rings as AF_XDP lays them out: a `u32` producer index, a
//! `u32` consumer index, a flags word and a power-of-two array of entries, all shared with the
//! other side (the kernel, or another thread for [`ring_pair`]).
//!
//! Indices are free-running `u32`s: they are never reduced modulo the size, only masked when an
//! entry is addressed, so every distance is a wrapping subtraction and is correct across the
//! 2^32 wraparound. Each side keeps cached copies of the other side's index and reloads it only
//! when the cached value cannot satisfy a request.
//!
//! Memory ordering (the contract of the kernel's `xsk_queue.h`):
//! - a producer writes entries, then publishes the producer index with `Release`;
//! - a consumer loads the producer index with `Acquire` before it reads entries, and publishes
//!   its consumer index with `Release` after it has finished reading them;
//! - a producer loads the consumer index with `Acquire` before it overwrites freed entries.
//!
//! Reservations and peeks are guards: nothing is published unless `submit` / `release` is
//! called, so dropping a guard (early return, `?`) leaves the ring as it was.
use std::{
    marker::PhantomData,
    ptr::NonNull,
    sync::{
        atomic::{fence, AtomicU32, Ordering},
        Arc,
    },
};

/// Where a ring's shared words and entries are, and what keeps that memory mapped.
pub(crate) struct RingMem<T> {
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    flags: NonNull<AtomicU32>,
    desc: NonNull<T>,
    size: u32,
    _keep: Arc<dyn Send + Sync>,
}

// SAFETY: the pointers target memory kept alive by `_keep` and accessed only through atomics or
// by the one side that owns a slot at a time (the SPSC protocol); T is plain data.
unsafe impl<T: Send> Send for RingMem<T> {}

impl<T> RingMem<T> {
    /// # Safety
    /// The pointers must target memory kept alive by `keep`: three 4-byte aligned words and
    /// `size` entries of T at `desc`; `size` must be a power of two.
    pub(crate) unsafe fn new(
        producer: *mut u32,
        consumer: *mut u32,
        flags: *mut u32,
        desc: *mut T,
        size: u32,
        keep: Arc<dyn Send + Sync>,
    ) -> Self {
        debug_assert!(size.is_power_of_two());
        RingMem {
            producer: NonNull::new_unchecked(producer.cast()),
            consumer: NonNull::new_unchecked(consumer.cast()),
            flags: NonNull::new_unchecked(flags.cast()),
            desc: NonNull::new_unchecked(desc),
            size,
            _keep: keep,
        }
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: valid for the lifetime of self (see `new`).
        unsafe { self.producer.as_ref() }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as above.
        unsafe { self.consumer.as_ref() }
    }

    fn flags(&self) -> &AtomicU32 {
        // SAFETY: as above.
        unsafe { self.flags.as_ref() }
    }

    fn slot(&self, idx: u32) -> *mut T {
        // SAFETY: masked index < size, within the entry array.
        unsafe { self.desc.as_ptr().add((idx & (self.size - 1)) as usize) }
    }
}

/// The producing side of a ring (FILL and TX for user space).
pub struct ProdRing<T> {
    mem: RingMem<T>,
    /// Our producer index; equal to the published one between operations.
    prod: u32,
    /// Cached consumer index plus the ring size: entries below it are free for us.
    limit: u32,
}

/// The consuming side of a ring (RX and COMPLETION for user space).
pub struct ConsRing<T> {
    mem: RingMem<T>,
    /// Our consumer index; equal to the published one between operations.
    cons: u32,
    /// Cached producer index: entries below it are ready for us.
    ready: u32,
}

impl<T: Copy> ProdRing<T> {
    pub(crate) fn new(mem: RingMem<T>) -> Self {
        let prod = mem.producer().load(Ordering::Relaxed);
        let limit = mem.consumer().load(Ordering::Acquire).wrapping_add(mem.size);
        ProdRing { mem, prod, limit }
    }

    pub fn size(&self) -> u32 {
        self.mem.size
    }

    /// Free entries, reloading the consumer index only when the cached value shows fewer than
    /// `want`. Never more than the ring size.
    pub fn free(&mut self, want: u32) -> u32 {
        let cached = self.limit.wrapping_sub(self.prod);
        if cached >= want && cached <= self.mem.size {
            return cached;
        }
        self.limit = self.mem.consumer().load(Ordering::Acquire).wrapping_add(self.mem.size);
        let free = self.limit.wrapping_sub(self.prod);
        debug_assert!(free <= self.mem.size, "consumer ran ahead of the producer");
        free.min(self.mem.size)
    }

    /// Entries published but not yet consumed by the other side.
    pub fn in_flight(&self) -> u32 {
        self.prod.wrapping_sub(self.mem.consumer().load(Ordering::Acquire)).min(self.mem.size)
    }

    /// Reserves up to `want` entries (fewer, possibly none, when the ring is fuller). Batches
    /// larger than the ring get at most the ring size.
    pub fn reserve(&mut self, want: u32) -> Reservation<'_, T> {
        let len = self.free(want).min(want);
        Reservation { ring: self, len }
    }

    /// Reserves, fills from `items` and submits as many entries as both allow; returns how
    /// many were produced.
    pub fn produce_from(&mut self, items: &[T]) -> u32 {
        let want = u32::try_from(items.len()).unwrap_or(u32::MAX);
        let mut r = self.reserve(want);
        let n = r.len();
        for (i, item) in items.iter().take(n as usize).enumerate() {
            r.set(i as u32, *item);
        }
        r.submit();
        n
    }

    /// Whether the kernel asked to be woken (`XDP_RING_NEED_WAKEUP`). Issues a full fence first,
    /// so a producer index published just before is ordered before the flag read (otherwise
    /// the kernel could go to sleep after we read a stale "awake" flag and never see our
    /// entries).
    pub fn needs_wakeup(&self) -> bool {
        fence(Ordering::SeqCst);
        self.mem.flags().load(Ordering::Relaxed) & crate::xsk::sys::XDP_RING_NEED_WAKEUP != 0
    }

    #[cfg(test)]
    pub(crate) fn raw_prod(&self) -> u32 {
        self.prod
    }
}

/// Entries reserved in a [`ProdRing`]; publish them with [`Reservation::submit`].
pub struct Reservation<'a, T: Copy> {
    ring: &'a mut ProdRing<T>,
    len: u32,
}

impl<T: Copy> Reservation<'_, T> {
    pub fn len(&self) -> u32 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes entry `i` (0-based within the reservation).
    pub fn set(&mut self, i: u32, value: T) {
        assert!(i < self.len, "entry {i} outside a reservation of {}", self.len);
        let slot = self.ring.mem.slot(self.ring.prod.wrapping_add(i));
        // SAFETY: the slot is free (below the consumer limit) and owned by us until submit.
        unsafe { slot.write(value) };
    }

    /// Publishes all reserved entries.
    pub fn submit(self) {
        let n = self.len;
        self.submit_first(n);
    }

    /// Publishes the first `n` entries and gives the rest back.
    pub fn submit_first(self, n: u32) {
        assert!(n <= self.len, "submitting {n} of {} reserved", self.len);
        let ring = self.ring;
        ring.prod = ring.prod.wrapping_add(n);
        ring.mem.producer().store(ring.prod, Ordering::Release);
    }
}

impl<T: Copy> ConsRing<T> {
    pub(crate) fn new(mem: RingMem<T>) -> Self {
        let cons = mem.consumer().load(Ordering::Relaxed);
        let ready = mem.producer().load(Ordering::Acquire);
        ConsRing { mem, cons, ready }
    }

    pub fn size(&self) -> u32 {
        self.mem.size
    }

    /// Entries ready to read, reloading the producer index only when the cached value shows
    /// fewer than `want`.
    pub fn available(&mut self, want: u32) -> u32 {
        let cached = self.ready.wrapping_sub(self.cons);
        if cached >= want && cached <= self.mem.size {
            return cached;
        }
        self.ready = self.mem.producer().load(Ordering::Acquire);
        let avail = self.ready.wrapping_sub(self.cons);
        debug_assert!(avail <= self.mem.size, "producer ran more than a ring ahead");
        avail.min(self.mem.size)
    }

    /// Up to `want` ready entries; consume them with [`Peek::release`].
    pub fn peek(&mut self, want: u32) -> Peek<'_, T> {
        let len = self.available(want).min(want);
        Peek { ring: self, len }
    }

    /// Reads and releases up to `out.len()` entries into `out`; returns how many.
    pub fn consume_into(&mut self, out: &mut [T]) -> u32 {
        let want = u32::try_from(out.len()).unwrap_or(u32::MAX);
        let p = self.peek(want);
        let n = p.len();
        for (i, o) in out.iter_mut().take(n as usize).enumerate() {
            *o = p.get(i as u32);
        }
        p.release();
        n
    }

    /// Whether the kernel asked to be woken (only meaningful on the RX side in zero-copy).
    pub fn needs_wakeup(&self) -> bool {
        fence(Ordering::SeqCst);
        self.mem.flags().load(Ordering::Relaxed) & crate::xsk::sys::XDP_RING_NEED_WAKEUP != 0
    }

    #[cfg(test)]
    pub(crate) fn raw_cons(&self) -> u32 {
        self.cons
    }
}

/// Entries peeked from a [`ConsRing`]; give them back to the producer with
/// [`Peek::release`].
pub struct Peek<'a, T: Copy> {
    ring: &'a mut ConsRing<T>,
    len: u32,
}

impl<T: Copy> Peek<'_, T> {
    pub fn len(&self) -> u32 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads entry `i` (0-based within the peek).
    pub fn get(&self, i: u32) -> T {
        assert!(i < self.len, "entry {i} outside a peek of {}", self.len);
        let slot = self.ring.mem.slot(self.ring.cons.wrapping_add(i));
        // SAFETY: the slot is below the producer index we acquired, so it is initialised and
        // the producer will not touch it until we release it.
        unsafe { slot.read() }
    }

    pub fn iter(&self) -> impl Iterator<Item = T> + '_ {
        (0..self.len).map(|i| self.get(i))
    }

    /// Consumes all peeked entries.
    pub fn release(self) {
        let n = self.len;
        self.release_first(n);
    }

    /// Consumes the first `n` entries; the rest stay in the ring.
    pub fn release_first(self, n: u32) {
        assert!(n <= self.len, "releasing {n} of {} peeked", self.len);
        let ring = self.ring;
        ring.cons = ring.cons.wrapping_add(n);
        ring.mem.consumer().store(ring.cons, Ordering::Release);
    }
}

#[repr(C, align(64))]
struct Padded(AtomicU32);

/// The shared words of an in-process ring, each on its own cache line.
struct HeapRing<T> {
    producer: Padded,
    consumer: Padded,
    flags: Padded,
    entries: Box<[std::cell::UnsafeCell<std::mem::MaybeUninit<T>>]>,
    _t: PhantomData<T>,
}

// SAFETY: entries are accessed only under the SPSC protocol above; T is Send.
unsafe impl<T: Send> Sync for HeapRing<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for HeapRing<T> {}

/// Ring sizes must be powers of two (the kernel masks indices) and at most 2^31.
pub(crate) fn check_ring_size(which: &str, size: u32) -> anyhow::Result<()> {
    if size == 0 || !size.is_power_of_two() || size > 1 << 31 {
        anyhow::bail!("{which} ring size {size} is not a power of two (use e.g. 2048)");
    }
    Ok(())
}

/// An in-process ring with the same layout and protocol as the kernel's, both ends in user
/// space: for queues between threads, and for testing the ring arithmetic from any starting
/// index (`start`, e.g. just below 2^32).
pub fn ring_pair<T: Copy + Send + 'static>(
    size: u32,
    start: u32,
) -> anyhow::Result<(ProdRing<T>, ConsRing<T>)> {
    check_ring_size("in-process", size)?;
    let heap = Arc::new(HeapRing::<T> {
        producer: Padded(AtomicU32::new(start)),
        consumer: Padded(AtomicU32::new(start)),
        flags: Padded(AtomicU32::new(0)),
        entries: (0..size)
            .map(|_| std::cell::UnsafeCell::new(std::mem::MaybeUninit::uninit()))
            .collect(),
        _t: PhantomData,
    });
    let mem = |heap: &Arc<HeapRing<T>>| {
        // SAFETY: all pointers target the Arc's allocation or the boxed slice it owns, alive
        // as long as the `keep` clone; UnsafeCell<MaybeUninit<T>> has T's layout.
        unsafe {
            RingMem::<T>::new(
                heap.producer.0.as_ptr(),
                heap.consumer.0.as_ptr(),
                heap.flags.0.as_ptr(),
                heap.entries.as_ptr() as *mut T,
                size,
                heap.clone() as Arc<dyn Send + Sync>,
            )
        }
    };
    let p = ProdRing::new(mem(&heap));
    let c = ConsRing::new(mem(&heap));
    Ok((p, c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_submit_peek_release_roundtrip() {
        let (mut p, mut c) = ring_pair::<u64>(8, 0).unwrap();
        assert_eq!(p.free(1), 8);
        let mut r = p.reserve(5);
        assert_eq!(r.len(), 5);
        for i in 0..5 {
            r.set(i, 100 + u64::from(i));
        }
        r.submit();
        assert_eq!(c.available(1), 5);
        let pk = c.peek(3);
        assert_eq!(pk.iter().collect::<Vec<_>>(), vec![100, 101, 102]);
        pk.release();
        let pk = c.peek(10);
        assert_eq!(pk.len(), 2);
        assert_eq!(pk.get(0), 103);
        pk.release();
        assert_eq!(c.available(1), 0);
        assert_eq!(p.free(8), 8);
    }

    #[test]
    fn dropped_guards_publish_nothing() {
        let (mut p, mut c) = ring_pair::<u64>(4, 0).unwrap();
        {
            let mut r = p.reserve(4);
            r.set(0, 1);
        }
        assert_eq!(c.available(1), 0);
        assert_eq!(p.produce_from(&[7, 8]), 2);
        {
            let _ = c.peek(2);
        }
        assert_eq!(c.available(1), 2);
        let pk = c.peek(2);
        pk.release_first(1);
        assert_eq!(c.peek(4).get(0), 8);
    }

    #[test]
    fn batches_larger_than_the_ring_are_clamped() {
        let (mut p, mut c) = ring_pair::<u64>(16, 0).unwrap();
        let items: Vec<u64> = (0..100).collect();
        assert_eq!(p.produce_from(&items), 16);
        assert_eq!(p.reserve(100).len(), 0);
        let mut out = [0u64; 100];
        assert_eq!(c.consume_into(&mut out), 16);
        assert_eq!(&out[..16], &items[..16]);
        assert_eq!(p.reserve(1000).len(), 16);
    }

    #[test]
    fn wraparound_at_2_pow_32() {
        for start in [u32::MAX - 3, u32::MAX, u32::MAX - 100, 0x8000_0000 - 5] {
            let (mut p, mut c) = ring_pair::<u64>(8, start).unwrap();
            let mut next_in = 0u64;
            let mut next_out = 0u64;
            for round in 0..200u32 {
                let want = round % 11 + 1;
                let mut r = p.reserve(want);
                for i in 0..r.len() {
                    r.set(i, next_in);
                    next_in += 1;
                }
                assert!(r.len() <= 8);
                r.submit();
                let pk = c.peek(round % 7 + 1);
                for v in pk.iter() {
                    assert_eq!(v, next_out);
                    next_out += 1;
                }
                pk.release();
                assert!(p.free(0) <= 8);
                assert_eq!(p.free(9), 8 - (next_in - next_out) as u32);
            }
            let mut out = [0u64; 8];
            let n = c.consume_into(&mut out);
            for v in &out[..n as usize] {
                assert_eq!(*v, next_out);
                next_out += 1;
            }
            assert_eq!(next_in, next_out);
            // The indices really crossed 2^32.
            assert!(p.raw_prod() < start || start < 0x8000_0000);
            assert_eq!(p.raw_prod(), c.raw_cons());
        }
    }

    #[test]
    fn full_ring_exactly_at_the_wrap() {
        let (mut p, mut c) = ring_pair::<u32>(4, u32::MAX - 1).unwrap();
        assert_eq!(p.produce_from(&[1, 2, 3, 4]), 4);
        assert_eq!(p.free(1), 0);
        assert_eq!(c.available(4), 4);
        let mut out = [0; 4];
        c.consume_into(&mut out);
        assert_eq!(out, [1, 2, 3, 4]);
        assert_eq!(p.free(4), 4);
        assert_eq!(p.raw_prod(), 2);
    }

    #[test]
    fn non_power_of_two_is_an_error() {
        let err = ring_pair::<u64>(1000, 0).err().unwrap().to_string();
        assert!(err.contains("power of two"), "{err}");
        assert!(ring_pair::<u64>(0, 0).is_err());
    }

    #[test]
    fn two_thread_stress() {
        const N: u64 = 2_000_000;
        let (mut p, mut c) = ring_pair::<u64>(256, u32::MAX - 1000).unwrap();
        let producer = std::thread::spawn(move || {
            let mut next = 0u64;
            let mut batch = 1u32;
            while next < N {
                let mut r = p.reserve(batch);
                let n = r.len().min((N - next) as u32);
                for i in 0..n {
                    r.set(i, next.wrapping_mul(0x9E37_79B9_7F4A_7C15));
                    next += 1;
                }
                r.submit_first(n);
                batch = batch % 300 + 7;
                if n == 0 {
                    std::hint::spin_loop();
                }
            }
        });
        let mut expect = 0u64;
        let mut batch = 1u32;
        while expect < N {
            let pk = c.peek(batch);
            for v in pk.iter() {
                assert_eq!(v, expect.wrapping_mul(0x9E37_79B9_7F4A_7C15), "at {expect}");
                expect += 1;
            }
            let empty = pk.is_empty();
            pk.release();
            batch = batch % 200 + 3;
            if empty {
                std::hint::spin_loop();
            }
        }
        producer.join().unwrap();
        assert_eq!(c.available(1), 0);
    }
}
