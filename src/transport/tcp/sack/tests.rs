use super::*;

const MS: Duration = Duration::from_millis(1);

/// `n` segments of 100 bytes from position `base`, sent 1 ms apart from `t0`.
fn board(base: u32, n: u32, t0: Instant) -> Scoreboard {
    let mut b = Scoreboard::default();
    for i in 0..n {
        let start = base.wrapping_add(i * 100);
        b.sent(start, start.wrapping_add(100), t0 + MS * i);
    }
    b
}

#[test]
fn sack_option_is_parsed_after_the_timestamp() {
    let mut opts = vec![1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 1, 1, 5, 18];
    for w in [10u32, 20, 30, 40] {
        opts.extend_from_slice(&w.to_be_bytes());
    }
    assert_eq!(Blocks::from_options(&opts).as_slice(), [(10, 20), (30, 40)]);
    // The same in a whole frame.
    let mut frame = vec![0u8; 12];
    frame.extend_from_slice(&[0x08, 0x00, 0x45]);
    frame.extend_from_slice(&[0; 19]);
    let mut tcp = vec![0u8; 20];
    tcp[12] = (((20 + opts.len()) / 4) << 4) as u8;
    tcp.extend_from_slice(&opts);
    frame.extend_from_slice(&tcp);
    assert_eq!(Blocks::from_frame(&frame).as_slice(), [(10, 20), (30, 40)]);
    // Malformed: no blocks, no panic.
    for bad in [&[5u8, 9][..], &[5, 11, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[5], &[8, 1], &[5, 42]] {
        assert!(Blocks::from_options(bad).is_empty(), "{bad:?}");
    }
    for n in 0..frame.len() {
        let _ = Blocks::from_frame(&frame[..n]);
    }
    assert!(Blocks::from_frame(&[0u8; 60]).is_empty(), "not IPv4");
}

#[test]
fn three_segments_sacked_above_make_the_ones_below_lost() {
    let t0 = Instant::now();
    let mut b = board(1000, 10, t0);
    let d = b.on_ack(1000, &[(1300, 1600)], t0 + MS * 20);
    assert_eq!((d.segments, d.dsack), (3, None));
    assert_eq!(d.rtt, Some(MS * 15), "the newest delivered: sent at 5 ms");
    assert_eq!(b.mark_losses(t0 + MS * 20, MS * 100), None);
    assert_eq!((b.sacked_bytes(), b.lost_bytes(), b.pipe()), (300, 300, 400));
    assert_eq!(b.next_lost(1000), Some((1000, 1100)));
    b.resent(1000, 1100, t0 + MS * 21);
    assert_eq!((b.lost_bytes(), b.pipe()), (200, 500));
    assert_eq!(b.next_lost(50), Some((1100, 1150)), "split to what one frame takes");
    // The cumulative ACK reaches the SACKed bytes: they leave, nothing is lost any more.
    b.resent(1100, 1150, t0 + MS * 22);
    b.resent(1150, 1200, t0 + MS * 22);
    b.resent(1200, 1300, t0 + MS * 22);
    let d = b.on_ack(1600, &[], t0 + MS * 30);
    assert_eq!((d.segments, d.rtt), (4, None), "retransmissions give no RTT sample");
    assert_eq!((b.outstanding(), b.sacked_bytes(), b.lost_bytes()), (400, 0, 0));
    b.assert_consistent();
}

#[test]
fn one_later_delivery_marks_a_loss_after_the_reordering_timeout() {
    let t0 = Instant::now();
    let mut b = board(0, 4, t0);
    // Only the last segment arrived (a tail probe, or reordering).
    b.on_ack(0, &[(300, 400)], t0 + MS * 5);
    let next = b.mark_losses(t0 + MS * 5, MS * 10);
    assert_eq!(next, Some(t0 + MS * 10), "the oldest is due 10 ms after it was sent");
    assert_eq!(b.lost_bytes(), 0, "not yet: it may be reordered");
    assert_eq!(b.mark_losses(t0 + MS * 11, MS * 10), Some(t0 + MS * 12));
    assert_eq!(b.lost_bytes(), 200);
    assert_eq!(b.mark_losses(t0 + MS * 13, MS * 10), None);
    assert_eq!(b.lost_bytes(), 300);
}

#[test]
fn a_lost_retransmission_is_found_by_later_deliveries() {
    let t0 = Instant::now();
    let mut b = board(0, 5, t0);
    b.on_ack(0, &[(100, 500)], t0 + MS * 5);
    b.mark_losses(t0 + MS * 5, MS * 100);
    assert_eq!(b.next_lost(100), Some((0, 100)));
    b.resent(0, 100, t0 + MS * 6);
    // New data after the retransmission; three of those segments arrive, the resent one not.
    for i in 5..8 {
        b.sent(i * 100, i * 100 + 100, t0 + MS * 7);
    }
    b.on_ack(0, &[(100, 700)], t0 + MS * 8);
    assert_eq!(b.mark_losses(t0 + MS * 8, MS * 100), Some(t0 + MS * 106));
    assert_eq!(b.lost_bytes(), 0, "two later deliveries: not yet");
    b.on_ack(0, &[(100, 800)], t0 + MS * 9);
    b.mark_losses(t0 + MS * 9, MS * 100);
    assert_eq!(b.next_lost(100), Some((0, 100)), "the retransmission was lost too");
    b.assert_consistent();
}

#[test]
fn dsack_blocks_are_recognised_and_reneging_is_seen() {
    let t0 = Instant::now();
    let mut b = board(1000, 5, t0);
    b.on_ack(1200, &[], t0);
    assert_eq!(b.on_ack(1200, &[(1100, 1200)], t0).dsack, Some((1100, 1200)), "below snd_una");
    let inside = b.on_ack(1200, &[(1300, 1350), (1300, 1500)], t0).dsack;
    assert_eq!(inside, Some((1300, 1350)), "inside the next block");
    assert_eq!(b.on_ack(1200, &[(1400, 1500), (1300, 1350)], t0).dsack, None);
    assert!(!b.reneged());
    // The ACK reaches the SACKed [1300, 1500) yet stops at its start: the peer dropped it.
    b.on_ack(1300, &[], t0);
    assert!(b.reneged());
    b.clear_sacks();
    assert!(!b.reneged());
    assert_eq!((b.sacked_bytes(), b.pipe()), (0, 200));
    b.assert_consistent();
}

#[test]
fn positions_wrap() {
    let t0 = Instant::now();
    let mut b = board(u32::MAX - 150, 4, t0);
    let d = b.on_ack(u32::MAX - 50, &[(149, 249)], t0 + MS * 5);
    assert_eq!(d.segments, 2);
    assert_eq!((b.outstanding(), b.sacked_bytes()), (300, 100));
    b.mark_all_lost();
    assert_eq!(b.next_lost(1000), Some((u32::MAX - 50, 49)));
    assert_eq!(b.pipe(), 0);
    assert_eq!(b.last(), Some((149, 249)));
    b.assert_consistent();
}
