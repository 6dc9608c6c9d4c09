//! The built-in testbed (placeholder; being written).
