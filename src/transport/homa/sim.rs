//! A few senders and one receiver, end to end through the pure modules: each sender's
//! [`Sender`] picks its packets (SRPT, within its grants), the receiver's downlink is one packet
//! a tick with Homa's priority queues (highest level first, FIFO within a level), the receiver
//! assembles messages ([`MessageIn`]) and grants ([`GrantScheduler`]), and GRANTs travel back.
//! Every message is checked byte for byte; the scheduler's bounds are checked at every step.
use std::collections::{BTreeMap, VecDeque};

use super::{
    grant::{GrantConfig, GrantScheduler},
    msgin::MessageIn,
    msgout::{Sender, UNSCHED_BYTES},
    prio::Cutoffs,
};

/// A message: (sender, its number).
type Key = (usize, u32);

/// Bytes `[start, end)` of message `key`: a random pool, read from a place of its own for
/// each message (copied a slice at a time: the tests move tens of megabytes).
fn content(key: Key, start: u32, end: u32) -> Vec<u8> {
    const POOL: usize = 4099; // prime, so no two messages line up
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let pool = BYTES.get_or_init(|| {
        let mut rng = etran_testkit::fixture::Rng(0x9e37_79b9);
        (0..POOL).map(|_| rng.next_u64() as u8).collect()
    });
    let len = (end - start) as usize;
    let mut out = Vec::with_capacity(len);
    let mut at = (start as usize + key.0 * 613 + key.1 as usize * 1021) % POOL;
    while out.len() < len {
        let n = (POOL - at).min(len - out.len());
        out.extend_from_slice(&pool[at..at + n]);
        at = (at + n) % POOL;
    }
    out
}

struct Packet {
    key: Key,
    offset: u32,
    payload: Vec<u8>,
    message_length: u32,
    incoming: u32,
    priority: u8,
}

struct Host {
    sender: Sender<Key>,
    /// Messages not started yet: their lengths, in order.
    todo: VecDeque<u32>,
    /// The length of each message started and not complete at the receiver.
    live: BTreeMap<u32, (u32, u32)>,
    /// Start each message only once the previous one completed (closed loop, one
    /// outstanding), rather than all at once.
    closed_loop: bool,
    started: u32,
}

struct Sim {
    now: u64,
    /// One-way delay of the network, in ticks.
    delay: u64,
    hosts: Vec<Host>,
    in_flight: VecDeque<(u64, Packet)>,
    /// The receiver's downlink: a FIFO per priority level.
    queues: [VecDeque<Packet>; 8],
    grants_back: VecDeque<(u64, Key, u32, u8)>,
    sched: GrantScheduler<Key, usize>,
    cfg: GrantConfig,
    assembling: BTreeMap<Key, MessageIn>,
    /// (message, its length, tick it started, tick it completed).
    done: Vec<(Key, u32, u64, u64)>,
    started_at: BTreeMap<Key, u64>,
    most_active: usize,
}

impl Sim {
    fn new(cfg: GrantConfig, workloads: Vec<(Vec<u32>, bool)>) -> Sim {
        let hosts = workloads
            .into_iter()
            .map(|(todo, closed_loop)| Host {
                sender: Sender::new(UNSCHED_BYTES),
                todo: todo.into(),
                live: BTreeMap::new(),
                closed_loop,
                started: 0,
            })
            .collect();
        Sim {
            now: 0,
            delay: 5,
            hosts,
            in_flight: VecDeque::new(),
            queues: Default::default(),
            grants_back: VecDeque::new(),
            sched: GrantScheduler::new(cfg),
            cfg,
            assembling: BTreeMap::new(),
            done: Vec::new(),
            started_at: BTreeMap::new(),
            most_active: 0,
        }
    }

    fn step(&mut self) {
        while self.grants_back.front().is_some_and(|g| g.0 <= self.now) {
            let (_, key, offset, priority) = self.grants_back.pop_front().expect("due");
            self.hosts[key.0].sender.on_grant(key, offset, priority);
        }
        for (h, host) in self.hosts.iter_mut().enumerate() {
            let may_start = !host.closed_loop || host.live.is_empty();
            if may_start {
                while let Some(len) = host.todo.pop_front() {
                    let key = (h, host.started);
                    host.started += 1;
                    let prio = Cutoffs::RECEIVER.unsched_priority(len);
                    let incoming = host.sender.add(key, len, prio);
                    host.live.insert(key.1, (len, incoming));
                    self.started_at.insert(key, self.now);
                    if host.closed_loop {
                        break;
                    }
                }
            }
            // Each host's uplink, like the receiver's downlink, carries a packet a tick.
            if let Some(seg) = host.sender.next_segment() {
                let (message_length, incoming) = host.live[&seg.key.1];
                let payload = content(seg.key, seg.offset, seg.offset + seg.len);
                let p = Packet {
                    key: seg.key,
                    offset: seg.offset,
                    payload,
                    message_length,
                    incoming,
                    priority: seg.priority,
                };
                self.in_flight.push_back((self.now + self.delay, p));
            }
        }
        while self.in_flight.front().is_some_and(|p| p.0 <= self.now) {
            let (_, p) = self.in_flight.pop_front().expect("due");
            self.queues[usize::from(p.priority)].push_back(p);
        }
        if let Some(p) = self.queues.iter_mut().rev().find_map(|q| q.pop_front()) {
            self.receive(p);
        }
        self.now += 1;
    }

    fn receive(&mut self, p: Packet) {
        let m = self
            .assembling
            .entry(p.key)
            .or_insert_with(|| MessageIn::new(p.message_length).expect("fits"));
        m.add(p.offset, &p.payload).expect("inside the message");
        let received = m.received();
        self.sched.add(p.key, p.key.0, p.message_length, p.incoming);
        self.sched.received(p.key, received);
        if received == p.message_length {
            let bytes = self.assembling.remove(&p.key).and_then(MessageIn::into_bytes);
            let want = content(p.key, 0, p.message_length);
            assert!(bytes == Some(want), "{:?} arrived intact", p.key);
            self.done.push((p.key, p.message_length, self.started_at[&p.key], self.now));
            let host = &mut self.hosts[p.key.0];
            host.live.remove(&p.key.1);
            host.sender.remove(p.key);
        }
        let grants = self.sched.grants();
        let active = self.sched.active();
        assert!(active.len() <= self.cfg.max_overcommit, "overcommit");
        for (i, a) in active.iter().enumerate() {
            assert!(active[..i].iter().all(|b| b.0 != a.0), "one active message per peer");
        }
        self.most_active = self.most_active.max(active.len());
        if !grants.is_empty() {
            assert!(
                self.sched.total_incoming() <= u64::from(self.cfg.max_incoming),
                "grants never exceed the cap"
            );
        }
        for g in grants {
            self.grants_back.push_back((self.now + self.delay, g.key, g.offset, g.priority));
        }
    }

    fn run_until(&mut self, ticks: u64, mut stop: impl FnMut(&Sim) -> bool) {
        while self.now < ticks && !stop(self) {
            self.step();
        }
    }

    fn finished(&self, key: Key) -> Option<u64> {
        self.done.iter().find(|d| d.0 == key).map(|d| d.3)
    }
}

const KB: u32 = 1000;

/// Short messages that start after a long one still finish first, shortest first.
#[test]
fn srpt_short_messages_overtake_a_long_one() {
    let sizes = [300 * KB, 20 * KB, 120 * KB, 60 * KB];
    let mut workloads = vec![(vec![2000 * KB], false)];
    workloads.extend(sizes.iter().map(|_| (vec![], false)));
    let mut sim = Sim::new(GrantConfig::default(), workloads);
    // The long message is well under way before the short ones begin.
    sim.run_until(200, |_| false);
    for (h, &size) in sim.hosts[1..].iter_mut().zip(&sizes) {
        h.todo.push_back(size);
    }
    sim.run_until(100_000, |s| s.done.len() == 5);
    assert_eq!(sim.done.len(), 5, "all complete");
    let long = sim.finished((0, 0)).expect("done");
    let order: Vec<u32> = sim.done.iter().map(|d| d.1).collect();
    assert_eq!(order, [20 * KB, 60 * KB, 120 * KB, 300 * KB, 2000 * KB], "shortest first");
    assert!(sim.done[..4].iter().all(|d| d.3 < long));
}

/// Hosts sending messages of every size at once to one receiver (incast): at most 8
/// messages are granted at a time, one per peer, grants never take the incoming bytes past
/// the cap, and every message arrives intact.
#[test]
fn incast_keeps_the_overcommit_and_the_cap() {
    let mut rng = etran_testkit::fixture::Rng(0x1_7ca57);
    let workloads: Vec<(Vec<u32>, bool)> = (0..12)
        .map(|_| {
            let sizes = (0..4).map(|_| 1 + rng.below(1_500_000) as u32).collect();
            (sizes, false)
        })
        .collect();
    let total: u64 = workloads.iter().flat_map(|w| &w.0).map(|&s| u64::from(s)).sum();
    let mut sim = Sim::new(GrantConfig::default(), workloads);
    sim.run_until(200_000, |s| s.done.len() == 48);
    assert_eq!(sim.done.len(), 48, "all complete");
    assert_eq!(sim.most_active, 8, "the receiver kept 8 messages granted");
    // The downlink stayed busy: the run took little more than its bytes' worth of packets.
    let packets = total / u64::from(super::MAX_PAYLOAD);
    assert!(sim.now < packets + packets / 50, "{} ticks for {packets} packets", sim.now);
}

/// A long message from one host while ten others keep sending shorter ones, so it never
/// ranks among the 8 active: the FIFO share still brings it home; without it, it starves.
#[test]
fn the_fifo_share_keeps_a_long_message_from_starving() {
    let run = |fifo_fraction, ticks| {
        let cfg = GrantConfig { fifo_fraction, ..GrantConfig::default() };
        let mut workloads = vec![(vec![1000 * KB], false)];
        workloads.extend((0..10).map(|_| (vec![100 * KB; 1000], true)));
        let mut sim = Sim::new(cfg, workloads);
        sim.run_until(ticks, |s| s.finished((0, 0)).is_some());
        sim
    };
    let with = run(50, 100_000);
    let long = with.finished((0, 0)).expect("the long message completes");
    let shorts = with.done.iter().filter(|d| d.0 .0 != 0).count();
    assert!(shorts > 150, "while {shorts} short ones went by");

    let without = run(0, long);
    assert_eq!(without.finished((0, 0)), None, "starved without the FIFO share");
    let got = without.assembling.get(&(0, 0)).map_or(0, MessageIn::received);
    // What it got while it was alone, before the short ones arrived: no more.
    assert!(got < 300 * KB, "{got} bytes");
    assert!(without.done.len() > 150);
}
