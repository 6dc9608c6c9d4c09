//! Receive-window rules shared by the daemon and the app library. The fast path's half is
//! `tx_window` in `src/bpf/tcp/tcp_tx.h`; [`no_shrink_field`] mirrors it for the segments the daemon
//! writes itself.
//!
//! - **Reserve.** Of an app's receive buffer, [`reserve`] bytes are never advertised: the window
//!   is the free room less the reserve, at most [`advertisable`] (which the window scale may
//!   limit: without scaling, 64 KiB is all a window field holds).
//! - **No shrinking** (RFC 9293 3.8.6.2.1). The right edge a segment advertises, `rcv_nxt +
//!   (field << rcv_wscale)`, never moves back, whoever writes the segment (egress, the gen pump,
//!   the daemon). Rounding the window down by the scale would move it back and forth as
//!   `rcv_nxt` advances by amounts that are not multiples of the scale, so the connection
//!   remembers the highest edge advertised (`rcv_adv`) and the field is rounded up to reach it
//!   when needed. Each round-up carries the edge less than one scale unit past the normal
//!   window; the reserve is the buffer behind those bytes. Should round-ups ever use it all up,
//!   the edge falls back to what the buffer holds (counted in `rcv_shrinks`).
//! - **Window updates** (receiver silly-window avoidance, RFC 9293 3.8.6.2.2): a pure window
//!   update is worth a frame only when it matters to the peer: the window it still has is at
//!   most half the advertisable buffer, and the update at least doubles it and opens at least
//!   one segment ([`update_due`], Linux's rule). Consumption reports otherwise ride on data
//!   frames. After the peer's FIN there is none at all (the peer sends nothing more, and a closed
//!   Linux peer answers a stray segment with RST).
use super::seq::{after, wscale};
use crate::bpf::tcp::types::tcp_conn;

/// The largest window a field announces under window scale `shift`.
pub fn max_window(shift: u8) -> u32 {
    0xffff << wscale(shift)
}

/// Bytes of a receive buffer of `rcv_buf` bytes kept out of the advertised window, under window
/// scale `shift`: room for edges rounded up. A 16th of the buffer, or of the largest window
/// the scale announces if less (64 KiB of 1 MiB under etran's scale 7: more than 500 round-ups
/// of its unit, 128 bytes, and more than a window's worth of full segments).
pub fn reserve(rcv_buf: u32, shift: u8) -> u32 {
    rcv_buf.min(max_window(shift)) / 16
}

/// The largest window a receive buffer of `rcv_buf` bytes advertises (when empty) under window
/// scale `shift`.
pub fn advertisable(rcv_buf: u32, shift: u8) -> u32 {
    rcv_buf.min(max_window(shift)) - reserve(rcv_buf, shift)
}

/// The window field announcing `bytes` under window scale `shift` (taken as at most 14),
/// rounded down and capped at what 16 bits hold.
pub fn field(bytes: u32, shift: u8) -> u16 {
    (bytes >> wscale(shift)).min(u32::from(u16::MAX)) as u16
}

/// The window field a segment of `c` written now advertises, by the rule of `tx_window` in
/// tcp_tx.h (read-only: the daemon does not write the connection).
pub fn no_shrink_field(c: &tcp_conn) -> u16 {
    let shift = u32::from(wscale(c.rcv_wscale));
    let room = c.rcv_wnd;
    let mut f = (room.saturating_sub(c.rcv_reserve) >> shift).min(0xffff);
    let edge = |f: u32| c.rcv_nxt.wrapping_add(f << shift);
    if after(c.rcv_adv, edge(f)) {
        let need = c.rcv_adv.wrapping_sub(c.rcv_nxt);
        f = (need + (1 << shift) - 1) >> shift;
        if f << shift > room || f > 0xffff {
            f = (room >> shift).min(0xffff);
        }
    }
    f as u16
}

/// Whether a pure window update is due: `left` is the window the peer still has, `after` the
/// one the update would announce, `adv` the advertisable buffer, `mss` a full segment.
pub fn update_due(left: u32, after: u32, adv: u32, mss: u32) -> bool {
    left <= adv / 2 && after >= left.saturating_mul(2) && after >= left + mss.min(adv / 2).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(rcv_nxt: u32, rcv_wnd: u32, rcv_adv: u32) -> tcp_conn {
        tcp_conn {
            rcv_nxt,
            rcv_wnd,
            rcv_adv,
            rcv_reserve: reserve(1 << 20, 7),
            rcv_wscale: 7,
            ..Default::default()
        }
    }

    fn edge(c: &tcp_conn, f: u16) -> u32 {
        c.rcv_nxt.wrapping_add(u32::from(f) << c.rcv_wscale)
    }

    #[test]
    fn the_reserve_stays_out_of_the_window() {
        assert_eq!((reserve(1 << 20, 7), advertisable(1 << 20, 7)), (65536, 983_040));
        // Without window scaling a field holds 64 KiB at most: the reserve follows, so that
        // what the window may grow back to is never eaten by it.
        assert_eq!((reserve(1 << 20, 0), advertisable(1 << 20, 0)), (4095, 61440));
        assert_eq!(advertisable(4096, 0), 3840);
        let c = conn(1000, 1 << 20, 0);
        assert_eq!(no_shrink_field(&c), (983_040 >> 7) as u16);
    }

    #[test]
    fn the_edge_is_rounded_up_to_the_highest_one_advertised_within_the_room() {
        // 100 bytes arrived since the edge 1000 + 983_040 was advertised: rounding down
        // would move it back by 100 (mod 128); the field is rounded up instead.
        let adv = 1000 + 983_040;
        let c = conn(1100, (1 << 20) - 100, adv);
        let f = no_shrink_field(&c);
        assert!(edge(&c, f) >= adv && edge(&c, f) < adv + 128, "{}", edge(&c, f));
        // Wrap-around of the sequence space changes nothing.
        let c = conn(1100u32.wrapping_sub(5000), (1 << 20) - 100, adv.wrapping_sub(5000));
        assert_eq!(no_shrink_field(&c), f);
        // Past the real room it cannot go: the edge falls back to the buffer.
        let c = conn(1100, 50, 1100 + 100);
        assert_eq!(no_shrink_field(&c), 0);
    }

    #[test]
    fn window_updates_only_when_they_matter_to_the_peer() {
        let (adv, mss) = (983_040, 1448);
        assert!(!update_due(adv, adv, adv, mss), "nothing consumed");
        assert!(!update_due(adv / 2 + 1, adv, adv, mss), "the peer has more than half");
        assert!(update_due(adv / 2, adv, adv, mss));
        assert!(!update_due(adv / 4, adv / 2 - 1, adv, mss), "does not double it");
        assert!(update_due(0, mss, adv, mss), "a closed window opens by a segment");
        assert!(!update_due(0, mss - 1, adv, mss), "silly window");
        // A buffer smaller than two segments opens by half of it.
        assert!(update_due(0, 1000, 2000, 1448));
    }
}
