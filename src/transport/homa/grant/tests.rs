use super::*;

const MB: u32 = 1 << 20;

fn sched() -> GrantScheduler<u32, u32> {
    GrantScheduler::new(GrantConfig::default())
}

#[test]
fn one_message_gets_half_the_cap_on_a_packet_boundary() {
    let mut s = sched();
    assert!(s.add(1, 7, MB, 41_296));
    let g = s.grants();
    // window = 400,000 / (1 active + 1); 200,000 rounds down to 140 packets.
    assert_eq!(g, [Grant { key: 1, offset: 140 * MAX_PAYLOAD, priority: 0, fifo: false }]);
    assert_eq!(s.total_incoming(), u64::from(140 * MAX_PAYLOAD));
    assert_eq!(s.grants(), [], "nothing new until data arrives");
    s.received(1, 10 * MAX_PAYLOAD);
    assert_eq!(s.grants()[0].offset, 150 * MAX_PAYLOAD, "the window slides with what arrived");
}

#[test]
fn unscheduled_only_messages_need_no_grants() {
    let mut s = sched();
    assert!(!s.add(1, 7, 1000, 1000));
    assert!(!s.add(2, 7, 40_000, 41_296));
    assert_eq!(s.grants(), []);
    assert_eq!(s.total_incoming(), 0);
}

#[test]
fn the_end_of_a_message_is_granted_exactly() {
    let mut s = sched();
    s.add(1, 7, 50_000, 41_296);
    assert_eq!(s.grants()[0].offset, 50_000);
    s.received(1, 50_000);
    assert_eq!(s.granted(1), None, "complete: gone");
    assert_eq!(s.total_incoming(), 0);
}

#[test]
fn shortest_remaining_first_with_priorities_by_rank() {
    let mut s = sched();
    for (key, len) in [(1, 4 * MB), (2, MB), (3, 2 * MB), (4, 300_000)] {
        s.add(key, key, len, 0);
    }
    assert_eq!(s.active(), [4, 2, 3, 1]);
    let g = s.grants();
    // Four active fill the four scheduled levels 3..0, shortest highest.
    let prios: Vec<(u32, u8)> = g.iter().map(|g| (g.key, g.priority)).collect();
    assert_eq!(prios, [(4, 3), (2, 2), (3, 1), (1, 0)]);
    assert!(s.total_incoming() <= 400_000);
    // With two active they take the two lowest levels.
    let mut s = sched();
    s.add(1, 1, MB, 0);
    s.add(2, 2, 2 * MB, 0);
    let prios: Vec<u8> = s.grants().iter().map(|g| g.priority).collect();
    assert_eq!(prios, [1, 0]);
}

#[test]
fn one_active_message_per_peer() {
    let mut s = sched();
    s.add(1, 7, MB, 0);
    s.add(2, 7, 2 * MB, 0);
    s.add(3, 8, 3 * MB, 0);
    assert_eq!(s.active(), [1, 3], "peer 7's longer message waits");
    let keys: Vec<u32> = s.grants().iter().map(|g| g.key).collect();
    assert_eq!(keys, [1, 3]);
    s.received(1, MB);
    assert_eq!(s.active(), [2, 3], "its turn once the shorter is complete");
}

#[test]
fn at_most_eight_active_and_the_cap_holds() {
    let mut s = sched();
    for key in 0..12u32 {
        s.add(key, key, MB + key * 10_000, 0);
    }
    assert_eq!(s.active(), (0..8).collect::<Vec<_>>());
    let g = s.grants();
    assert!(g.iter().all(|g| g.key < 8), "the four longest get nothing");
    assert!(s.total_incoming() <= 400_000);
    // window = 400,000 / 9 = 44,444: 31 packets each, and 8 of them fit under the cap.
    assert_eq!(g.len(), 8);
    assert!(g.iter().all(|g| g.offset == 31 * MAX_PAYLOAD));
    // As data arrives the cap frees and grants follow, never beyond it.
    for key in 0..8 {
        s.received(key, 31 * MAX_PAYLOAD);
        s.grants();
        assert!(s.total_incoming() <= 400_000);
    }
    // A shorter newcomer is active at once, bumping the longest of the eight.
    s.add(100, 100, 10_000, 0);
    assert_eq!(s.active().first(), Some(&100));
    assert!(!s.active().contains(&7));
}

#[test]
fn unscheduled_bytes_count_toward_the_cap() {
    let mut s = sched();
    // Ten new messages announce 41,296 unscheduled bytes each: 412,960 incoming already.
    for key in 0..10u32 {
        s.add(key, key, MB, 41_296);
    }
    assert_eq!(s.total_incoming(), 412_960);
    assert_eq!(s.grants(), [], "over the cap: no grants");
    s.received(0, 41_296);
    assert!(!s.grants().is_empty());
    assert!(s.total_incoming() <= 400_000);
}

#[test]
fn fifo_grants_go_to_the_oldest_at_high_priority() {
    let cfg = GrantConfig { max_overcommit: 1, ..GrantConfig::default() };
    let mut s = GrantScheduler::new(cfg);
    s.add(1, 1, 60 * MB, 0); // oldest, longest: never active
    s.add(2, 2, 30 * MB, 0);
    let mut fifo = Vec::new();
    let mut by_rank = 0;
    for _ in 0..100 {
        for g in s.grants() {
            if g.fifo {
                fifo.push(g);
            } else {
                assert_eq!(g.key, 2, "the active one");
                by_rank = g.offset;
            }
        }
        // Both senders send all they may, and it all arrives.
        for key in [1, 2] {
            s.received(key, s.granted(key).expect("not done"));
        }
    }
    assert!(fifo.iter().all(|g| g.key == 1 && g.priority == HIGH_PRIORITY), "{fifo:?}");
    // 50 per mille: a 50,000-byte grant (in whole packets) per 950,000 granted by rank.
    assert_eq!(fifo[0].offset, 50_000 - 50_000 % MAX_PAYLOAD);
    assert!((by_rank / 950_000).abs_diff(fifo.len() as u32) <= 1, "{} FIFO grants", fifo.len());
}

/// Every message from one peer (`bench rpc` between two hosts): four long messages came
/// first, and the one SRPT serves is shorter. Each of the four is owed its own FIFO share, so
/// 4 × 50 per mille of the grants go to them, oldest first (5 % before: the long ones came
/// faster than it carried them and starved for hundreds of milliseconds).
#[test]
fn the_fifo_share_grows_with_the_messages_srpt_bypassed() {
    let mut s = sched();
    for key in 1..=4 {
        s.add(key, 7, 60 * MB, 0);
    }
    s.add(10, 7, 30 * MB, 0);
    let (mut fifo, mut by_rank) = (0u64, 0u64);
    // 100 rounds: message 10 is far from done.
    for _ in 0..100 {
        for g in s.grants() {
            let before = if g.fifo { &mut fifo } else { &mut by_rank };
            if g.fifo {
                assert_eq!(g.key, 1, "the oldest");
            } else {
                assert_eq!(g.key, 10, "the one SRPT serves");
            }
            *before += 1;
        }
        for key in [1, 2, 3, 4, 10] {
            s.received(key, s.granted(key).expect("not done"));
        }
    }
    let fifo_bytes = u64::from(s.granted(1).unwrap());
    let rank_bytes = u64::from(s.granted(10).unwrap());
    let share = fifo_bytes * 1000 / (fifo_bytes + rank_bytes);
    assert!(
        (180..=220).contains(&share),
        "{share} per mille ({fifo} FIFO grants, {by_rank} by rank)"
    );
    // One bypassed message: HomaModule's 5 %; and never past half.
    assert_eq!(fifo_share(50, 1), 50);
    assert_eq!(fifo_share(50, 0), 50);
    assert_eq!(fifo_share(50, 30), FIFO_FRACTION_MAX);
}

/// A peer's bytes on the way stay within one window: its active message leaves room for
/// what its other messages were granted and did not deliver (here unscheduled bytes).
#[test]
fn a_peer_has_one_window_on_the_way() {
    let mut s = sched();
    s.add(1, 7, MB, 0);
    s.add(2, 7, 2 * MB, 41_296);
    let g = s.grants();
    // window = 400,000 / 2 = 200,000, less message 2's 41,296, cut to a packet boundary.
    let want = (200_000 - 41_296) / MAX_PAYLOAD * MAX_PAYLOAD;
    assert_eq!(g, [Grant { key: 1, offset: want, priority: 0, fifo: false }]);
    s.received(2, 41_296);
    s.received(1, MAX_PAYLOAD);
    let g = s.grants();
    assert_eq!(g[0].offset, (200_000 + MAX_PAYLOAD) / MAX_PAYLOAD * MAX_PAYLOAD, "a whole window");
}

#[test]
fn no_fifo_when_disabled() {
    let cfg = GrantConfig { max_overcommit: 1, fifo_fraction: 0, ..GrantConfig::default() };
    let mut s = GrantScheduler::new(cfg);
    s.add(1, 1, 60 * MB, 0);
    s.add(2, 2, 30 * MB, 0);
    for _ in 0..100 {
        assert!(s.grants().iter().all(|g| g.key == 2));
        let r = s.granted(2).expect("not done");
        s.received(2, r);
    }
}

#[test]
fn removed_messages_give_back_their_incoming() {
    let mut s = sched();
    s.add(1, 1, MB, 41_296);
    s.grants();
    assert!(s.total_incoming() > 0);
    s.remove(1);
    assert_eq!(s.total_incoming(), 0);
    s.remove(1);
    s.received(1, 5);
    assert_eq!(s.granted(1), None);
}

/// The model's side of the Homa ingress fixture row "the FIFO share grows with the messages
/// SRPT bypassed" (tests/fixtures/homa.rs, which runs the BPF scheduler on the same messages):
/// the oldest of three long messages behind a shorter one of their host, 41,296 unscheduled
/// bytes each, the FIFO count one byte past 15 %'s due (5 % would not be due): the oldest gets
/// its 50,000 bytes, on a packet boundary, and the count what is left of it.
#[test]
fn three_bypassed_messages_make_a_fifo_grant_due_three_times_sooner() {
    const UNSCHED: u32 = etran_homa_limit::ETRAN_HOMA_UNSCHED_LIMIT.0;
    let due = 50_000 * 850 / 150;
    let mut s = sched();
    s.add(1, 7, 1_000_000, UNSCHED);
    s.received(1, 11 * MAX_PAYLOAD);
    s.add(2, 7, 2_000_000, UNSCHED);
    s.add(3, 7, 3_000_000, UNSCHED);
    s.add(4, 7, 100_000, 60_000);
    s.received(4, 50_000);
    s.since_fifo = due + 1;
    let fifo = Grant {
        key: 1,
        offset: (UNSCHED + 50_000) / MAX_PAYLOAD * MAX_PAYLOAD,
        priority: HIGH_PRIORITY,
        fifo: true,
    };
    assert_eq!(s.grants()[0], fifo);
    // One bypassed message: 5 %, not due yet.
    let mut s = sched();
    s.add(1, 7, 1_000_000, UNSCHED);
    s.add(4, 7, 100_000, 60_000);
    s.since_fifo = due + 1;
    assert!(s.grants().iter().all(|g| !g.fifo));
}

/// The model's side of the Homa ingress fixture row "the FIFO share goes to the oldest message
/// though more of it arrived than it was granted": a peer whose unscheduled bytes are more than
/// ours sent 40 packets of a message granted 29. Nothing of its grant is on the way, so it is
/// not ignoring grants (HomaModule's signed difference is negative): the FIFO share is its.
#[test]
fn the_fifo_share_goes_to_a_message_that_received_more_than_its_grant() {
    const UNSCHED: u32 = etran_homa_limit::ETRAN_HOMA_UNSCHED_LIMIT.0;
    let mut s = sched();
    s.add(1, 7, 1_000_000, UNSCHED);
    s.received(1, 41 * MAX_PAYLOAD);
    s.add(4, 7, 100_000, 60_000);
    s.received(4, 50_000);
    s.since_fifo = 50_000 * 950 / 50;
    let offset = (UNSCHED + 50_000) / MAX_PAYLOAD * MAX_PAYLOAD;
    assert_eq!(s.grants()[0], Grant { key: 1, offset, priority: HIGH_PRIORITY, fifo: true });
}

/// The model's side of the Homa ingress fixture row "the FIFO share passes over the oldest
/// message when it ignores grants": the oldest was granted a window and two increments past
/// what arrived (its peer does not answer), so the share goes to the next oldest.
#[test]
fn the_fifo_share_passes_over_a_message_that_ignores_grants() {
    let mut s = sched();
    let ignored = 11 * MAX_PAYLOAD + 200_000 + 100_000;
    s.add(1, 7, 4_000_000, ignored);
    s.received(1, 11 * MAX_PAYLOAD);
    s.add(2, 7, 5_000_000, 200_000);
    s.received(2, 200_000);
    s.since_fifo = 50_000 * 950 / 50;
    let offset = (200_000 + 50_000) / MAX_PAYLOAD * MAX_PAYLOAD;
    assert_eq!(s.grants()[0], Grant { key: 2, offset, priority: HIGH_PRIORITY, fifo: true });
}
