use clap::Parser;

fn main() {
    let cli = etran::cli::Cli::parse();
    let out = etran::output::Output::new(cli.json || cli.pretty, cli.pretty);
    etran::log::set_verbosity(cli.verbose);
    if let Err(err) = etran::cmd::run(cli.command, &out) {
        out.error(&err);
        std::process::exit(1);
    }
}
