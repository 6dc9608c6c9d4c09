//! Cleanups that must run when the process is interrupted (Ctrl-C, SIGTERM, SIGHUP).
//!
//! The ctrlc crate allows one handler per process, so this module owns it: code that builds
//! something that must not outlive an interrupted run (a private testbed, a bench's network)
//! registers a cleanup under a unique key and unregisters it once it has cleaned up itself. On
//! a signal every registered cleanup runs once, in registration order, and the process exits
//! with status 130.
use std::sync::{Arc, Mutex, Once};

type Cleanup = Arc<dyn Fn() + Send + Sync>;

static REGISTRY: Mutex<Vec<(String, Cleanup)>> = Mutex::new(Vec::new());
static INSTALL: Once = Once::new();

fn install() {
    INSTALL.call_once(|| {
        if let Err(e) = ctrlc::set_handler(run_all_and_exit) {
            crate::log::warn(format!(
                "cannot install the Ctrl-C handler ({e}); interrupting may leave state behind"
            ));
        }
    });
}

fn run_all_and_exit() {
    let entries = std::mem::take(&mut *REGISTRY.lock().unwrap_or_else(|p| p.into_inner()));
    for (key, f) in entries {
        crate::log::debug(format!("interrupted: running cleanup {key}"));
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f())).is_err() {
            crate::log::warn(format!("cleanup {key} panicked"));
        }
    }
    std::process::exit(130);
}

/// Registers `f` to run if the process is interrupted. A second registration under the same
/// key replaces the first.
pub fn register(key: String, f: Box<dyn Fn() + Send + Sync>) {
    install();
    let mut reg = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
    reg.retain(|(k, _)| *k != key);
    reg.push((key, Arc::from(f)));
}

/// Forgets the cleanup registered under `key` (no-op when there is none).
pub fn unregister(key: &str) {
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner()).retain(|(k, _)| k != key);
}

/// Whether a cleanup is registered under `key`.
pub fn is_registered(key: &str) -> bool {
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner()).iter().any(|(k, _)| k == key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_replace_unregister() {
        register("test:a".into(), Box::new(|| {}));
        register("test:a".into(), Box::new(|| {}));
        let n = REGISTRY.lock().unwrap().iter().filter(|(k, _)| k == "test:a").count();
        assert_eq!(n, 1);
        assert!(is_registered("test:a"));
        unregister("test:a");
        assert!(!is_registered("test:a"));
    }
}
