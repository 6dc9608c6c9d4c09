//! How commands report: human tables by default, JSON with -j/--json (pretty with -p), and
//! errors as one line (`etran: error: ...`) or a JSON `{"error": ...}` object, as bpftool does.
use std::{
    fmt,
    io::{ErrorKind, IsTerminal, Write},
};

use serde::Serialize;

pub struct Output {
    json: bool,
    pretty: bool,
}

impl Output {
    pub fn new(json: bool, pretty: bool) -> Self {
        Output { json, pretty }
    }

    pub fn json(&self) -> bool {
        self.json
    }

    /// Whether live progress (bars, per-second lines) should be drawn.
    pub fn interactive(&self) -> bool {
        !self.json && std::io::stdout().is_terminal()
    }

    pub fn print_json<T: Serialize>(&self, value: &T) -> anyhow::Result<()> {
        let text = if self.pretty {
            serde_json::to_string_pretty(value)?
        } else {
            serde_json::to_string(value)?
        };
        stdout(format_args!("{text}\n"));
        Ok(())
    }

    pub fn error(&self, err: &anyhow::Error) {
        if self.json {
            let msg = serde_json::json!({ "error": format!("{err:#}") });
            stdout(format_args!("{msg}\n"));
        } else {
            eprintln!("etran: error: {err:#}");
        }
    }
}

/// Writes to standard output. When the reader went away (`etran stats | head`) the program ends
/// quietly with status 0, as command-line tools do; Rust's `print!` would panic instead. (SIGPIPE
/// stays ignored: the daemon and the benches write to Unix sockets whose peers may close.)
pub fn stdout(args: fmt::Arguments) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        if e.kind() == ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("etran: error: writing to standard output: {e}");
        std::process::exit(1);
    }
}

/// `print!` through [`stdout`].
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::output::stdout(format_args!($($arg)*)) };
}

/// `println!` through [`stdout`].
#[macro_export]
macro_rules! outln {
    () => { $crate::output::stdout(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::output::stdout(format_args!("{}\n", format_args!($($arg)*))) };
}

/// A plain text table with left-aligned first column and right-aligned numbers.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<S: Into<String>>(header: impl IntoIterator<Item = S>) -> Self {
        Table { header: header.into_iter().map(Into::into).collect(), rows: Vec::new() }
    }

    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self) -> String {
        let cols = self.header.len();
        let mut width = vec![0; cols];
        for row in std::iter::once(&self.header).chain(&self.rows) {
            for (w, cell) in width.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let line: Vec<String> = row
                .iter()
                .zip(&width)
                .enumerate()
                .map(
                    |(i, (cell, w))| {
                        if i == 0 {
                            format!("{cell:<w$}")
                        } else {
                            format!("{cell:>w$}")
                        }
                    },
                )
                .collect();
            out.push_str(line.join("  ").trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::Table;

    #[test]
    fn table_aligns_columns() {
        let mut t = Table::new(["name", "packets"]);
        t.row(["tcp", "12"]);
        t.row(["homa", "3456"]);
        assert_eq!(t.render(), "name  packets\ntcp        12\nhoma     3456\n");
    }
}
