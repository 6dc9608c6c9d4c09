//! A refusal: the errno a POSIX call would give for a request that cannot be served, with the
//! details in words if any. The daemon's control path decides them (a port in use, a handshake
//! answered by RST), the wire protocol carries them ([`crate::proto`]), and the app library
//! hands them on as `std::io::Error`s ([`Refusal::to_io_error`], [`errno_of`]), so a POSIX shim
//! can return them as they are. A leaf: every layer may use it.
use std::io;

use serde::{Deserialize, Serialize};

/// Why the daemon refused a request: the errno a POSIX call would give and, optionally, the
/// details in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub errno: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Refusal {
    pub fn new(errno: i32, message: impl Into<String>) -> Refusal {
        Refusal { errno, message: Some(message.into()) }
    }

    /// The error the app sees: the errno's kind and code, the text (if any) as its message.
    pub fn to_io_error(&self) -> io::Error {
        let os = io::Error::from_raw_os_error(self.errno);
        match &self.message {
            None => os,
            Some(m) => io::Error::new(os.kind(), Refused { errno: self.errno, message: m.clone() }),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let os = io::Error::from_raw_os_error(self.errno);
        match &self.message {
            None => write!(f, "{os}"),
            Some(m) => write!(f, "{m} ({os})"),
        }
    }
}

/// A daemon refusal with text, inside an `io::Error` (whose `raw_os_error` is then `None`: see
/// [`errno_of`]).
#[derive(Debug)]
struct Refused {
    errno: i32,
    message: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, io::Error::from_raw_os_error(self.errno))
    }
}

impl std::error::Error for Refused {}

/// The errno an error of the app library stands for: its OS code, or the daemon's refusal it
/// carries; `None` for an error of neither kind.
pub fn errno_of(e: &io::Error) -> Option<i32> {
    e.raw_os_error()
        .or_else(|| e.get_ref().and_then(|inner| inner.downcast_ref::<Refused>()).map(|r| r.errno))
}
