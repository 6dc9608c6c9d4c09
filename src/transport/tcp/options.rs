//! TCP options on SYN and SYN-ACK (MSS, window scale, SACK-permitted, timestamps), and what two
//! ends agree on. The daemon's slow path parses the peer's SYN with this and builds its own.
use std::fmt;

const EOL: u8 = 0;
const NOP: u8 = 1;
const MSS: u8 = 2;
const WSCALE: u8 = 3;
const SACK_PERMITTED: u8 = 4;
const TIMESTAMPS: u8 = 8;

/// MSS assumed when the peer sends none (RFC 9293).
pub const DEFAULT_MSS: u16 = 536;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SynOptions {
    pub mss: Option<u16>,
    pub wscale: Option<u8>,
    pub sack_permitted: bool,
    /// (TSval, TSecr)
    pub timestamps: Option<(u32, u32)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionError {
    /// An option's length byte is below 2 or runs past the option space.
    BadLength { kind: u8 },
    /// A known option with the wrong length.
    WrongSize { kind: u8, len: u8 },
}

impl fmt::Display for OptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptionError::BadLength { kind } => write!(f, "TCP option {kind} has a bad length"),
            OptionError::WrongSize { kind, len } => {
                write!(f, "TCP option {kind} has length {len}")
            }
        }
    }
}

impl std::error::Error for OptionError {}

impl SynOptions {
    /// Parses the option bytes of a segment (between the fixed header and the data). Unknown
    /// options are skipped by their length.
    pub fn parse(mut bytes: &[u8]) -> Result<SynOptions, OptionError> {
        let mut opts = SynOptions::default();
        while let Some(&kind) = bytes.first() {
            match kind {
                EOL => break,
                NOP => {
                    bytes = &bytes[1..];
                    continue;
                }
                _ => {}
            }
            let len = *bytes.get(1).ok_or(OptionError::BadLength { kind })?;
            if len < 2 || usize::from(len) > bytes.len() {
                return Err(OptionError::BadLength { kind });
            }
            let body = &bytes[2..usize::from(len)];
            let want = |n: usize| {
                if body.len() == n {
                    Ok(())
                } else {
                    Err(OptionError::WrongSize { kind, len })
                }
            };
            match kind {
                MSS => {
                    want(2)?;
                    opts.mss = Some(u16::from_be_bytes([body[0], body[1]]));
                }
                WSCALE => {
                    want(1)?;
                    // RFC 7323 2.3: larger shifts are treated as 14.
                    opts.wscale = Some(super::seq::wscale(body[0]));
                }
                SACK_PERMITTED => {
                    want(0)?;
                    opts.sack_permitted = true;
                }
                TIMESTAMPS => {
                    want(8)?;
                    let val = u32::from_be_bytes(body[0..4].try_into().expect("4 bytes"));
                    let ecr = u32::from_be_bytes(body[4..8].try_into().expect("4 bytes"));
                    opts.timestamps = Some((val, ecr));
                }
                _ => {}
            }
            bytes = &bytes[usize::from(len)..];
        }
        Ok(opts)
    }

    /// Encodes the options, NOP-padded to a multiple of 4 bytes (at most 20 bytes).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(20);
        if let Some(mss) = self.mss {
            out.extend_from_slice(&[MSS, 4]);
            out.extend_from_slice(&mss.to_be_bytes());
        }
        match (self.sack_permitted, self.timestamps) {
            (true, Some(_)) => out.extend_from_slice(&[SACK_PERMITTED, 2]),
            (true, None) => out.extend_from_slice(&[NOP, NOP, SACK_PERMITTED, 2]),
            _ => {}
        }
        if let Some((val, ecr)) = self.timestamps {
            if !self.sack_permitted {
                out.extend_from_slice(&[NOP, NOP]);
            }
            out.extend_from_slice(&[TIMESTAMPS, 10]);
            out.extend_from_slice(&val.to_be_bytes());
            out.extend_from_slice(&ecr.to_be_bytes());
        }
        if let Some(ws) = self.wscale {
            out.extend_from_slice(&[NOP, WSCALE, 3, super::seq::wscale(ws)]);
        }
        debug_assert_eq!(out.len() % 4, 0);
        out
    }
}

/// What a connection runs with after the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// Largest segment payload we send (peer's MSS, capped by ours).
    pub send_mss: u16,
    /// Shift applied to windows we receive from the peer.
    pub send_wscale: u8,
    /// Shift applied to windows we advertise.
    pub recv_wscale: u8,
    pub timestamps: bool,
    pub sack: bool,
}

/// Combines what we offered with what the peer sent. Window scaling and timestamps need both
/// sides (RFC 7323); without the peer's window scale neither side shifts.
pub fn negotiate(ours: &SynOptions, theirs: &SynOptions) -> Negotiated {
    let scaling = ours.wscale.is_some() && theirs.wscale.is_some();
    let our_mss = ours.mss.unwrap_or(DEFAULT_MSS);
    Negotiated {
        send_mss: theirs.mss.unwrap_or(DEFAULT_MSS).min(our_mss).max(64),
        send_wscale: if scaling { theirs.wscale.unwrap_or(0) } else { 0 },
        recv_wscale: if scaling { ours.wscale.unwrap_or(0) } else { 0 },
        timestamps: ours.timestamps.is_some() && theirs.timestamps.is_some(),
        sack: ours.sack_permitted && theirs.sack_permitted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Options of a SYN that Linux 6.x sends (mss 1460, sackOK, TS, nop, wscale 7).
    const LINUX_SYN: [u8; 20] = [2, 4, 5, 180, 4, 2, 8, 10, 0, 1, 2, 3, 0, 0, 0, 0, 1, 3, 3, 7];

    #[test]
    fn parses_a_linux_syn() {
        let o = SynOptions::parse(&LINUX_SYN).unwrap();
        assert_eq!(o.mss, Some(1460));
        assert_eq!(o.wscale, Some(7));
        assert!(o.sack_permitted);
        assert_eq!(o.timestamps, Some((0x00010203, 0)));
    }

    #[test]
    fn encodes_what_linux_sends_and_round_trips() {
        let o = SynOptions {
            mss: Some(1460),
            wscale: Some(7),
            sack_permitted: true,
            timestamps: Some((0x00010203, 0)),
        };
        assert_eq!(o.encode(), LINUX_SYN);
        for variant in [
            SynOptions { sack_permitted: false, ..o },
            SynOptions { timestamps: None, ..o },
            SynOptions { wscale: None, timestamps: None, ..o },
            SynOptions::default(),
        ] {
            let bytes = variant.encode();
            assert_eq!(bytes.len() % 4, 0);
            assert_eq!(SynOptions::parse(&bytes).unwrap(), variant);
        }
    }

    #[test]
    fn malformed_options_are_errors_not_panics() {
        assert_eq!(SynOptions::parse(&[2]), Err(OptionError::BadLength { kind: 2 }));
        assert_eq!(SynOptions::parse(&[2, 1, 0]), Err(OptionError::BadLength { kind: 2 }));
        assert_eq!(SynOptions::parse(&[2, 9, 0, 0]), Err(OptionError::BadLength { kind: 2 }));
        assert_eq!(
            SynOptions::parse(&[3, 4, 1, 1]),
            Err(OptionError::WrongSize { kind: 3, len: 4 })
        );
        // Unknown kinds are skipped; EOL ends parsing.
        assert_eq!(SynOptions::parse(&[30, 3, 9, 0, 99]).unwrap(), SynOptions::default());
        // Every prefix of a valid option block parses or fails cleanly.
        for n in 0..LINUX_SYN.len() {
            let _ = SynOptions::parse(&LINUX_SYN[..n]);
        }
    }

    #[test]
    fn wscale_above_14_is_treated_as_14() {
        assert_eq!(SynOptions::parse(&[3, 3, 20]).unwrap().wscale, Some(14));
    }

    #[test]
    fn negotiation_needs_both_sides() {
        let ours = SynOptions {
            mss: Some(1460),
            wscale: Some(9),
            sack_permitted: true,
            timestamps: Some((1, 0)),
        };
        let linux = SynOptions::parse(&LINUX_SYN).unwrap();
        let n = negotiate(&ours, &linux);
        assert_eq!((n.send_mss, n.send_wscale, n.recv_wscale), (1460, 7, 9));
        assert!(n.timestamps && n.sack);
        let bare = negotiate(&ours, &SynOptions { mss: Some(9000), ..SynOptions::default() });
        assert_eq!((bare.send_mss, bare.send_wscale, bare.recv_wscale), (1460, 0, 0));
        assert!(!bare.timestamps && !bare.sack);
        assert_eq!(negotiate(&ours, &SynOptions::default()).send_mss, DEFAULT_MSS);
    }
}
