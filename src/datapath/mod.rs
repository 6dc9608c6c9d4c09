//! Loading, attaching and pinning the datapath (placeholder; being written).
