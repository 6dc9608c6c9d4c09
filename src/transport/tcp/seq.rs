//! Sequence-number arithmetic, the Rust half of `src/bpf/tcp/tcp_seq.h`: serial comparisons (correct
//! across wrap-around), the window scale as used, and where the bytes in flight sit. The two are
//! pinned to each other by the conformance fixtures (tests/fixtures/conformance.rs), which run
//! the BPF code and these on the same inputs.
use crate::bpf::tcp::types::{etran_tcp_limit, tcp_conn, tcp_conn_fin};

/// Whether `a` comes before `b` (serial arithmetic, RFC 1982).
pub fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// Whether `a` comes after `b` (serial arithmetic, RFC 1982).
pub fn after(a: u32, b: u32) -> bool {
    before(b, a)
}

/// A window-scale shift as used: larger ones are taken as 14 (RFC 7323 2.3).
pub fn wscale(shift: u8) -> u8 {
    shift.min(etran_tcp_limit::ETRAN_TCP_MAX_WSCALE.0 as u8)
}

/// Stream bytes in flight: `[snd_una, snd_nxt)` less our FIN while it is unacknowledged (the
/// last sequence number, no stream byte).
pub fn flight_bytes(c: &tcp_conn) -> u32 {
    let fin_sent = c.fin & tcp_conn_fin::TCP_CONN_FIN_SENT.0 as u8 != 0;
    let fin_in_flight = u32::from(fin_sent && c.snd_una != c.snd_nxt);
    c.snd_nxt.wrapping_sub(c.snd_una).wrapping_sub(fin_in_flight)
}

/// Stream position of `snd_una`: the bytes in flight sit at `[una_pos, tx_pos)`.
pub fn una_pos(c: &tcp_conn) -> u32 {
    c.tx_pos.wrapping_sub(flight_bytes(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_comparisons_hold_across_wrap_around() {
        assert!(before(u32::MAX, 0) && after(0, u32::MAX));
        assert!(before(5, 6) && !before(6, 6) && !after(6, 6));
        // Exactly half the space apart: `a - b` is i32::MIN, so a is before b (as in C).
        assert!(before(0x8000_0000, 0) && before(0, 0x8000_0000));
    }

    #[test]
    fn a_sent_fin_is_no_stream_byte() {
        let c = tcp_conn { snd_una: 100, snd_nxt: 151, tx_pos: 50, ..Default::default() };
        assert_eq!((flight_bytes(&c), una_pos(&c)), (51, 0xffff_ffff));
        let fin = tcp_conn { fin: tcp_conn_fin::TCP_CONN_FIN_SENT.0 as u8, ..c };
        assert_eq!((flight_bytes(&fin), una_pos(&fin)), (50, 0));
        let acked = tcp_conn { snd_una: 151, ..fin };
        assert_eq!(flight_bytes(&acked), 0);
    }
}
