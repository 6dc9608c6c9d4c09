//! rtnetlink (placeholder; being written).
