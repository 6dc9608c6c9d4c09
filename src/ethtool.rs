//! The few ethtool operations etran needs, through the SIOCETHTOOL ioctl on an interface of the
//! calling thread's network namespace.
use std::io;

use anyhow::Context;

const ETHTOOL_GSET: u32 = 0x01;
const ETHTOOL_GDRVINFO: u32 = 0x03;
const ETHTOOL_GTXCSUM: u32 = 0x16;
const ETHTOOL_STXCSUM: u32 = 0x17;
const ETHTOOL_SGRO: u32 = 0x2c;
const ETHTOOL_GCHANNELS: u32 = 0x3c;

/// Runs one SIOCETHTOOL command whose argument struct (starting with its `cmd`) is `arg`.
fn ioctl<T>(name: &str, arg: &mut T) -> io::Result<()> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad interface name"));
    }
    // SAFETY: ifreq is plain data for which all-zero is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = (arg as *mut T).cast();
    // SAFETY: plain socket/ioctl/close on a descriptor we own; ifr and arg outlive the ioctl.
    unsafe {
        let fd =
            crate::sys::cvt(libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0))?;
        let ret = libc::ioctl(fd, libc::SIOCETHTOOL, &mut ifr);
        let err = io::Error::last_os_error();
        libc::close(fd);
        if ret < 0 {
            return Err(err);
        }
    }
    Ok(())
}

fn set_value(name: &str, cmd: u32, on: bool) -> io::Result<()> {
    ioctl(name, &mut EthtoolValue { cmd, data: u32::from(on) })
}

#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

fn get_value(name: &str, cmd: u32) -> io::Result<bool> {
    let mut v = EthtoolValue { cmd, data: 0 };
    ioctl(name, &mut v)?;
    Ok(v.data != 0)
}

/// Number of RX queues of `name` (ETHTOOL_GCHANNELS): None when the driver does not report
/// channels.
pub fn rx_queues(name: &str) -> anyhow::Result<Option<u32>> {
    Ok(channels(name)?.map(|(rx, _)| rx))
}

/// Number of TX queues of `name` (ETHTOOL_GCHANNELS): None when the driver does not report
/// channels.
pub fn tx_queues(name: &str) -> anyhow::Result<Option<u32>> {
    Ok(channels(name)?.map(|(_, tx)| tx))
}

/// RX and TX queues of `name`, each at least 1 (combined channels count for both).
fn channels(name: &str) -> anyhow::Result<Option<(u32, u32)>> {
    #[repr(C)]
    #[derive(Default)]
    struct EthtoolChannels {
        cmd: u32,
        max_rx: u32,
        max_tx: u32,
        max_other: u32,
        max_combined: u32,
        rx_count: u32,
        tx_count: u32,
        other_count: u32,
        combined_count: u32,
    }
    let mut ch = EthtoolChannels { cmd: ETHTOOL_GCHANNELS, ..Default::default() };
    match ioctl(name, &mut ch) {
        Ok(()) => Ok(Some((
            (ch.rx_count + ch.combined_count).max(1),
            (ch.tx_count + ch.combined_count).max(1),
        ))),
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading the channels of {name}")),
    }
}

/// The link speed of `name` in Mbit/s (ETHTOOL_GSET): None when the driver does not know it
/// (`SPEED_UNKNOWN`, as virtio-net without a speed given) or reports none.
pub fn speed_mbps(name: &str) -> anyhow::Result<Option<u32>> {
    #[repr(C)]
    #[derive(Default)]
    struct EthtoolCmd {
        cmd: u32,
        supported: u32,
        advertising: u32,
        speed: u16,
        duplex: u8,
        port: u8,
        phy_address: u8,
        transceiver: u8,
        autoneg: u8,
        mdio_support: u8,
        maxtxpkt: u32,
        maxrxpkt: u32,
        speed_hi: u16,
        eth_tp_mdix: u8,
        eth_tp_mdix_ctrl: u8,
        lp_advertising: u32,
        reserved: [u32; 2],
    }
    let mut c = EthtoolCmd { cmd: ETHTOOL_GSET, ..Default::default() };
    match ioctl(name, &mut c) {
        Ok(()) => {
            let speed = u32::from(c.speed) | u32::from(c.speed_hi) << 16;
            Ok((speed != 0 && speed != u32::MAX).then_some(speed))
        }
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading the link speed of {name}")),
    }
}

/// The name of `name`'s driver (ETHTOOL_GDRVINFO), e.g. "veth".
pub fn driver(name: &str) -> anyhow::Result<String> {
    #[repr(C)]
    struct EthtoolDrvinfo {
        cmd: u32,
        driver: [u8; 32],
        version: [u8; 32],
        fw_version: [u8; 32],
        bus_info: [u8; 32],
        erom_version: [u8; 32],
        reserved2: [u8; 12],
        n_priv_flags: u32,
        n_stats: u32,
        testinfo_len: u32,
        eedump_len: u32,
        regdump_len: u32,
    }
    // SAFETY: plain data, all-zero is valid.
    let mut info: EthtoolDrvinfo = unsafe { std::mem::zeroed() };
    info.cmd = ETHTOOL_GDRVINFO;
    ioctl(name, &mut info).with_context(|| format!("reading the driver of {name}"))?;
    let len = info.driver.iter().position(|&b| b == 0).unwrap_or(info.driver.len());
    Ok(String::from_utf8_lossy(&info.driver[..len]).into_owned())
}

/// Turns GRO on or off. A veth with GRO on receives frames that its peer's XDP program redirects
/// or bounces into it; without GRO or an XDP program of its own, they are dropped. Call it while
/// the veth is up: the kernel (6.18) enables the veth's NAPI when GRO changes on an up device,
/// and a veth whose GRO was switched on while down comes up without it.
pub fn set_gro(name: &str, on: bool) -> anyhow::Result<()> {
    set_value(name, ETHTOOL_SGRO, on)
        .with_context(|| format!("turning GRO {} for {name}", if on { "on" } else { "off" }))
}

/// Turns TX checksum offload on or off (off also turns TSO off). A veth whose frames are
/// forwarded by XDP on its peer needs it off: with offload the stack leaves TCP/UDP checksums
/// partial (to be finished by "hardware"), XDP turns the frame into raw bytes, and the receiver
/// then sees a bad checksum. A NIC that cannot change it (a virtio-net NIC whose device offers
/// no checksum offload) is fine when it is as wanted.
pub fn set_tx_checksum(name: &str, on: bool) -> anyhow::Result<()> {
    let set = set_value(name, ETHTOOL_STXCSUM, on);
    let fixed = |e: &io::Error| {
        e.raw_os_error() == Some(libc::EOPNOTSUPP)
            && get_value(name, ETHTOOL_GTXCSUM).is_ok_and(|v| v == on)
    };
    set.or_else(|e| if fixed(&e) { Ok(()) } else { Err(e) }).with_context(|| {
        format!("turning TX checksum offload {} for {name}", if on { "on" } else { "off" })
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn bad_names_are_errors() {
        assert!(super::rx_queues("").is_err());
        assert!(super::rx_queues("a-name-much-too-long-for-linux").is_err());
    }
}
