//! Reading the datapath counters. Class, drop-reason and event names come from the enums in
//! src/bpf/common/stats.h, read out of the loaded program's BTF, so they are never listed twice.
use libbpf_rs::{btf::types::Enum, Btf, MapCore, MapFlags, MapHandle};
use serde::Serialize;

use crate::bpf::entrance::types::{etran_class_counts, etran_count};

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Count {
    pub packets: u64,
    pub bytes: u64,
}

impl Count {
    fn add(&mut self, c: &etran_count) {
        self.packets += c.packets;
        self.bytes += c.bytes;
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ClassCounts {
    pub class: String,
    pub transport: Count,
    pub pass: Count,
    pub drop: Count,
}

#[derive(Debug, Clone, Serialize)]
pub struct DropCount {
    pub reason: String,
    #[serde(flatten)]
    pub count: Count,
}

#[derive(Debug, Clone, Serialize)]
pub struct EventCount {
    pub event: String,
    #[serde(flatten)]
    pub count: Count,
}

#[derive(Debug, Clone, Serialize)]
pub struct Counters {
    pub traffic: Vec<ClassCounts>,
    pub drops: Vec<DropCount>,
    /// What the transport programs did with the frames they let through (none for a datapath
    /// pinned by an etran that did not count them).
    pub events: Vec<EventCount>,
}

/// `(value, name)` of every member of C enum `name` whose name starts with `prefix`, the prefix
/// stripped and lowercased; the `_MAX` sentinel is left out.
pub fn enum_members(btf: &Btf<'_>, name: &str, prefix: &str) -> anyhow::Result<Vec<(u32, String)>> {
    let e = btf
        .type_by_name::<Enum<'_>>(name)
        .ok_or_else(|| anyhow::anyhow!("enum {name} missing from the program's BTF"))?;
    Ok(e.iter()
        .filter_map(|m| {
            let full = m.name?.to_str()?;
            let short = full.strip_prefix(prefix)?;
            (!short.ends_with("MAX")).then(|| (m.value as u32, short.to_ascii_lowercase()))
        })
        .collect())
}

/// Sums a per-CPU value of type `T` at `key` over all CPUs.
fn read_percpu<T: Copy + Default>(map: &MapHandle, key: u32) -> anyhow::Result<Vec<T>> {
    let values = map.lookup_percpu(&key.to_ne_bytes(), MapFlags::ANY)?.unwrap_or_default();
    Ok(values
        .iter()
        .map(|bytes| {
            assert!(bytes.len() >= std::mem::size_of::<T>(), "map value smaller than its type");
            // SAFETY: T is a plain #[repr(C)] type generated from the map's value type, and the
            // buffer holds at least size_of::<T>() bytes.
            unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) }
        })
        .collect())
}

/// Sums the per-CPU `etran_count`s of every member of enum `name` in `map`.
fn read_counts(
    btf: &Btf<'_>,
    map: &MapHandle,
    name: &str,
    prefix: &str,
) -> anyhow::Result<Vec<(String, Count)>> {
    enum_members(btf, name, prefix)?
        .into_iter()
        .map(|(key, member)| {
            let mut count = Count::default();
            for cpu in read_percpu::<etran_count>(map, key)? {
                count.add(&cpu);
            }
            Ok((member, count))
        })
        .collect()
}

pub fn read(
    btf: &Btf<'_>,
    traffic: &MapHandle,
    drops: &MapHandle,
    events: Option<&MapHandle>,
) -> anyhow::Result<Counters> {
    let mut out = Counters { traffic: Vec::new(), drops: Vec::new(), events: Vec::new() };
    for (key, class) in enum_members(btf, "etran_proto", "ETRAN_PROTO_")? {
        let mut row = ClassCounts {
            class,
            transport: Count::default(),
            pass: Count::default(),
            drop: Count::default(),
        };
        for cpu in read_percpu::<etran_class_counts>(traffic, key)? {
            row.transport.add(&cpu.transport);
            row.pass.add(&cpu.pass);
            row.drop.add(&cpu.drop);
        }
        out.traffic.push(row);
    }
    out.drops = read_counts(btf, drops, "etran_drop_reason", "ETRAN_DROP_")?
        .into_iter()
        .map(|(reason, count)| DropCount { reason, count })
        .collect();
    if let Some(events) = events {
        out.events = read_counts(btf, events, "etran_event", "ETRAN_EVENT_")?
            .into_iter()
            .map(|(event, count)| EventCount { event, count })
            .collect();
    }
    Ok(out)
}
