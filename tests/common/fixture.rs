//! The BPF_PROG_TEST_RUN fixture runner every program's table uses, in the spirit of Katran's
//! fixtures: a row is a frame in (or several), the map state before (the bench's base state,
//! changed by the row's setup), the verdict expected, what the program sent (checked by the
//! program's [`Bench`]), and the map state and counters after (the state before, changed by the
//! row's effect). Plus the run itself with an `xdp_md` context, counter look-ups by name, the
//! clock the programs stamp TSvals with, and a deterministic random source for the mutation
//! fuzzers.
use std::{mem::size_of, os::fd::AsFd};

use etran::{
    bpf::tcp::types::xdp_md,
    loader::counters::{self, ClassCounts, Counters},
};
use libbpf_rs::{Btf, MapHandle, MapMut, ProgramInput, ProgramMut};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_REDIRECT: u32 = 4;

pub fn as_bytes<T>(v: &T) -> &[u8] {
    // SAFETY: T is a plain #[repr(C)] type generated from the BPF object's BTF.
    unsafe { std::slice::from_raw_parts((v as *const T).cast(), size_of::<T>()) }
}

pub fn from_bytes<T: Copy>(b: &[u8]) -> T {
    assert!(b.len() >= size_of::<T>());
    // SAFETY: as above; the length was checked.
    unsafe { std::ptr::read_unaligned(b.as_ptr().cast()) }
}

/// What one test run returned: the verdict, the context after the run and the data.
pub struct RawRun {
    pub verdict: u32,
    pub ctx: xdp_md,
    pub data: Vec<u8>,
    /// The length of the frame the program was given.
    pub input_len: usize,
    /// How long the program ran, as the kernel measured it (ns).
    pub ns: u64,
}

impl RawRun {
    /// The RX metadata ingress put in front of the frame for an app (the frame grew at its
    /// head by exactly a `T`: common/backend.h's app_meta_grow), if it did.
    pub fn meta<T: Copy>(&self) -> Option<T> {
        (self.data.len() == self.input_len + size_of::<T>()).then(|| from_bytes(&self.data))
    }

    /// The RX metadata as [`RawRun::meta`] finds it, and the frame behind it (the whole data
    /// without metadata).
    pub fn split<T: Copy>(&self) -> (Option<T>, &[u8]) {
        let meta = self.meta::<T>();
        let at = if meta.is_some() { size_of::<T>() } else { 0 };
        (meta, &self.data[at..])
    }

    /// The frame as the program left it.
    pub fn frame(&self) -> &[u8] {
        &self.data
    }
}

/// Runs `prog` on `frame` as if it arrived on `ingress_ifindex`.
pub fn test_run(prog: &ProgramMut<'_>, frame: &[u8], ingress_ifindex: u32) -> RawRun {
    let md = xdp_md { data_end: frame.len() as u32, ingress_ifindex, ..Default::default() };
    let mut ctx_in = as_bytes(&md).to_vec();
    let mut ctx_out = vec![0u8; size_of::<xdp_md>()];
    // Room for the headers egress puts in front of the frame.
    let mut out = vec![0u8; frame.len() + 256];
    let input = ProgramInput {
        context_in: Some(&mut ctx_in),
        context_out: Some(&mut ctx_out),
        data_in: Some(frame),
        data_out: Some(&mut out),
        ..Default::default()
    };
    let output = prog.test_run(input).expect("test run");
    let verdict = output.return_value;
    let ns = output.duration.as_nanos() as u64;
    let len = output.data.as_ref().map_or(0, |d| d.len());
    out.truncate(len);
    RawRun { verdict, ctx: from_bytes(&ctx_out), data: out, input_len: frame.len(), ns }
}

/// The entrance's counter maps, read as `etran stats` reads them (names from its BTF).
pub struct CounterMaps {
    btf: Btf<'static>,
    traffic: MapHandle,
    drops: MapHandle,
    events: Option<MapHandle>,
}

impl CounterMaps {
    pub fn new(
        entrance: &ProgramMut<'_>,
        traffic: &MapMut<'_>,
        drops: &MapMut<'_>,
        events: Option<&MapMut<'_>>,
    ) -> Self {
        let id = libbpf_rs::Program::id_from_fd(entrance.as_fd()).unwrap();
        CounterMaps {
            btf: Btf::from_prog_id(id).unwrap(),
            traffic: MapHandle::try_from(traffic).unwrap(),
            drops: MapHandle::try_from(drops).unwrap(),
            events: events.map(|e| MapHandle::try_from(e).unwrap()),
        }
    }

    pub fn read(&self) -> Counters {
        counters::read(&self.btf, &self.traffic, &self.drops, self.events.as_ref()).unwrap()
    }
}

pub fn class<'a>(c: &'a Counters, class: &str) -> &'a ClassCounts {
    c.traffic.iter().find(|r| r.class == class).unwrap_or_else(|| panic!("no class {class}"))
}

/// (transport, pass, drop) packets of a class.
pub fn class_row(c: &Counters, name: &str) -> (u64, u64, u64) {
    let row = class(c, name);
    (row.transport.packets, row.pass.packets, row.drop.packets)
}

pub fn drop_total(c: &Counters, reason: &str) -> u64 {
    c.drops
        .iter()
        .find(|d| d.reason == reason)
        .unwrap_or_else(|| panic!("no reason {reason}"))
        .count
        .packets
}

/// Frames counted under event `event` (e.g. "tcp_tx_data").
pub fn event_total(c: &Counters, event: &str) -> u64 {
    c.events
        .iter()
        .find(|e| e.event == event)
        .unwrap_or_else(|| panic!("no event {event}"))
        .count
        .packets
}

/// How many frames each of `events` counted between `before` and `after`.
pub fn event_deltas<const N: usize>(
    before: &Counters,
    after: &Counters,
    events: [&str; N],
) -> [u64; N] {
    events.map(|e| event_total(after, e) - event_total(before, e))
}

/// How many bytes each of `events` counted between `before` and `after`.
pub fn event_bytes<const N: usize>(
    before: &Counters,
    after: &Counters,
    events: [&str; N],
) -> [u64; N] {
    let bytes = |c: &Counters, e: &str| {
        c.events.iter().find(|x| x.event == e).unwrap_or_else(|| panic!("no event {e}")).count.bytes
    };
    events.map(|e| bytes(after, e) - bytes(before, e))
}

/// Frames counted in any class and verdict.
pub fn total_frames(c: &Counters) -> u64 {
    c.traffic.iter().map(|r| r.transport.packets + r.pass.packets + r.drop.packets).sum()
}

/// Asserts that every drop between two readings was counted under a reason as well as under its
/// class.
pub fn assert_every_drop_has_a_reason(before: &Counters, after: &Counters) {
    let drops = |c: &Counters| c.drops.iter().map(|d| d.count.packets).sum::<u64>();
    let class_drops = |c: &Counters| c.traffic.iter().map(|r| r.drop.packets).sum::<u64>();
    assert_eq!(
        drops(after) - drops(before),
        class_drops(after) - class_drops(before),
        "every drop has a reason"
    );
}

/// CLOCK_MONOTONIC in ms: bpf_ktime_get_ns's clock, in the TSval unit the TCP programs use.
pub fn monotonic_ms() -> u32 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid timespec.
    assert_eq!(unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) }, 0);
    (ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000) as u32
}

/// What a row expects the program to do with each of its frames.
#[derive(Clone, Debug)]
pub enum Verdict<S> {
    /// Left to the kernel (XDP_PASS), untouched and without metadata; counted as passed.
    Pass,
    /// Dropped (XDP_DROP), counted as a drop for this reason.
    Drop(&'static str),
    /// Sent on (XDP_REDIRECT), counted as the transport's; `S` says what was sent, which the
    /// bench checks.
    Redirect(S),
    /// Taken by the transport without a redirect (XDP_DROP: handed to the daemon), counted as
    /// the transport's, without metadata.
    Consumed,
    /// Dropped and counted nowhere: the program found no work (an empty queue).
    Idle,
}

/// One row of a fixture table.
pub struct Row<B: Bench + ?Sized> {
    pub name: &'static str,
    /// Changes to the bench's base state before the frames.
    pub setup: fn(&mut B::State),
    /// The frames in, run one after the other; the verdict holds for each.
    pub frames: Vec<Vec<u8>>,
    pub verdict: Verdict<B::Sent>,
    /// Changes the frames make to the view of the state before: the view expected after.
    pub effect: fn(&mut B::View),
    /// The counter class the frames are counted in.
    pub class: &'static str,
}

impl<B: Bench> Row<B> {
    pub fn new(
        name: &'static str,
        setup: fn(&mut B::State),
        frame: Vec<u8>,
        verdict: Verdict<B::Sent>,
        effect: fn(&mut B::View),
    ) -> Row<B> {
        Row::many(name, setup, vec![frame], verdict, effect)
    }

    /// A row of several frames in a row.
    pub fn many(
        name: &'static str,
        setup: fn(&mut B::State),
        frames: Vec<Vec<u8>>,
        verdict: Verdict<B::Sent>,
        effect: fn(&mut B::View),
    ) -> Row<B> {
        Row { name, setup, frames, verdict, effect, class: B::CLASS }
    }

    /// The same row counted in another class.
    pub fn in_class(self, class: &'static str) -> Row<B> {
        Row { class, ..self }
    }
}

/// What a row's last frame did, for [`Bench::check`].
pub struct Outcome<'a, B: Bench + ?Sized> {
    pub row: &'a Row<B>,
    /// The map state the row started from.
    pub before: &'a B::State,
    /// The view expected after.
    pub want: &'a B::View,
    pub run: &'a RawRun,
    /// [`monotonic_ms`] before the row's first run and after its last.
    pub clock: (u32, u32),
    /// The counters before the row's first run and after its last.
    pub counters: (&'a Counters, &'a Counters),
}

/// A program under test and the map state its table works on.
pub trait Bench {
    /// The map state a row starts from.
    type State;
    /// What of the map state the frames may change, compared after them.
    type View: PartialEq + std::fmt::Debug;
    /// What a row says a redirected frame must be.
    type Sent;
    /// The counter class of the rows unless they say otherwise.
    const CLASS: &'static str;

    /// The state every row starts from before its setup.
    fn base(&self) -> Self::State;
    /// Puts `state` into the maps (and clears what an earlier row left).
    fn install(&self, state: &Self::State);
    /// The view of a state (the effect's starting point).
    fn view(&self, state: &Self::State) -> Self::View;
    /// The view of the maps now.
    fn after(&self) -> Self::View;
    fn run(&self, frame: &[u8]) -> RawRun;
    fn counters(&self) -> Counters;
    /// Checks what the program did with the row's last frame beyond what [`run_table`] checks
    /// itself (the verdict, counters, an untouched passed frame, the view after): what a
    /// redirect sent, above all.
    fn check(&self, _: &Outcome<'_, Self>) {}
}

/// Runs every row against `bench`, panicking with the row's name at the first mismatch: the
/// verdict of each frame, its counters (class and drop reason), an untouched frame when
/// passed, no metadata when passed or consumed, the bench's own checks, and the view after.
pub fn run_table<B: Bench>(bench: &B, rows: &[Row<B>]) {
    for row in rows {
        let name = row.name;
        let mut before = bench.base();
        (row.setup)(&mut before);
        bench.install(&before);
        let mut want = bench.view(&before);
        (row.effect)(&mut want);
        let c0 = bench.counters();
        let t0 = monotonic_ms();
        let runs: Vec<RawRun> = row.frames.iter().map(|f| bench.run(f)).collect();
        let t1 = monotonic_ms();
        let c1 = bench.counters();
        let n = row.frames.len() as u64;
        let (verdict, counted) = match row.verdict {
            Verdict::Pass => (XDP_PASS, (0, n, 0)),
            Verdict::Drop(_) => (XDP_DROP, (0, 0, n)),
            Verdict::Redirect(_) => (XDP_REDIRECT, (n, 0, 0)),
            Verdict::Consumed => (XDP_DROP, (n, 0, 0)),
            Verdict::Idle => (XDP_DROP, (0, 0, 0)),
        };
        for (run, frame) in runs.iter().zip(&row.frames) {
            assert_eq!(run.verdict, verdict, "{name}: verdict");
            if let Verdict::Pass = row.verdict {
                assert_eq!(&run.data, frame, "{name}: a passed frame is untouched");
            }
        }
        let (r0, r1) = (class_row(&c0, row.class), class_row(&c1, row.class));
        let moved = (r1.0 - r0.0, r1.1 - r0.1, r1.2 - r0.2);
        assert_eq!(moved, counted, "{name}: counted as (transport, pass, drop) of {}", row.class);
        if let Verdict::Drop(reason) = row.verdict {
            let dropped = drop_total(&c1, reason) - drop_total(&c0, reason);
            assert_eq!(dropped, n, "{name}: reason {reason}");
        }
        if let Some(run) = runs.last() {
            let counters = (&c0, &c1);
            let clock = (t0, t1);
            bench.check(&Outcome { row, before: &before, want: &want, run, clock, counters });
        }
        assert_eq!(bench.after(), want, "{name}: the state after");
    }
    eprintln!("{} rows", rows.len());
}

/// The seed of mutation fuzzer `name`: `ETRAN_FUZZ_SEED` (decimal or 0x-hex) when set, else
/// `default`. Printed, so that any run can be repeated (and other seeds explored).
pub fn fuzz_seed(name: &str, default: u64) -> u64 {
    let seed = match std::env::var("ETRAN_FUZZ_SEED") {
        Ok(v) => {
            let v = v.trim();
            let parsed = match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => v.parse(),
            };
            parsed.unwrap_or_else(|e| panic!("ETRAN_FUZZ_SEED={v}: {e}"))
        }
        Err(_) => default,
    };
    assert_ne!(seed, 0, "xorshift never leaves 0: pick another seed");
    eprintln!("{name}: fuzz seed {seed:#x} (set ETRAN_FUZZ_SEED to change it)");
    seed
}

/// What the mutation fuzzers do to a frame: one to four bit flips, random bytes or cuts, never
/// below an Ethernet header (BPF_PROG_TEST_RUN takes no shorter XDP frame).
pub fn mutate(rng: &mut Rng, frame: &mut Vec<u8>) {
    for _ in 0..=rng.below(4) {
        match rng.below(3) {
            0 => {
                let at = rng.below(frame.len());
                frame[at] ^= 1 << rng.below(8);
            }
            1 => {
                let at = rng.below(frame.len());
                frame[at] = rng.next_u64() as u8;
            }
            _ => frame.truncate(14.max(rng.below(frame.len() + 1))),
        }
    }
}

/// xorshift64*: deterministic, so a failure names a reproducible seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}
