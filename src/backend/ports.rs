//! The app ports a daemon serves, published for `etran stats`: which app holds which port, and
//! in which mode its AF_XDP socket runs ([`PortMode`]: zero copy, copy mode, a compat veth
//! port). The kernel cannot say it (it has no `XDP_SOCKETS_DIAG`), so the daemon does.
//!
//! Where: a BPF array of the daemon's own ([`PortTable`], named [`MAP_NAME`]), not pinned.
//! Its only reference is the daemon's descriptor, so the kernel frees it when the daemon exits,
//! however it exits: no row outlives the daemon (a pin would, after a crash, until the next
//! daemon replaced it), and a daemon's rows are removed as its apps' sessions close (the port
//! goes with them). `etran stats` finds it as it finds the datapath's own maps, by id (it walks
//! the kernel's maps for the name), and tells it belongs to the datapath it shows by the header
//! row, slot 0 (never an app's), which names the entrance program it serves and the daemon's
//! pid. Its layout is the Rust side's alone (no BPF program reads it): [`ROW_SIZE`] bytes a row,
//! encoded and decoded here.
use anyhow::Context;
use libbpf_rs::{libbpf_sys, query::MapInfoIter, MapCore, MapFlags, MapHandle, MapType};
use serde::Serialize;

use crate::proto::Transport;

/// The table's map name (the kernel keeps 15 bytes).
pub const MAP_NAME: &str = "etran_daemon";
/// Bytes in a row: mode (with [`BATCHING`]), transport, queue, pid (4 bytes each), then the
/// port's name.
pub const ROW_SIZE: usize = 16 + NAME_LEN;
const NAME_LEN: usize = 32;
/// The header row's first word ("ETRD"), which no [`PortMode`] is.
const MAGIC: u32 = u32::from_be_bytes(*b"ETRD");
/// In a row's mode word: the port batches its app's frames ([`PortRow::batching`]).
const BATCHING: u32 = 1 << 16;

/// How an app's port reaches the NIC, as `etran stats` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PortMode {
    /// Native: the app's socket bound to a NIC queue with `XDP_ZEROCOPY` (the NIC's frames land
    /// in the app's UMEM and it sends from it).
    ZeroCopy,
    /// Native: the app's socket bound to a NIC queue in copy mode (`XDP_RX_ANY_QUEUE`).
    Copy,
    /// Compat: the app's socket on its veth port (copy mode: veth has no zero copy).
    VethPort,
}

impl PortMode {
    fn code(self) -> u32 {
        match self {
            PortMode::ZeroCopy => 1,
            PortMode::Copy => 2,
            PortMode::VethPort => 3,
        }
    }

    fn from_code(code: u32) -> Option<PortMode> {
        [PortMode::ZeroCopy, PortMode::Copy, PortMode::VethPort]
            .into_iter()
            .find(|m| m.code() == code)
    }

    /// The words of `etran stats`' table.
    pub fn describe(self) -> &'static str {
        match self {
            PortMode::ZeroCopy => "zero copy",
            PortMode::Copy => "copy mode",
            PortMode::VethPort => "veth port (copy mode)",
        }
    }
}

/// One app's port, as a daemon publishes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortRow {
    /// The app's slot (its identity in BPF).
    pub slot: u32,
    /// The app's process (in the daemon's pid namespace; 0: unknown).
    pub pid: u32,
    pub transport: Transport,
    /// The port's name: the app side of its veth (compat) or "NIC queue N" (native).
    pub port: String,
    /// The NIC queue its socket is bound to (native; compat: 0, its veth's queue).
    pub queue: u32,
    pub mode: PortMode,
    /// The port batches the frames its app sends, while the app streams
    /// (`AppPort::batch_sends`).
    pub batching: bool,
}

/// What a daemon serving a datapath publishes: its pid and its apps' ports, by slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Served {
    pub pid: u32,
    pub ports: Vec<PortRow>,
}

fn word(bytes: &[u8], i: usize) -> u32 {
    u32::from_ne_bytes(bytes[4 * i..4 * i + 4].try_into().expect("4 bytes"))
}

/// A row's bytes: four words, then a NUL-padded name (cut to fit).
fn encode(words: [u32; 4], name: &str) -> [u8; ROW_SIZE] {
    let mut row = [0u8; ROW_SIZE];
    for (i, w) in words.iter().enumerate() {
        row[4 * i..4 * i + 4].copy_from_slice(&w.to_ne_bytes());
    }
    let name = name.as_bytes();
    let n = name.len().min(NAME_LEN - 1);
    row[16..16 + n].copy_from_slice(&name[..n]);
    row
}

fn name_of(bytes: &[u8]) -> String {
    let name = &bytes[16..ROW_SIZE];
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    String::from_utf8_lossy(&name[..end]).into_owned()
}

/// The row of `port` ([`PortTable::set`]).
fn encode_port(port: &PortRow) -> [u8; ROW_SIZE] {
    let transport = match port.transport {
        Transport::Tcp => 1,
        Transport::Homa => 2,
    };
    let mode = port.mode.code() | if port.batching { BATCHING } else { 0 };
    encode([mode, transport, port.queue, port.pid], &port.port)
}

/// The port in row `slot`, `None` for an empty (zeroed) or unreadable one.
fn decode_port(slot: u32, bytes: &[u8]) -> Option<PortRow> {
    if bytes.len() < ROW_SIZE {
        return None;
    }
    let transport = match word(bytes, 1) {
        1 => Transport::Tcp,
        2 => Transport::Homa,
        _ => return None,
    };
    Some(PortRow {
        slot,
        pid: word(bytes, 3),
        transport,
        port: name_of(bytes),
        queue: word(bytes, 2),
        mode: PortMode::from_code(word(bytes, 0) & !BATCHING)?,
        batching: word(bytes, 0) & BATCHING != 0,
    })
}

/// The header row (slot 0): [`MAGIC`], the entrance program served, the daemon's pid, and the
/// interface's name.
fn encode_header(entrance: u32, pid: u32, iface: &str) -> [u8; ROW_SIZE] {
    encode([MAGIC, entrance, pid, 0], iface)
}

/// The daemon's pid when `bytes` is the header of a table serving entrance program `entrance`.
fn decode_header(bytes: &[u8], entrance: u32) -> Option<u32> {
    (bytes.len() >= ROW_SIZE && word(bytes, 0) == MAGIC && word(bytes, 1) == entrance)
        .then(|| word(bytes, 2))
}

/// The daemon's side: its table, written as its apps' ports open and close.
pub struct PortTable {
    map: MapHandle,
}

impl PortTable {
    /// A table of `slots` rows published for the datapath whose entrance program is
    /// `entrance` on `iface`, served by this process.
    pub fn new(entrance: u32, iface: &str, slots: u32) -> anyhow::Result<PortTable> {
        let opts = libbpf_sys::bpf_map_create_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as libbpf_sys::size_t,
            ..Default::default()
        };
        let map =
            MapHandle::create(MapType::Array, Some(MAP_NAME), 4, ROW_SIZE as u32, slots, &opts)
                .context("creating the daemon's table of app ports")?;
        let header = encode_header(entrance, std::process::id(), iface);
        map.update(&0u32.to_ne_bytes(), &header, MapFlags::ANY)
            .context("writing the daemon's table of app ports")?;
        Ok(PortTable { map })
    }

    /// Publishes `port` in its slot. Best effort: a failure is logged.
    pub fn set(&self, port: &PortRow) {
        let row = encode_port(port);
        if let Err(e) = self.map.update(&port.slot.to_ne_bytes(), &row, MapFlags::ANY) {
            crate::log::warn(format!("publishing app port {}: {e}", port.port));
        }
    }

    /// Empties `slot`'s row (its port is gone).
    pub fn clear(&self, slot: u32) {
        if let Err(e) = self.map.update(&slot.to_ne_bytes(), &[0u8; ROW_SIZE], MapFlags::ANY) {
            crate::log::warn(format!("clearing slot {slot} of the app ports table: {e}"));
        }
    }
}

/// What the daemon serving the datapath of entrance program `entrance` publishes; `None` when
/// no daemon serves it (none has a table naming it).
pub fn served(entrance: u32) -> anyhow::Result<Option<Served>> {
    for info in MapInfoIter::default() {
        if info.name.to_str() != Some(MAP_NAME)
            || info.ty != MapType::Array
            || info.value_size as usize != ROW_SIZE
        {
            continue;
        }
        // The daemon may have exited since the walk saw it.
        let Ok(map) = MapHandle::from_map_id(info.id) else { continue };
        let row = |slot: u32| map.lookup(&slot.to_ne_bytes(), MapFlags::ANY).ok().flatten();
        let Some(pid) = row(0).and_then(|h| decode_header(&h, entrance)) else { continue };
        let ports =
            (1..info.max_entries).filter_map(|slot| decode_port(slot, &row(slot)?)).collect();
        return Ok(Some(Served { pid, ports }));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(mode: PortMode, transport: Transport, name: &str) -> PortRow {
        PortRow {
            slot: 3,
            pid: 4242,
            transport,
            port: name.into(),
            queue: 1,
            mode,
            batching: false,
        }
    }

    #[test]
    fn a_port_row_reads_back_as_written() {
        for mode in [PortMode::ZeroCopy, PortMode::Copy, PortMode::VethPort] {
            for transport in [Transport::Tcp, Transport::Homa] {
                for batching in [false, true] {
                    let p = PortRow { batching, ..port(mode, transport, "eth0 queue 1") };
                    assert_eq!(decode_port(3, &encode_port(&p)), Some(p));
                }
            }
        }
    }

    #[test]
    fn an_empty_row_is_no_port_and_a_long_name_is_cut() {
        assert_eq!(decode_port(1, &[0u8; ROW_SIZE]), None);
        assert_eq!(decode_port(1, &[0u8; 8]), None, "a short value");
        let long = "x".repeat(40);
        let row = decode_port(3, &encode_port(&port(PortMode::Copy, Transport::Tcp, &long)));
        assert_eq!(row.unwrap().port, "x".repeat(NAME_LEN - 1));
    }

    #[test]
    fn the_header_names_the_datapath_served() {
        let h = encode_header(77, 1234, "va");
        assert_eq!(decode_header(&h, 77), Some(1234));
        assert_eq!(decode_header(&h, 78), None, "another datapath's daemon");
        assert_eq!(decode_header(&[0u8; ROW_SIZE], 0), None, "no magic");
        assert_eq!(decode_port(0, &h), None, "the header is no port");
    }

    #[test]
    fn modes_are_named_for_people_and_for_json() {
        assert_eq!(PortMode::ZeroCopy.describe(), "zero copy");
        assert_eq!(serde_json::to_string(&PortMode::ZeroCopy).unwrap(), "\"zero_copy\"");
        assert_eq!(serde_json::to_string(&PortMode::VethPort).unwrap(), "\"veth_port\"");
        assert_eq!(serde_json::to_string(&PortMode::Copy).unwrap(), "\"copy\"");
    }
}
