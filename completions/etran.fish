# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_etran_global_optspecs
    string join \n j/json p/pretty v/verbose h/help V/version
end

function __fish_etran_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_etran_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_etran_using_subcommand
    set -l cmd (__fish_etran_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c etran -n "__fish_etran_needs_command" -s j -l json -d 'Print machine-readable JSON instead of tables'
complete -c etran -n "__fish_etran_needs_command" -s p -l pretty -d 'Pretty-print JSON (implies --json)'
complete -c etran -n "__fish_etran_needs_command" -s v -l verbose -d 'More log output (repeat for more)'
complete -c etran -n "__fish_etran_needs_command" -s h -l help -d 'Print help'
complete -c etran -n "__fish_etran_needs_command" -s V -l version -d 'Print version'
complete -c etran -n "__fish_etran_needs_command" -f -a "up" -d 'Load and attach the etran datapath on an interface'
complete -c etran -n "__fish_etran_needs_command" -f -a "down" -d 'Detach the etran datapath from an interface and remove its pinned state'
complete -c etran -n "__fish_etran_needs_command" -f -a "daemon" -d 'Run the control path: app registration, handshakes, timers'
complete -c etran -n "__fish_etran_needs_command" -f -a "stats" -d 'Show datapath counters read from the pinned maps'
complete -c etran -n "__fish_etran_needs_command" -f -a "bench" -d 'Benchmarks, each run side by side with Linux'
complete -c etran -n "__fish_etran_needs_command" -f -a "testbed" -d 'The built-in network of namespaces used by benches and tests'
complete -c etran -n "__fish_etran_needs_command" -f -a "run" -d 'Run an unmodified program with its TCP sockets over eTran'
complete -c etran -n "__fish_etran_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c etran -n "__fish_etran_using_subcommand up" -l backend -d 'Datapath backend' -r -f -a "auto\t'The best this kernel can do: native when it has etran\'s hooks, compat otherwise'
compat\t'Stock kernel: egress runs on a per-app veth port'
native\t'A kernel with etran\'s series (patches/): apps\' sockets on the NIC, egress and gen hooks linked to them'"
complete -c etran -n "__fish_etran_using_subcommand up" -l pacing -d 'Pacing: auto paces each TCP connection at its congestion window per round trip (twice that in slow start, 1.2 times after, as Linux) and keeps the NIC\'s queue of Homa DATA short at the link rate (--homa-link-mbps), through the socket\'s packet queue, on the native backend of a kernel that has it (`etran up --check`\'s packet-queue); elsewhere nothing paces. Off (the default) sends every packet at once' -r -f -a "auto\t'Pace through the packet queue on the native backend when the kernel has it (patch 0008); elsewhere nothing paces'
off\t'Never pace: egress sends every segment at once'"
complete -c etran -n "__fish_etran_using_subcommand up" -l mode -d 'XDP attach mode' -r -f -a "drv\t'Driver mode (falls back to skb with a warning when the driver lacks XDP)'
skb\t'Generic (skb) mode, in the kernel\'s stack'"
complete -c etran -n "__fish_etran_using_subcommand up" -l queues -d 'Number of NIC queues etran serves (default: all RX queues of the interface)' -r
complete -c etran -n "__fish_etran_using_subcommand up" -l homa-max-incoming -d 'Homa: the most bytes granted and not yet received over all incoming messages (HomaModule\'s max_incoming; default 400000). Smaller keeps the receiver\'s queues, hence short messages\' waits, shorter, at long messages\' cost' -r
complete -c etran -n "__fish_etran_using_subcommand up" -l homa-overcommit -d 'Homa: the most incoming messages granted to at once, one per sender (HomaModule\'s max_overcommit; default 8)' -r
complete -c etran -n "__fish_etran_using_subcommand up" -l homa-link-mbps -d 'Homa: the link rate its pacer keeps the NIC\'s queue short at, in Mbit/s, when pacing (`--pacing auto` on a kernel with the packet queue); default: the NIC\'s speed (ethtool), without which Homa does not pace' -r
complete -c etran -n "__fish_etran_using_subcommand up" -l check -d 'Check this kernel instead: list the features each transport needs (with the first Linux release that has each) and load every BPF program, attached nowhere, with the share of the verifier\'s instruction limit each object\'s heaviest program took. Changes nothing; fails when the TCP datapath could not run here'
complete -c etran -n "__fish_etran_using_subcommand up" -l force -d 'Replace an XDP program that etran did not attach'
complete -c etran -n "__fish_etran_using_subcommand up" -s j -l json -d 'Print machine-readable JSON instead of tables'
complete -c etran -n "__fish_etran_using_subcommand up" -s p -l pretty -d 'Pretty-print JSON (implies --json)'
complete -c etran -n "__fish_etran_using_subcommand up" -s v -l verbose -d 'More log output (repeat for more)'
complete -c etran -n "__fish_etran_using_subcommand up" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c etran -n "__fish_etran_using_subcommand up" -s V -l version -d 'Print version'
complete -c etran -n "__fish_etran_using_subcommand down" -s j -l json -d 'Print machine-readable JSON instead of tables'
complete -c etran -n "__fish_etran_using_subcommand down" -s p -l pretty -d 'Pretty-print JSON (implies --json)'
complete -c etran -n "__fish_etran_using_subcommand down" -s v -l verbose -d 'More log output (repeat for more)'
complete -c etran -n "__fish_etran_using_subcommand down" -s h -l help -d 'Print help'
complete -c etran -n "__fish_etran_using_subcommand down" -s V -l version -d 'Print version'
complete -c etran -n "__fish_etran_using_subcommand daemon" -l iface -d 'Interface carrying the etran datapath (`etran up IFACE` first)' -r
complete -c etran -n "__fish_etran_using_subcommand daemon" -l socket -d 'Unix socket that apps connect to' -r -F
complete -c etran -n "__fish_etran_using_subcommand daemon" -l time-wait -d 'How long a connection closed by our side first holds its 4-tuple (TIME_WAIT). Short by default: datacenter RTTs are microseconds, and timestamps guard against old duplicates' -r
complete -c etran -n "__fish_etran_using_subcommand daemon" -l zero-copy -d 'Native backend: `auto` binds the app on queue 0 of a NIC with one RX queue (where every frame arrives) in zero copy when the driver supports it, the others in copy mode; `off`: every app in copy mode' -r -f -a "auto\t'Zero copy for the app on queue 0 of a NIC with one RX queue (where every frame arrives) when the driver supports it; copy mode otherwise'
off\t'Every app\'s socket in copy mode'"
complete -c etran -n "__fish_etran_using_subcommand daemon" -l no-ecn -d 'Do not negotiate ECN. By default connections offer and accept it, and congestion control reacts to the network\'s marks as DCTCP does; without it only losses cut the window'
complete -c etran -n "__fish_etran_using_subcommand daemon" -s j -l json -d 'Print machine-readable JSON instead of tables'
complete -c etran -n "__fish_etran_using_subcommand daemon" -s p -l pretty -d 'Pretty-print JSON (implies --json)'
complete -c etran -n "__fish_etran_using_subcommand daemon" -s v -l verbose -d 'More log output (repeat for more)'
complete -c etran -n "__fish_etran_using_subcommand daemon" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c etran -n "__fish_etran_using_subcommand daemon" -s V -l version -d 'Print version'
complete -c etran -n "__fish_etran_using_subcommand stats" -l watch -d 'Refresh every DURATION (e.g. 1s, 500ms) until interrupted' -r
complete -c etran -n "__fish_etran_using_subcommand stats" -s j -l json -d 'Print machine-readable JSON instead of tables'
complete -c etran -n "__fish_etran_using_subcommand stats" -s p -l pretty -d 'Pretty-print JSON (implies --json)'
complete -c etran -n "__fish_etran_using_subcommand stats" -s v -l verbose -d 'More log output (repeat for more)'
complete -c etran -n "__fish_etran_using_subcommand stats" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c etran -n "__fish_etran_using_subcommand stats" -s V -l version -d 'Print version'
complete -c etran -n "__fish_etran_using_subcommand bench; and not __fish_seen_subcommand_from echo rpc raw help" -s j -l json -d 'Print machine-readable JSON instead of tables'
complete -c etran -n "__fish_etran_using_subcommand bench; and not __fish_seen_subcommand_from echo rpc raw help" -s p -l pretty -d 'Pretty-print JSON (implies --json)'
complete -c etran -n "__fish_etran_using_subcommand bench; and not __fish_seen_subcommand_from echo rpc raw help" -s v -l verbose -d 'More log output (repeat for more)'
complete -c etran -n "__fish_etran_using_subcommand bench; and not __fish_seen_subcommand_from echo rpc raw help" -s h -l help -d 'Print help'
complete -c etran -n "__fish_etran_using_subcommand bench; and not __fish_seen_subcommand_from echo rpc raw help" -s V -l version -d 'Print version'
complete -c etran -n "__fish_etran_using_subcommand bench; and not __fish_seen_subcommand_from echo rpc raw help" -f -a "echo" -d 'TCP echo: eTran against Linux TCP (blocking and busy-polling)'
complete -c etran -n "__fish_etran_using_subcommand bench; and not __fish_seen_subcommand_from echo rpc raw help" -f -a "rpc" -d 'Closed-loop RPCs: eTran Homa against the same RPCs over Linux TCP'
complete -c etran -n "__fish_etran_using_subcommand bench; and not __fish_seen_subcommand_from echo rpc raw help" -f -a "raw" -d 'Raw AF_XDP frame rate: the ceiling of the path'
complete -c etran -n "__fish_etran_using_subcommand bench; and not __fish_seen_subcommand_from echo rpc raw help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from echo" -l iface -d 'Interface to run on instead of the built-in testbed' -r
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from echo" -l server -d 'Address of a remote echo server (with --iface)' -r
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from echo" -l size -d 'Message size in bytes' -r
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from echo" -l conns -d 'Connections' -r
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from echo" -l depth -d 'Outstanding messages per connection' -r
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from echo" -l threads -d 'Client threads, each with its own server thread (and, for eTran, one App on each side)' -r
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from echo" -l duration -d 'How long to measure' -r
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from echo" -l transport -d 'Which transports to measure' -r -f -a "etran\t'eTran apps on both hosts'
etran-linux\t'eTran client apps against Linux TCP servers (interoperation)'
linux\t'Linux TCP on both hosts'
all\t'Every row above'"
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from echo" -l wait -d 'How the apps and sockets wait: busy-poll, or sleep when idle' -r -f -a "busy\t'Spin without sleeping: eTran apps poll their port in a loop, Linux sockets are polled with a zero epoll timeout (busy-polling)'
block\t'Sleep when idle: eTran apps wait in the library (busy-poll budget, then sleep on the AF_XDP socket), Linux sockets block in epoll_wait'"
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from echo" -l churn -d 'Connection churn: close each connection after this many round trips and open a new one in its place; reports opens and closes per second and the eTran leak check' -r
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from echo" -l mtu -d 'MTU of the private testbed\'s interfaces (see `etran testbed up --mtu`)' -r
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from echo" -l nics -d 'With --direct: the hosts\' NICs are these two interfaces, joined outside etran (a qemu guest\'s virtio-net pair on one hub), instead of a veth pair. Each is moved into its host for the run (renamed eth0, with the host\'s Ethernet address) and back after it' -r
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from echo" -l backend -d 'The eTran rows\' datapath backend (see `etran up --backend`): native binds each app to a queue of the host\'s NIC (the private testbed\'s NICs get one TX queue per thread)' -r -f -a "auto\t'The best this kernel can do: native when it has etran\'s hooks, compat otherwise'
compat\t'Stock kernel: egress runs on a per-app veth port'
native\t'A kernel with etran\'s series (patches/): apps\' sockets on the NIC, egress and gen hooks linked to them'"
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from echo" -l pacing -d 'The eTran rows\' TCP pacing (see `etran up --pacing`)' -r -f -a "auto\t'Pace through the packet queue on the native backend when the kernel has it (patch 0008); elsewhere nothing paces'
off\t'Never pace: egress sends every segment at once'"
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from echo" -l zero-copy -d 'The eTran rows\' daemons\' zero copy on native (see `etran daemon --zero-copy`)' -r -f -a "auto\t'Zero copy for the app on queue 0 of a NIC with one RX queue (where every frame arrives) when the driver supports it; copy mode otherwise'
off\t'Every app\'s socket in copy mode'"
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from echo" -l direct -d 'No switch: the hosts\' NICs are one veth pair, and the Linux row keeps TX checksum offload and with it TSO (see `etran testbed up --direct`)'
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from echo" -l no-small-queues -d 'Paced: let each connection hand over all its windows allow, without TCP small queues (by default a connection keeps about 1 ms at its rate, at least 4 segments, in the kernel\'s packet queue, and an app fewer than 224 frames; beyond the queue\'s 256 frames egress sends a segment at once, out of its turn). For measuring what the cap does'
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from echo" -l no-batching -d 'Never batch the eTran apps\' frames (by default a compat port runs its kernel side as a NAPI thread while its app streams: a connection with 16 segments or more in flight or unsent). For measuring what batching does'
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from echo" -s j -l json -d 'Print machine-readable JSON instead of tables'
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from echo" -s p -l pretty -d 'Pretty-print JSON (implies --json)'
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from echo" -s v -l verbose -d 'More log output (repeat for more)'
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from echo" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from echo" -s V -l version -d 'Print version'
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from rpc" -l workload -d 'Request sizes: w1..w5 (the Homa paper\'s workloads, truncated at --max-size; requests shorter than the 16-byte RPC header grow to it) or a fixed size in bytes (16 to --max-size)' -r
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from rpc" -l max-size -d 'The largest request: w1..w5 are cut there (their tables end at 1 MB, as cp_node\'s at HomaModule\'s longest message), fixed sizes may go up to it (at most 64 MiB, the longest Homa message etran carries)' -r
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from rpc" -l response-size -d 'Response size in bytes, at most --max-size (default: the request\'s size, an echo)' -r
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from rpc" -l clients -l conns -d 'Clients on each client host, each keeping --depth RPCs outstanding (closed loop) or at most --depth (with --gbps)' -r
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from rpc" -l depth -d 'Outstanding RPCs per client: always (closed loop), or at most (with --gbps, like cp_node\'s --client-max)' -r
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from rpc" -l gbps -d 'Open loop: offer this many Gbit/s of requests (request bytes only) from each client host as Poisson arrivals spread over its client threads, as cp_node --gbps does; 0 is closed loop. An arrival that finds all of its thread\'s RPCs outstanding waits and is counted as late' -r
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from rpc" -l threads -d 'Client threads on each client host (thread i of host h on CPU i+h-1 modulo the CPU count), for eTran one RPC socket each' -r
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from rpc" -l ports -d 'Server ports (cp_node\'s --ports), 1 to 64, default --threads: each is its own socket (an RPC socket for Homa, a listener for the TCP rows) served by its own thread (port j on CPU j+1 modulo the CPU count); every client spreads its RPCs over all of them (its RPC slots take the ports in turn), so --ports may not exceed --clients × --depth' -r
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from rpc" -l hosts -d 'Testbed hosts, 2 to 32: the servers on host N, on each of hosts 1..N-1 the client side the other flags describe (--clients, --depth, --threads and --gbps per client host, as each client node runs its own cp_node): N-1 hosts fanning in to one' -r
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from rpc" -l duration -d 'How long to measure' -r
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from rpc" -l transport -d 'Which transports to measure' -r -f -a "etran-homa\t'eTran Homa RPC sockets on both hosts'
etran-tcp\t'The same RPCs over eTran TCP apps on both hosts (one connection per outstanding RPC)'
linux-tcp\t'The same RPCs over Linux TCP sockets (one connection per outstanding RPC)'
all\t'Every row above'"
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from rpc" -l wait -d 'How the sockets wait: busy-poll, or sleep when idle' -r -f -a "busy\t'Spin without sleeping: eTran apps poll their port in a loop, Linux sockets are polled with a zero epoll timeout (busy-polling)'
block\t'Sleep when idle: eTran apps wait in the library (busy-poll budget, then sleep on the AF_XDP socket), Linux sockets block in epoll_wait'"
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from rpc" -l rpc-timeout -d 'An RPC still without its response after this long fails the run' -r
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from rpc" -l loss -d 'Fraction of frames the testbed\'s switch drops, 0..1 (see `etran testbed up --loss`)' -r
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from rpc" -l rate -d 'Bottleneck rate of the switch\'s ports towards the hosts, e.g. 500mbit (see `etran testbed up --rate`): the queues form in the switch, not in the hosts' -r
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from rpc" -l dump-times -d 'Write every measured RPC\'s request length and RTT to FILE.<transport> (cp_node\'s --dump-times format: a line per RPC, length in bytes and RTT in microseconds)' -r -F
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from rpc" -l homa-max-incoming -d 'Homa: the most bytes granted and not yet received over all incoming messages (HomaModule\'s max_incoming; default 400000). Smaller keeps the receiver\'s queues, hence short messages\' waits, shorter, at long messages\' cost' -r
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from rpc" -l homa-overcommit -d 'Homa: the most incoming messages granted to at once, one per sender (HomaModule\'s max_overcommit; default 8)' -r
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from rpc" -l homa-link-mbps -d 'Homa: the link rate its pacer keeps the NIC\'s queue short at, in Mbit/s, when pacing (`--pacing auto` on a kernel with the packet queue); default: the NIC\'s speed (ethtool), without which Homa does not pace' -r
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from rpc" -l backend -d 'The eTran rows\' datapath backend (see `etran up --backend`): native binds each socket and app to a queue of the host\'s NIC (the private testbed\'s NICs get one TX queue per thread)' -r -f -a "auto\t'The best this kernel can do: native when it has etran\'s hooks, compat otherwise'
compat\t'Stock kernel: egress runs on a per-app veth port'
native\t'A kernel with etran\'s series (patches/): apps\' sockets on the NIC, egress and gen hooks linked to them'"
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from rpc" -l pacing -d 'The eTran rows\' pacing, TCP\'s and Homa\'s (see `etran up --pacing`; Homa\'s link rate: --homa-link-mbps)' -r -f -a "auto\t'Pace through the packet queue on the native backend when the kernel has it (patch 0008); elsewhere nothing paces'
off\t'Never pace: egress sends every segment at once'"
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from rpc" -l zero-copy -d 'The eTran rows\' daemons\' zero copy on native (see `etran daemon --zero-copy`)' -r -f -a "auto\t'Zero copy for the app on queue 0 of a NIC with one RX queue (where every frame arrives) when the driver supports it; copy mode otherwise'
off\t'Every app\'s socket in copy mode'"
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from rpc" -l one-way -d 'Responses of 100 bytes (as long as the request if it is shorter), as cp_node\'s --one-way: the requests carry the load'
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from rpc" -l prio -d 'Priority queues at the bottleneck (needs --rate; see `etran testbed up --prio`)'
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from rpc" -s j -l json -d 'Print machine-readable JSON instead of tables'
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from rpc" -s p -l pretty -d 'Pretty-print JSON (implies --json)'
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from rpc" -s v -l verbose -d 'More log output (repeat for more)'
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from rpc" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from rpc" -s V -l version -d 'Print version'
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from raw" -l iface -d 'Interface to run on instead of the built-in testbed (one-sided: sends or receives only)' -r
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from raw" -l mode -d 'Traffic pattern' -r -f -a "txonly\t'One host transmits as fast as it can; the peer counts'
rxdrop\t'The peer transmits; one host receives and drops'
echo\t'One host sends, the peer reflects every frame back'"
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from raw" -l size -d 'Frame size in bytes (Ethernet header included, FCS excluded): at most the testbed\'s MTU plus 14' -r
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from raw" -l batch -d 'Frames per ring operation' -r
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from raw" -l duration -d 'How long to measure' -r
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from raw" -l queues -d 'Queues to use, one lane (socket pair, thread) per queue and CPU; with more than one, each lane runs both ends of its queue on its own CPU' -r
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from raw" -l mtu -d 'MTU of the private testbed\'s interfaces (see `etran testbed up --mtu`); --size may be at most the MTU plus the Ethernet header' -r
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from raw" -l switch -d 'Put the testbed\'s switch namespace (one more XDP hop) between the hosts instead of joining them with one veth pair'
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from raw" -l chain -d 'Measure the chain eTran\'s TCP runs on (compat backend): from an app port\'s AF_XDP socket through the egress hook, the NIC, the testbed (with --switch: the switch), the peer\'s NIC and ingress hook into the peer\'s app port and socket, with the transport\'s own work left out; txonly (one-way) and echo. The ceiling of a transport\'s frame rate'
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from raw" -s j -l json -d 'Print machine-readable JSON instead of tables'
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from raw" -s p -l pretty -d 'Pretty-print JSON (implies --json)'
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from raw" -s v -l verbose -d 'More log output (repeat for more)'
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from raw" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from raw" -s V -l version -d 'Print version'
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from help" -f -a "echo" -d 'TCP echo: eTran against Linux TCP (blocking and busy-polling)'
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from help" -f -a "rpc" -d 'Closed-loop RPCs: eTran Homa against the same RPCs over Linux TCP'
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from help" -f -a "raw" -d 'Raw AF_XDP frame rate: the ceiling of the path'
complete -c etran -n "__fish_etran_using_subcommand bench; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c etran -n "__fish_etran_using_subcommand testbed; and not __fish_seen_subcommand_from up down status help" -s j -l json -d 'Print machine-readable JSON instead of tables'
complete -c etran -n "__fish_etran_using_subcommand testbed; and not __fish_seen_subcommand_from up down status help" -s p -l pretty -d 'Pretty-print JSON (implies --json)'
complete -c etran -n "__fish_etran_using_subcommand testbed; and not __fish_seen_subcommand_from up down status help" -s v -l verbose -d 'More log output (repeat for more)'
complete -c etran -n "__fish_etran_using_subcommand testbed; and not __fish_seen_subcommand_from up down status help" -s h -l help -d 'Print help'
complete -c etran -n "__fish_etran_using_subcommand testbed; and not __fish_seen_subcommand_from up down status help" -s V -l version -d 'Print version'
complete -c etran -n "__fish_etran_using_subcommand testbed; and not __fish_seen_subcommand_from up down status help" -f -a "up" -d 'Build the testbed (removing a stale one of the same name first)'
complete -c etran -n "__fish_etran_using_subcommand testbed; and not __fish_seen_subcommand_from up down status help" -f -a "down" -d 'Remove the testbed'
complete -c etran -n "__fish_etran_using_subcommand testbed; and not __fish_seen_subcommand_from up down status help" -f -a "status" -d 'Show the testbed\'s hosts, addresses and switch mode'
complete -c etran -n "__fish_etran_using_subcommand testbed; and not __fish_seen_subcommand_from up down status help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c etran -n "__fish_etran_using_subcommand testbed; and __fish_seen_subcommand_from up" -l name -d 'Name of the testbed: namespaces are NAME-h1..NAME-hN and NAME-sw' -r
complete -c etran -n "__fish_etran_using_subcommand testbed; and __fish_seen_subcommand_from up" -l hosts -d 'Number of hosts' -r
complete -c etran -n "__fish_etran_using_subcommand testbed; and __fish_seen_subcommand_from up" -l rate -d 'Bottleneck rate of every switch port towards a host, e.g. 1gbit, 500mbit (kernel forwarding)' -r
complete -c etran -n "__fish_etran_using_subcommand testbed; and __fish_seen_subcommand_from up" -l ecn-threshold -d 'Mark ECN CE when the estimated queue of a port exceeds BYTES (needs --rate). The queue is what arrived beyond the rate and beyond the burst HTB lets through at once' -r
complete -c etran -n "__fish_etran_using_subcommand testbed; and __fish_seen_subcommand_from up" -l loss -d 'Fraction of frames the switch drops, 0..1' -r
complete -c etran -n "__fish_etran_using_subcommand testbed; and __fish_seen_subcommand_from up" -l duplicate -d 'Fraction of frames the switch duplicates, 0..1' -r
complete -c etran -n "__fish_etran_using_subcommand testbed; and __fish_seen_subcommand_from up" -l corrupt -d 'Fraction of frames the switch corrupts (one flipped payload byte), 0..1' -r
complete -c etran -n "__fish_etran_using_subcommand testbed; and __fish_seen_subcommand_from up" -l queues -d 'RX/TX queues of every testbed interface (veth), so traffic can be spread over CPUs. For AF_XDP measurements: `etran up` refuses a veth with more than one queue' -r
complete -c etran -n "__fish_etran_using_subcommand testbed; and __fish_seen_subcommand_from up" -l app-queues -d 'TX queues of every host\'s NIC: one per app the native backend binds to it (each app\'s AF_XDP socket sends on a queue of its own). Its RX queues stay `--queues`. Default: 8 on a kernel with etran\'s hooks (patches/), 1 on a stock kernel or with --direct' -r
complete -c etran -n "__fish_etran_using_subcommand testbed; and __fish_seen_subcommand_from up" -l mtu -d 'MTU of every testbed interface (veth): 1280 up to the most a veth carries to XDP programs without multi-buffer support (3506 on x86-64 with 4 KiB pages). eTran\'s TCP and Linux\'s both announce an MSS of the MTU less 40' -r
complete -c etran -n "__fish_etran_using_subcommand testbed; and __fish_seen_subcommand_from up" -l prio -d 'Priority queues at the bottleneck (needs --rate): 8 HTB classes served in strict priority order, each IPv4 frame in the one of its TOS\'s top 3 bits (Homa\'s priority), the highest first'
complete -c etran -n "__fish_etran_using_subcommand testbed; and __fish_seen_subcommand_from up" -l direct -d 'No switch: the 2 hosts\' eth0 are the two ends of one veth pair (same addresses)'
complete -c etran -n "__fish_etran_using_subcommand testbed; and __fish_seen_subcommand_from up" -s j -l json -d 'Print machine-readable JSON instead of tables'
complete -c etran -n "__fish_etran_using_subcommand testbed; and __fish_seen_subcommand_from up" -s p -l pretty -d 'Pretty-print JSON (implies --json)'
complete -c etran -n "__fish_etran_using_subcommand testbed; and __fish_seen_subcommand_from up" -s v -l verbose -d 'More log output (repeat for more)'
complete -c etran -n "__fish_etran_using_subcommand testbed; and __fish_seen_subcommand_from up" -s h -l help -d 'Print help'
complete -c etran -n "__fish_etran_using_subcommand testbed; and __fish_seen_subcommand_from up" -s V -l version -d 'Print version'
complete -c etran -n "__fish_etran_using_subcommand testbed; and __fish_seen_subcommand_from down" -l name -d 'Name of the testbed: namespaces are NAME-h1..NAME-hN and NAME-sw' -r
complete -c etran -n "__fish_etran_using_subcommand testbed; and __fish_seen_subcommand_from down" -s j -l json -d 'Print machine-readable JSON instead of tables'
complete -c etran -n "__fish_etran_using_subcommand testbed; and __fish_seen_subcommand_from down" -s p -l pretty -d 'Pretty-print JSON (implies --json)'
complete -c etran -n "__fish_etran_using_subcommand testbed; and __fish_seen_subcommand_from down" -s v -l verbose -d 'More log output (repeat for more)'
complete -c etran -n "__fish_etran_using_subcommand testbed; and __fish_seen_subcommand_from down" -s h -l help -d 'Print help'
complete -c etran -n "__fish_etran_using_subcommand testbed; and __fish_seen_subcommand_from down" -s V -l version -d 'Print version'
complete -c etran -n "__fish_etran_using_subcommand testbed; and __fish_seen_subcommand_from status" -l name -d 'Name of the testbed: namespaces are NAME-h1..NAME-hN and NAME-sw' -r
complete -c etran -n "__fish_etran_using_subcommand testbed; and __fish_seen_subcommand_from status" -s j -l json -d 'Print machine-readable JSON instead of tables'
complete -c etran -n "__fish_etran_using_subcommand testbed; and __fish_seen_subcommand_from status" -s p -l pretty -d 'Pretty-print JSON (implies --json)'
complete -c etran -n "__fish_etran_using_subcommand testbed; and __fish_seen_subcommand_from status" -s v -l verbose -d 'More log output (repeat for more)'
complete -c etran -n "__fish_etran_using_subcommand testbed; and __fish_seen_subcommand_from status" -s h -l help -d 'Print help'
complete -c etran -n "__fish_etran_using_subcommand testbed; and __fish_seen_subcommand_from status" -s V -l version -d 'Print version'
complete -c etran -n "__fish_etran_using_subcommand testbed; and __fish_seen_subcommand_from help" -f -a "up" -d 'Build the testbed (removing a stale one of the same name first)'
complete -c etran -n "__fish_etran_using_subcommand testbed; and __fish_seen_subcommand_from help" -f -a "down" -d 'Remove the testbed'
complete -c etran -n "__fish_etran_using_subcommand testbed; and __fish_seen_subcommand_from help" -f -a "status" -d 'Show the testbed\'s hosts, addresses and switch mode'
complete -c etran -n "__fish_etran_using_subcommand testbed; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c etran -n "__fish_etran_using_subcommand run" -l daemon-socket -d 'The daemon\'s Unix socket (its --socket)' -r -F
complete -c etran -n "__fish_etran_using_subcommand run" -s j -l json -d 'Print machine-readable JSON instead of tables'
complete -c etran -n "__fish_etran_using_subcommand run" -s p -l pretty -d 'Pretty-print JSON (implies --json)'
complete -c etran -n "__fish_etran_using_subcommand run" -s v -l verbose -d 'More log output (repeat for more)'
complete -c etran -n "__fish_etran_using_subcommand run" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c etran -n "__fish_etran_using_subcommand run" -s V -l version -d 'Print version'
complete -c etran -n "__fish_etran_using_subcommand help; and not __fish_seen_subcommand_from up down daemon stats bench testbed run help" -f -a "up" -d 'Load and attach the etran datapath on an interface'
complete -c etran -n "__fish_etran_using_subcommand help; and not __fish_seen_subcommand_from up down daemon stats bench testbed run help" -f -a "down" -d 'Detach the etran datapath from an interface and remove its pinned state'
complete -c etran -n "__fish_etran_using_subcommand help; and not __fish_seen_subcommand_from up down daemon stats bench testbed run help" -f -a "daemon" -d 'Run the control path: app registration, handshakes, timers'
complete -c etran -n "__fish_etran_using_subcommand help; and not __fish_seen_subcommand_from up down daemon stats bench testbed run help" -f -a "stats" -d 'Show datapath counters read from the pinned maps'
complete -c etran -n "__fish_etran_using_subcommand help; and not __fish_seen_subcommand_from up down daemon stats bench testbed run help" -f -a "bench" -d 'Benchmarks, each run side by side with Linux'
complete -c etran -n "__fish_etran_using_subcommand help; and not __fish_seen_subcommand_from up down daemon stats bench testbed run help" -f -a "testbed" -d 'The built-in network of namespaces used by benches and tests'
complete -c etran -n "__fish_etran_using_subcommand help; and not __fish_seen_subcommand_from up down daemon stats bench testbed run help" -f -a "run" -d 'Run an unmodified program with its TCP sockets over eTran'
complete -c etran -n "__fish_etran_using_subcommand help; and not __fish_seen_subcommand_from up down daemon stats bench testbed run help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c etran -n "__fish_etran_using_subcommand help; and __fish_seen_subcommand_from bench" -f -a "echo" -d 'TCP echo: eTran against Linux TCP (blocking and busy-polling)'
complete -c etran -n "__fish_etran_using_subcommand help; and __fish_seen_subcommand_from bench" -f -a "rpc" -d 'Closed-loop RPCs: eTran Homa against the same RPCs over Linux TCP'
complete -c etran -n "__fish_etran_using_subcommand help; and __fish_seen_subcommand_from bench" -f -a "raw" -d 'Raw AF_XDP frame rate: the ceiling of the path'
complete -c etran -n "__fish_etran_using_subcommand help; and __fish_seen_subcommand_from testbed" -f -a "up" -d 'Build the testbed (removing a stale one of the same name first)'
complete -c etran -n "__fish_etran_using_subcommand help; and __fish_seen_subcommand_from testbed" -f -a "down" -d 'Remove the testbed'
complete -c etran -n "__fish_etran_using_subcommand help; and __fish_seen_subcommand_from testbed" -f -a "status" -d 'Show the testbed\'s hosts, addresses and switch mode'
