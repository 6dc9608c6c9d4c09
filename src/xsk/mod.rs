//! AF_XDP (placeholder; being written).
