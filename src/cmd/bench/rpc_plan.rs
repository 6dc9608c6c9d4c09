//! Where `etran bench rpc` puts its sockets and threads, for every transport alike: the servers
//! on the testbed's last host, one socket and thread per server port (`--ports`, cp_node's
//! ports a server listens on); on each other host, the client side the flags describe
//! (`--threads` threads sharing `--clients` clients of `--depth` RPC slots each), as every
//! client node runs its own cp_node. A client's RPC slots take the ports in turn, numbered over
//! every client of every host, so each port gets its share of every host's RPCs.
use std::net::{Ipv4Addr, SocketAddrV4};

use super::{
    linux_echo::server_port,
    rpc_msg::{Caller, ResponseSize},
    workload::Workload,
};

/// One server port: its own socket (a Homa RPC socket, an eTran TCP or Linux TCP listener)
/// served by its own thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerPort {
    pub addr: SocketAddrV4,
    pub cpu: usize,
    /// RPC slots aimed at it, over every client host (a TCP row's connections to it).
    pub slots: u32,
}

/// One client thread: clients `first_client..first_client + clients` (numbered over every
/// host), `depth` RPC slots each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientThread {
    /// Its testbed host (1-based; the servers are on the host after the last client host).
    pub host: u8,
    pub first_client: u32,
    pub clients: u32,
    pub cpu: usize,
}

/// Every socket of a run and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub ports: Vec<ServerPort>,
    pub clients: Vec<ClientThread>,
    pub depth: u32,
}

/// What a run asks for: `clients` clients of `depth` slots on `threads` threads on each of
/// `client_hosts` hosts, against `ports` server ports at `server_ip`.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub server_ip: Ipv4Addr,
    pub client_hosts: u8,
    pub clients: u32,
    pub depth: u32,
    pub threads: u32,
    pub ports: u32,
}

impl Plan {
    /// Places `s` on `cpus` CPUs: client thread `i` of host `h` on CPU `(i + h - 1) mod cpus`
    /// (the hosts' first threads take turns), server port `j`'s thread on CPU `(j + 1) mod
    /// cpus`.
    pub fn new(s: Shape, cpus: usize) -> Plan {
        let (per_thread, extra) = (s.clients / s.threads, s.clients % s.threads);
        let clients = (1..=s.client_hosts)
            .flat_map(|h| {
                let host_first = u32::from(h - 1) * s.clients;
                (0..s.threads).map(move |i| ClientThread {
                    host: h,
                    first_client: host_first + i * per_thread + i.min(extra),
                    clients: per_thread + u32::from(i < extra),
                    cpu: (i as usize + usize::from(h) - 1) % cpus,
                })
            })
            .collect();
        let all_slots = u32::from(s.client_hosts) * s.clients * s.depth;
        let ports = (0..s.ports)
            .map(|j| ServerPort {
                addr: SocketAddrV4::new(s.server_ip, server_port(j)),
                cpu: (j as usize + 1) % cpus,
                slots: all_slots / s.ports + u32::from(j < all_slots % s.ports),
            })
            .collect();
        Plan { ports, clients, depth: s.depth }
    }

    /// The port that RPC slot `d` of client `client` (numbered over every host) sends to.
    pub fn server_for(&self, client: u32, d: u32) -> SocketAddrV4 {
        let slot = client * self.depth + d;
        self.ports[slot as usize % self.ports.len()].addr
    }

    /// Client thread `thread`'s RPC slots, client by client: each its server port and its
    /// requests (every slot its own pattern stream, numbered over every host).
    pub fn callers<'a>(
        &'a self,
        thread: &'a ClientThread,
        workload: Workload,
        response: ResponseSize,
    ) -> impl Iterator<Item = (SocketAddrV4, Caller)> + 'a {
        let depth = self.depth;
        (thread.first_client..thread.first_client + thread.clients).flat_map(move |c| {
            (0..depth).map(move |d| {
                let server = self.server_for(c, d);
                (server, Caller::new(c * depth + d, workload, response, server.port()))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(client_hosts: u8, clients: u32, depth: u32, threads: u32, ports: u32) -> Shape {
        let server_ip = Ipv4Addr::new(10, 99, 0, client_hosts + 1);
        Shape { server_ip, client_hosts, clients, depth, threads, ports }
    }

    /// The default (2 hosts, as many ports as threads) places threads as `bench echo` does.
    #[test]
    fn two_hosts_place_as_bench_echo() {
        let p = Plan::new(shape(1, 3, 2, 2, 2), 2);
        let cpus: Vec<_> =
            p.clients.iter().map(|c| (c.host, c.first_client, c.clients, c.cpu)).collect();
        assert_eq!(cpus, [(1, 0, 2, 0), (1, 2, 1, 1)]);
        let ports: Vec<_> = p.ports.iter().map(|s| (s.addr.port(), s.cpu, s.slots)).collect();
        assert_eq!(ports, [(7700, 1, 3), (7701, 0, 3)]);
    }

    /// Every host's clients reach every port, evenly; host h's first thread on CPU h-1 mod N.
    #[test]
    fn slots_take_the_ports_in_turn_over_every_host() {
        let p = Plan::new(shape(3, 2, 3, 1, 4), 2);
        let by_host: Vec<_> = p.clients.iter().map(|c| (c.host, c.first_client, c.cpu)).collect();
        assert_eq!(by_host, [(1, 0, 0), (2, 2, 1), (3, 4, 0)]);
        let mut seen = vec![vec![0u32; 4]; 3];
        let mut streams = Vec::new();
        for t in &p.clients {
            for (server, caller) in p.callers(t, Workload::Fixed(100), ResponseSize::Echo) {
                let mut buf = Vec::new();
                let call = caller.clone().next_into(&mut buf);
                assert_eq!(call.port, server.port());
                streams.push(call.header.stream);
                seen[usize::from(t.host) - 1][usize::from(server.port() - 7700)] += 1;
            }
        }
        assert_eq!(streams, (0..18).collect::<Vec<_>>(), "every slot its own stream");
        assert!(seen.iter().all(|h| h.iter().all(|&n| n >= 1)), "{seen:?}");
        let per_port: Vec<u32> = (0..4).map(|j| seen.iter().map(|h| h[j]).sum()).collect();
        let planned: Vec<u32> = p.ports.iter().map(|s| s.slots).collect();
        assert_eq!(per_port, planned);
        assert_eq!(planned, [5, 5, 4, 4]);
    }
}
