//! Network namespaces (placeholder; being written).
