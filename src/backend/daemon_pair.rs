//! A veth pair the daemon makes for itself: frames it sends into `name` meet a program attached
//! (drv-mode XDP) to `name`p, the far side. The gen pumps' ports ([`super::pump`]) and the
//! compat backend's replay port ([`super::replay`]) are such pairs.
use std::os::fd::RawFd;

use anyhow::Context;

use crate::{
    loader::{kernel, AttachMode},
    netlink::{Netlink, VethQueues},
    netns::NetNs,
};

/// The pair, deleted when dropped (deleting one end deletes both, and the attachment with
/// them).
pub struct DaemonPair {
    ifindex: u32,
}

impl DaemonPair {
    /// Creates `name`/`name`p (replacing a stale pair left by a crash), attaches `prog` (its
    /// name `what`, for errors) to `name`p and sets both up, the far side first.
    pub fn open(name: &str, prog: RawFd, what: &str) -> anyhow::Result<DaemonPair> {
        let mut nl = Netlink::open()?;
        if let Some(stale) = nl.link(name)? {
            nl.delete_link(stale.index)?;
        }
        let here = NetNs::current()?;
        let peer = format!("{name}p");
        nl.add_veth(
            name,
            [0x02, 0xe7, 0, 0, 0, 1],
            &peer,
            [0x02, 0xe7, 0, 0, 0, 2],
            &here,
            VethQueues::same(1),
        )
        .with_context(|| format!("creating the veth pair {name}"))?;
        let pair = DaemonPair { ifindex: nl.index(name)? };
        let peer_index = nl.index(&peer)?;
        // No IPv6 (neighbour discovery, router solicitations): nothing but what the daemon
        // sends crosses the pair.
        for end in [name, peer.as_str()] {
            let knob = format!("/proc/sys/net/ipv6/conf/{end}/disable_ipv6");
            if std::path::Path::new(&knob).exists() {
                std::fs::write(&knob, "1").with_context(|| format!("writing {knob}"))?;
            }
        }
        kernel::attach(peer_index, prog, AttachMode::Drv)
            .with_context(|| format!("attaching {what} to {peer}"))?;
        nl.set_up(peer_index)?;
        nl.set_up(pair.ifindex)?;
        Ok(pair)
    }
}

impl Drop for DaemonPair {
    fn drop(&mut self) {
        if let Ok(mut nl) = Netlink::open() {
            let _ = nl.delete_link(self.ifindex);
        }
    }
}
