//! Loading BPF objects with errors a user can report: when the kernel's verifier rejects a
//! program, the error names the program, the source line and instruction it stopped at and the
//! verifier's reason, instead of pointing at a log of thousands of lines.
//!
//! libbpf prints the verifier's log through its print callback as one message; [`load`]
//! installs a callback that keeps the last such log of the calling thread (printing it only with
//! `-v`) and passes every other libbpf message on to stderr as libbpf would.
use std::{
    cell::RefCell,
    fmt,
    os::fd::{AsFd, AsRawFd},
    sync::Once,
};

use anyhow::Context;
use libbpf_rs::{skel::OpenSkel, Object, PrintLevel};

const LOG_BEGIN: &str = "-- BEGIN PROG LOAD LOG --\n";
const LOG_END: &str = "-- END PROG LOAD LOG --";

thread_local! {
    /// The last verifier log libbpf printed on this thread: (program, log).
    static LAST_LOG: RefCell<Option<(String, String)>> = const { RefCell::new(None) };
}

fn print(level: PrintLevel, msg: String) {
    if let Some((head, rest)) = msg.split_once(LOG_BEGIN) {
        // "prog 'NAME': " precedes the marker.
        let prog = head.split('\'').nth(1).unwrap_or("?").to_string();
        let log = rest.split(LOG_END).next().unwrap_or(rest).to_string();
        if crate::log::verbosity() >= 1 {
            eprint!("{msg}");
        }
        LAST_LOG.with(|l| *l.borrow_mut() = Some((prog, log)));
        return;
    }
    if level <= PrintLevel::Info || crate::log::verbosity() >= 2 {
        eprint!("{msg}");
    }
}

fn install_print() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        libbpf_rs::set_print(Some((PrintLevel::Debug, print)));
    });
}

/// Where and why the verifier rejected a program, read from its log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub prog: String,
    /// The last source line the log shows (`code @ file:line` on kernels that print it).
    pub source: Option<String>,
    /// The last instruction the log shows, e.g. `45: (0f) r3 += r2`.
    pub insn: Option<String>,
    /// The verifier's reason: the last line before its statistics.
    pub reason: String,
}

impl Rejection {
    /// Reads a verifier log (level 1 or 2).
    pub fn parse(prog: &str, log: &str) -> Rejection {
        let lines: Vec<&str> = log.lines().map(str::trim_end).collect();
        // The statistics line ends the log; the reason is the line before it (there may be
        // none when the log was cut short).
        let end = lines.iter().rposition(|l| l.starts_with("processed ")).unwrap_or(lines.len());
        let reason = lines[..end]
            .iter()
            .rev()
            .find(|l| !l.is_empty())
            .map_or_else(|| "no reason in the log".to_string(), |l| l.to_string());
        let source = lines[..end]
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix("; "))
            .map(|s| s.trim().to_string());
        let insn = lines[..end]
            .iter()
            .rev()
            .find(|l| is_insn(l))
            .map(|l| l.split(" ; ").next().unwrap_or(l).trim().to_string());
        Rejection { prog: prog.to_string(), source, insn, reason }
    }
}

/// `123: (0f) r3 += r2`: an instruction line of the log.
fn is_insn(line: &str) -> bool {
    let Some((num, rest)) = line.split_once(": (") else { return false };
    !num.is_empty() && num.bytes().all(|b| b.is_ascii_digit()) && rest.len() > 3
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the kernel's verifier rejected program {}", self.prog)?;
        if let Some(source) = &self.source {
            write!(f, " at `{source}`")?;
        }
        if let Some(insn) = &self.insn {
            write!(f, " (instruction {insn})")?;
        }
        write!(f, ": {} (etran -v prints the whole verifier log)", self.reason)
    }
}

impl std::error::Error for Rejection {}

/// Loads an opened skeleton; `what` names it in errors ("the entrance program"). A verifier
/// rejection becomes a [`Rejection`] in the error chain.
pub fn load<'obj, S: OpenSkel<'obj>>(open: S, what: &str) -> anyhow::Result<S::Output> {
    install_print();
    LAST_LOG.with(|l| l.borrow_mut().take());
    open.load()
        .map_err(|err| {
            let err = anyhow::Error::from(err);
            match LAST_LOG.with(|l| l.borrow_mut().take()) {
                Some((prog, log)) => err.context(Rejection::parse(&prog, &log)),
                None => err,
            }
        })
        .with_context(|| format!("loading {what}"))
}

/// The most instructions the verifier may process for one program (`BPF_COMPLEXITY_LIMIT_INSNS`).
pub const INSN_LIMIT: u32 = 1_000_000;

/// The program of a loaded object the verifier worked hardest on: its name and the instructions
/// it processed. A program near [`INSN_LIMIT`] is one kernel release away from being refused
/// (6.18.44 refused a Homa ingress that 6.1, 6.12 and earlier 6.18s took). None before Linux
/// 5.16, whose program info does not say.
pub fn heaviest(object: &Object) -> Option<(String, u32)> {
    object
        .progs()
        .filter_map(|prog| {
            let mut info = libbpf_rs::libbpf_sys::bpf_prog_info::default();
            let mut len = std::mem::size_of_val(&info) as u32;
            // SAFETY: info is a bpf_prog_info of len bytes; the fd is the program's, open.
            let ret = unsafe {
                libbpf_rs::libbpf_sys::bpf_prog_get_info_by_fd(
                    prog.as_fd().as_raw_fd(),
                    &mut info,
                    &mut len,
                )
            };
            (ret == 0 && info.verified_insns > 0)
                .then(|| (prog.name().to_string_lossy().into_owned(), info.verified_insns))
        })
        .max_by_key(|&(_, insns)| insns)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The log 6.12 printed for the entrance before parse.h bounded tot_len.
    const LOG_6_12: &str = "\
0: R1=ctx() R10=fp0
; struct cursor c = { .pos = (void *)(long)ctx->data, .end = (void *)(long)ctx->data_end }; @ entrance.bpf.c:51
0: (61) r2 = *(u32 *)(r1 +4)          ; R1=ctx() R2_w=pkt_end()
; if (tot < hlen || (void *)ip + tot > c->end) @ parse.h:46
44: (bf) r3 = r2                      ; R2_w=pkt(r=34)
45: (0f) r3 += r5
math between pkt pointer and register with unbounded min value is not allowed
processed 127 insns (limit 1000000) max_states_per_insn 0 total_states 11 peak_states 11 mark_read 2
";

    #[test]
    fn a_rejection_names_line_instruction_and_reason() {
        let r = Rejection::parse("etran_entrance", LOG_6_12);
        assert_eq!(
            r.source.as_deref(),
            Some("if (tot < hlen || (void *)ip + tot > c->end) @ parse.h:46")
        );
        assert_eq!(r.insn.as_deref(), Some("45: (0f) r3 += r5"));
        assert_eq!(
            r.reason,
            "math between pkt pointer and register with unbounded min value is not allowed"
        );
        let shown = r.to_string();
        assert!(shown.contains("program etran_entrance at `if (tot"), "{shown}");
    }

    #[test]
    fn a_log_without_statistics_still_gives_its_last_line() {
        let r = Rejection::parse("p", "0: (b7) r0 = 0\nR0 !read_ok\n");
        assert_eq!(r.reason, "R0 !read_ok");
        assert_eq!(r.insn.as_deref(), Some("0: (b7) r0 = 0"));
        assert_eq!(r.source, None);
    }
}
