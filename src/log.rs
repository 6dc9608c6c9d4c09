//! Minimal leveled logging to stderr: warnings always, `-v` info, `-vv` debug.
use std::{
    fmt::Display,
    sync::atomic::{AtomicU8, Ordering},
};

static VERBOSITY: AtomicU8 = AtomicU8::new(0);

pub fn set_verbosity(level: u8) {
    VERBOSITY.store(level, Ordering::Relaxed);
}

pub fn verbosity() -> u8 {
    VERBOSITY.load(Ordering::Relaxed)
}

pub fn warn(msg: impl Display) {
    eprintln!("etran: warning: {msg}");
}

pub fn info(msg: impl Display) {
    if VERBOSITY.load(Ordering::Relaxed) >= 1 {
        eprintln!("etran: {msg}");
    }
}

pub fn debug(msg: impl Display) {
    if VERBOSITY.load(Ordering::Relaxed) >= 2 {
        eprintln!("etran: debug: {msg}");
    }
}
