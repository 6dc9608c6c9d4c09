use super::*;

fn key() -> tcp_conn_key {
    tcp_conn_key {
        local_ip: u32::from_ne_bytes([10, 99, 0, 1]),
        remote_ip: u32::from_ne_bytes([10, 99, 0, 2]),
        local_port: 7000u16.to_be(),
        remote_port: 8000u16.to_be(),
    }
}

fn init(rx_pos: u32, tx_pos: u32) -> StreamInit {
    StreamInit {
        key: key(),
        rx_pos,
        tx_pos,
        peer_wnd: 1 << 20,
        mss: 1000,
        rcv_buf: 4096,
        snd_buf: 8192,
    }
}

fn meta(rx_pos: u32, len: usize, flags: u32) -> etran_tcp_rx_meta {
    etran_tcp_rx_meta {
        handle: 1,
        rx_pos,
        payload_off: 54,
        payload_len: len as u16,
        acked: 0,
        peer_wnd: 1 << 20,
        merged: 0,
        flags,
    }
}

fn ack(acked: u32, peer_wnd: u32) -> etran_tcp_rx_meta {
    etran_tcp_rx_meta { acked, peer_wnd, ..meta(0, 0, 0) }
}

fn bytes(from: u32, n: usize) -> Vec<u8> {
    (0..n).map(|i| (from as usize + i).wrapping_mul(7) as u8).collect()
}

fn read_all(s: &mut Stream) -> Vec<u8> {
    let mut out = vec![0; s.readable()];
    let n = s.read(&mut out);
    out.truncate(n);
    out
}

// ---- Receive ----

#[test]
fn in_order_data_is_readable() {
    let mut s = Stream::new(init(100, 0));
    let fx = s.on_rx(&meta(100, 10, 0), &bytes(0, 10));
    assert_eq!(fx.readable, 10);
    let fx = s.on_rx(&meta(110, 5, 0), &bytes(10, 5));
    assert_eq!(fx.readable, 5);
    let mut buf = [0u8; 4];
    assert_eq!(s.read(&mut buf), 4);
    assert_eq!(buf.to_vec(), bytes(0, 4));
    assert_eq!(read_all(&mut s), bytes(4, 11));
    assert_eq!(s.read(&mut buf), 0);
    assert!(!s.is_eof());
    assert_eq!(s.stats().rx_bytes, 15);
}

#[test]
fn out_of_order_waits_for_merge() {
    let mut s = Stream::new(init(0, 0));
    // [10, 30) arrives first, held out of order.
    let fx = s.on_rx(&meta(10, 20, OUT_OF_ORDER), &bytes(10, 20));
    assert_eq!(fx.readable, 0);
    assert_eq!(s.readable(), 0);
    // The gap [0, 10) fills it: the kernel reports 20 merged bytes.
    let m = etran_tcp_rx_meta { merged: 20, ..meta(0, 10, MERGED) };
    let fx = s.on_rx(&m, &bytes(0, 10));
    assert_eq!(fx.readable, 30);
    assert_eq!(read_all(&mut s), bytes(0, 30));
}

#[test]
fn out_of_order_interval_grows_before_merge() {
    let mut s = Stream::new(init(0, 0));
    s.on_rx(&meta(20, 10, OUT_OF_ORDER), &bytes(20, 10));
    s.on_rx(&meta(10, 10, OUT_OF_ORDER), &bytes(10, 10));
    s.on_rx(&meta(30, 5, OUT_OF_ORDER), &bytes(30, 5));
    assert_eq!(s.readable(), 0);
    // In-order [0, 5) does not reach the interval: no merge yet.
    assert_eq!(s.on_rx(&meta(0, 5, 0), &bytes(0, 5)).readable, 5);
    let m = etran_tcp_rx_meta { merged: 25, ..meta(5, 5, MERGED) };
    assert_eq!(s.on_rx(&m, &bytes(5, 5)).readable, 30);
    assert_eq!(read_all(&mut s), bytes(0, 35));
}

#[test]
fn merge_with_overlapping_in_order_payload() {
    // The in-order segment overlaps the held interval: merged counts only the bytes past it.
    let mut s = Stream::new(init(0, 0));
    s.on_rx(&meta(10, 20, OUT_OF_ORDER), &bytes(10, 20));
    let m = etran_tcp_rx_meta { merged: 15, ..meta(0, 15, MERGED) };
    assert_eq!(s.on_rx(&m, &bytes(0, 15)).readable, 30);
    assert_eq!(read_all(&mut s), bytes(0, 30));
}

#[test]
fn fin_ends_the_stream_after_the_data() {
    let mut s = Stream::new(init(0, 0));
    let fx = s.on_rx(&meta(0, 8, FIN), &bytes(0, 8));
    assert!(fx.fin);
    assert!(s.fin_received());
    assert!(!s.is_eof(), "data is still unread");
    assert_eq!(read_all(&mut s), bytes(0, 8));
    assert!(s.is_eof());
    // A bare FIN after data.
    let mut s = Stream::new(init(0, 0));
    s.on_rx(&meta(0, 3, 0), &bytes(0, 3));
    assert!(s.on_rx(&meta(3, 0, FIN), &[]).fin);
    assert_eq!(read_all(&mut s).len(), 3);
    assert!(s.is_eof());
}

#[test]
fn receive_positions_wrap() {
    let start = u32::MAX - 5;
    let mut s = Stream::new(init(start, 0));
    s.on_rx(&meta(start, 4, 0), &bytes(0, 4));
    // Out of order across the wrap: [start+8, start+14) = [2, 8).
    s.on_rx(&meta(start.wrapping_add(8), 6, OUT_OF_ORDER), &bytes(8, 6));
    let m = etran_tcp_rx_meta { merged: 6, ..meta(start.wrapping_add(4), 4, MERGED) };
    assert_eq!(s.on_rx(&m, &bytes(4, 4)).readable, 10);
    assert_eq!(read_all(&mut s), bytes(0, 14));
}

#[test]
fn ring_buffer_wraps_in_memory() {
    let mut s = Stream::new(StreamInit { rcv_buf: 100, ..init(0, 0) });
    let mut expect = Vec::new();
    let mut got = Vec::new();
    let mut pos = 0u32;
    for round in 0..50 {
        let n = 30 + round % 37;
        let data = bytes(pos, n);
        s.on_rx(&meta(pos, n, 0), &data);
        expect.extend_from_slice(&data);
        pos += n as u32;
        let mut buf = vec![0; 100];
        let k = s.read(&mut buf);
        got.extend_from_slice(&buf[..k]);
    }
    assert_eq!(got, expect);
}

#[test]
fn payload_past_the_buffer_is_dropped_not_stored() {
    let mut s = Stream::new(StreamInit { rcv_buf: 16, ..init(0, 0) });
    let fx = s.on_rx(&meta(10, 10, 0), &bytes(10, 10));
    assert_eq!(fx.dropped, 4);
    let fx = s.on_rx(&meta(40, 4, OUT_OF_ORDER), &bytes(40, 4));
    assert_eq!(fx.dropped, 4);
    assert_eq!(s.stats().rx_dropped, 8);
    // A short payload slice counts as dropped too.
    let fx = s.on_rx(&meta(0, 10, 0), &bytes(0, 6));
    assert_eq!(fx.dropped, 4);
}

#[test]
fn window_feedback() {
    // 4 KiB buffer: an update is due after 1 KiB consumed.
    let mut s = Stream::new(init(0, 0));
    s.on_rx(&meta(0, 2000, 0), &bytes(0, 2000));
    let mut buf = [0u8; 1023];
    s.read(&mut buf);
    assert!(!s.window_update_due());
    s.read(&mut buf[..1]);
    assert!(s.window_update_due());
    assert_eq!(s.unreported(), 1024);
    let mut frame = [0u8; 64];
    assert_eq!(s.control_frame(INTENT_WINDOW_UPDATE, &mut frame), Some(TX_HDR_LEN));
    let h = read_hdr(&frame);
    assert_eq!((h.intent, h.consumed, h.len, h.reserved), (INTENT_WINDOW_UPDATE, 1024, 0, 0));
    assert_eq!(s.unreported(), 0);
    assert!(!s.window_update_due());
    // A large buffer caps the threshold at 32 KiB.
    let mut s = Stream::new(StreamInit { rcv_buf: 1 << 20, ..init(0, 0) });
    s.on_rx(&meta(0, 1400, 0), &bytes(0, 1400));
    let mut total = 0;
    let mut pos = 1400u32;
    while total < WINDOW_UPDATE_MAX {
        assert!(!s.window_update_due());
        total += s.read(&mut [0u8; 1400]) as u32;
        s.on_rx(&meta(pos, 1400, 0), &bytes(pos, 1400));
        pos += 1400;
    }
    assert!(s.window_update_due());
}

#[test]
fn consumption_piggybacks_on_data() {
    let mut s = Stream::new(init(0, 0));
    s.on_rx(&meta(0, 100, 0), &bytes(0, 100));
    read_all(&mut s);
    s.write(b"hello");
    let mut frame = [0u8; 2048];
    let seg = s.next_segment(&mut frame).unwrap();
    assert_eq!(read_hdr(&frame).consumed, 100);
    assert_eq!(seg.frame_len, TX_HDR_LEN + 5);
    assert_eq!(s.unreported(), 0);
}

// ---- Send ----

fn drain(s: &mut Stream) -> Vec<(etran_tcp_tx_hdr, Vec<u8>)> {
    let mut out = Vec::new();
    let mut frame = [0u8; 2048];
    while let Some(seg) = s.next_segment(&mut frame) {
        let h = read_hdr(&frame);
        assert_eq!(seg.frame_len, TX_HDR_LEN + h.len as usize);
        assert_eq!(seg.tx_pos, h.tx_pos);
        out.push((h, frame[TX_HDR_LEN..seg.frame_len].to_vec()));
    }
    out
}

#[test]
fn segmentation_at_mss_boundaries() {
    for total in [0usize, 1, 999, 1000, 1001, 2000, 2001, 4500] {
        let mut s = Stream::new(init(0, 50));
        assert_eq!(s.write(&bytes(0, total)), total);
        let segs = drain(&mut s);
        assert_eq!(segs.len(), total.div_ceil(1000), "{total}");
        let mut pos = 50u32;
        let mut all = Vec::new();
        for (h, p) in &segs {
            assert_eq!(h.intent, INTENT_DATA);
            assert_eq!(h.tx_pos, pos);
            assert!(h.len as usize <= 1000 && h.len > 0);
            assert_eq!(h.len as usize, p.len());
            assert_eq!(
                (h.key.local_port, h.key.remote_port),
                (key().local_port, key().remote_port)
            );
            pos += h.len as u32;
            all.extend_from_slice(p);
        }
        assert_eq!(all, bytes(0, total));
        assert_eq!(s.in_flight() as usize, total);
        assert_eq!(s.unsent(), 0);
    }
}

#[test]
fn mss_is_clamped_to_the_egress_limit() {
    let mut s = Stream::new(StreamInit { mss: 9000, snd_buf: 10000, ..init(0, 0) });
    assert_eq!(s.mss(), MAX_PAYLOAD);
    s.write(&bytes(0, 3000));
    let segs = drain(&mut s);
    assert_eq!(segs[0].0.len, MAX_PAYLOAD);
    // A small frame limits the payload too.
    let mut s = Stream::new(init(0, 0));
    s.write(&bytes(0, 3000));
    let mut frame = [0u8; TX_HDR_LEN + 10];
    assert_eq!(s.next_segment(&mut frame).unwrap().payload_len, 10);
    assert!(s.next_segment(&mut [0u8; TX_HDR_LEN]).is_none());
}

#[test]
fn send_positions_wrap() {
    let start = u32::MAX - 1500;
    let mut s = Stream::new(init(0, start));
    s.write(&bytes(0, 3000));
    let segs = drain(&mut s);
    let pos: Vec<u32> = segs.iter().map(|(h, _)| h.tx_pos).collect();
    assert_eq!(pos, vec![start, start.wrapping_add(1000), start.wrapping_add(2000)]);
    assert_eq!(s.send_positions(), (start, start.wrapping_add(3000)));
    assert_eq!(s.on_rx(&ack(2500, 1 << 20), &[]).freed, 2500);
    assert_eq!(s.send_positions().0, start.wrapping_add(2500));
    assert_eq!(s.in_flight(), 500);
}

#[test]
fn peer_window_bounds_the_flight() {
    let mut s = Stream::new(StreamInit { peer_wnd: 2500, ..init(0, 0) });
    s.write(&bytes(0, 6000));
    let segs = drain(&mut s);
    let lens: Vec<u16> = segs.iter().map(|(h, _)| h.len).collect();
    assert_eq!(lens, vec![1000, 1000, 500]);
    assert_eq!(s.in_flight(), 2500);
    // The peer acks 1000 and keeps its window: 1000 more may go.
    s.on_rx(&ack(1000, 2500), &[]);
    assert_eq!(drain(&mut s).iter().map(|(h, _)| h.len).collect::<Vec<_>>(), vec![1000]);
    // A zero window stops everything; an update reopens it.
    s.on_rx(&ack(2500, 0), &[]);
    assert_eq!(s.in_flight(), 0);
    assert!(drain(&mut s).is_empty());
    s.on_rx(&ack(0, 700), &[]);
    let segs = drain(&mut s);
    assert_eq!(segs.len(), 1);
    assert_eq!((segs[0].0.tx_pos, segs[0].0.len), (3500, 700));
    assert_eq!(segs[0].1, bytes(3500, 700));
}

#[test]
fn acks_free_the_send_buffer() {
    let mut s = Stream::new(StreamInit { snd_buf: 3000, ..init(0, 0) });
    assert_eq!(s.write(&bytes(0, 5000)), 3000);
    assert_eq!(s.send_space(), 0);
    drain(&mut s);
    assert_eq!(s.write(&[1]), 0, "sent bytes stay until acknowledged");
    assert_eq!(s.on_rx(&ack(1200, 1 << 20), &[]).freed, 1200);
    assert_eq!(s.send_space(), 1200);
    assert_eq!(s.write(&bytes(3000, 2000)), 1200);
    // An ack beyond what was sent frees only what was sent.
    assert_eq!(s.on_rx(&ack(9999, 1 << 20), &[]).freed, 1800);
    let segs = drain(&mut s);
    let all: Vec<u8> = segs.into_iter().flat_map(|(_, p)| p).collect();
    assert_eq!(all, bytes(3000, 1200));
}

#[test]
fn fast_retransmit_resends_from_snd_una() {
    let mut s = Stream::new(init(0, 100));
    s.write(&bytes(0, 3500));
    drain(&mut s);
    s.on_rx(&ack(1000, 1 << 20), &[]);
    assert!(!s.retransmit_pending());
    let fx = s.on_rx(&etran_tcp_rx_meta { flags: FAST_RETRANSMIT, ..ack(0, 1 << 20) }, &[]);
    assert!(fx.fast_retransmit);
    assert!(s.retransmit_pending());
    let mut frame = [0u8; 2048];
    let mut got = Vec::new();
    while let Some(seg) = s.next_retransmit(&mut frame) {
        let h = read_hdr(&frame);
        assert_eq!(h.intent, INTENT_DATA);
        got.push((seg.tx_pos, frame[TX_HDR_LEN..seg.frame_len].to_vec()));
    }
    let pos: Vec<u32> = got.iter().map(|g| g.0).collect();
    assert_eq!(pos, vec![1100, 2100, 3100]);
    let all: Vec<u8> = got.into_iter().flat_map(|g| g.1).collect();
    assert_eq!(all, bytes(1000, 2500));
    assert!(!s.retransmit_pending());
    // New data continues at snd_nxt, unaffected.
    assert_eq!(s.send_positions(), (1100, 3600));
    assert_eq!(s.stats().retransmitted, 2500);
    assert_eq!(s.stats().fast_retransmits, 1);
}

#[test]
fn ack_moves_the_resend_cursor() {
    let mut s = Stream::new(init(0, 0));
    s.write(&bytes(0, 3000));
    drain(&mut s);
    s.on_rx(&etran_tcp_rx_meta { flags: FAST_RETRANSMIT, ..ack(0, 1 << 20) }, &[]);
    let mut frame = [0u8; 2048];
    assert_eq!(s.next_retransmit(&mut frame).unwrap().tx_pos, 0);
    // The peer now has up to 2500: resending continues there, not at 1000.
    s.on_rx(&ack(2500, 1 << 20), &[]);
    let seg = s.next_retransmit(&mut frame).unwrap();
    assert_eq!((seg.tx_pos, seg.payload_len), (2500, 500));
    assert!(s.next_retransmit(&mut frame).is_none());
    // Everything acked: nothing to resend.
    s.on_rx(&etran_tcp_rx_meta { flags: FAST_RETRANSMIT, ..ack(0, 1 << 20) }, &[]);
    assert!(s.retransmit_pending());
    s.on_rx(&ack(500, 1 << 20), &[]);
    assert!(!s.retransmit_pending());
    // With nothing in flight a fast retransmit flag is ignored.
    s.on_rx(&etran_tcp_rx_meta { flags: FAST_RETRANSMIT, ..ack(0, 1 << 20) }, &[]);
    assert!(!s.retransmit_pending());
    s.write(&[1]);
    drain(&mut s);
    s.on_rx(&etran_tcp_rx_meta { flags: FAST_RETRANSMIT, ..ack(0, 1 << 20) }, &[]);
    s.cancel_retransmit();
    assert!(!s.retransmit_pending());
}

#[test]
fn header_layout() {
    assert_eq!(TX_HDR_LEN, 24);
    assert_eq!(RX_META_LEN, 32);
    let mut raw = [0u8; 32];
    raw[8..12].copy_from_slice(&7u32.to_ne_bytes());
    raw[14..16].copy_from_slice(&9u16.to_ne_bytes());
    let m = read_meta(&raw);
    assert_eq!((m.rx_pos, m.payload_len), (7, 9));
}

/// A random interleaving of sends, acks, reads and out-of-order deliveries keeps both
/// directions' bytes intact.
#[test]
fn randomized_streams_stay_intact() {
    let mut rng = 0x1234_5678_9abc_def0u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for _ in 0..20 {
        let start = (next() as u32).wrapping_add(u32::MAX - 20_000);
        let mut s = Stream::new(StreamInit { rcv_buf: 3000, ..init(start, start) });
        let mut sent = 0u32; // bytes the "peer" sent in order
        let mut got = Vec::new();
        let total = 40_000u32;
        while (got.len() as u32) < total {
            let room = 3000 - s.readable() as u32;
            let n = (next() % 1400 + 1) as u32;
            let n = n.min(total - sent).min(room);
            if n > 0 && next() % 3 == 0 && n >= 2 {
                // Out of order: the second half first, then the first half merging it.
                let h = n / 2;
                let p = start.wrapping_add(sent);
                s.on_rx(
                    &meta(p.wrapping_add(h), (n - h) as usize, OUT_OF_ORDER),
                    &bytes(sent + h, (n - h) as usize),
                );
                let m = etran_tcp_rx_meta { merged: n - h, ..meta(p, h as usize, MERGED) };
                s.on_rx(&m, &bytes(sent, h as usize));
                sent += n;
            } else if n > 0 {
                s.on_rx(&meta(start.wrapping_add(sent), n as usize, 0), &bytes(sent, n as usize));
                sent += n;
            }
            let mut buf = vec![0; (next() % 2000) as usize];
            let k = s.read(&mut buf);
            got.extend_from_slice(&buf[..k]);
        }
        assert_eq!(got, bytes(0, total as usize));
    }
}
