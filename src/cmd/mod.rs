//! One module per subcommand; `run` dispatches the parsed command line.
use crate::{
    cli::{BenchCommand, Command},
    output::Output,
};

mod bench;
mod daemon;
mod down;
mod run;
mod stats;
mod testbed;
mod up;

pub fn run(command: Command, out: &Output) -> anyhow::Result<()> {
    match command {
        Command::Up(args) => up::run(args, out),
        Command::Down(args) => down::run(args, out),
        Command::Daemon(args) => daemon::run(args, out),
        Command::Stats(args) => stats::run(args, out),
        Command::Bench(BenchCommand::Echo(args)) => bench::echo::run(args, out),
        Command::Bench(BenchCommand::Rpc(args)) => bench::rpc::run(args, out),
        Command::Bench(BenchCommand::Raw(args)) => bench::raw::run(args, out),
        Command::Testbed(cmd) => testbed::run(cmd, out),
        Command::Run(args) => run::run(args, out),
    }
}
