//! The man pages in man/ and the shell completions in completions/ are generated from the clap
//! definition; this test fails when they are out of date. Regenerate with
//! `ETRAN_UPDATE_DOCS=1 cargo test --test docs`.
use std::{fs, path::Path};

use clap::{Command, CommandFactory};
use clap_complete::Shell;
use etran::cli::Cli;

/// (path, contents) of every generated file.
fn generated() -> Vec<(String, Vec<u8>)> {
    let mut cmd = Cli::command();
    cmd.build();
    let mut files = Vec::new();
    man_pages(&cmd, "etran", &mut files);
    for (shell, file) in
        [(Shell::Bash, "etran.bash"), (Shell::Zsh, "_etran"), (Shell::Fish, "etran.fish")]
    {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "etran", &mut buf);
        files.push((format!("completions/{file}"), buf));
    }
    files
}

/// One page per command and subcommand: etran.1, etran-up.1, etran-bench-echo.1, ...
fn man_pages(cmd: &Command, name: &str, files: &mut Vec<(String, Vec<u8>)>) {
    let page = cmd.clone().name(name.to_string()).bin_name(name.replace('-', " "));
    let mut buf = Vec::new();
    clap_mangen::Man::new(page).render(&mut buf).expect("render man page");
    files.push((format!("man/{name}.1"), buf));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        man_pages(sub, &format!("{name}-{}", sub.get_name()), files);
    }
}

#[test]
fn man_pages_and_completions_are_up_to_date() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let update = std::env::var_os("ETRAN_UPDATE_DOCS").is_some();
    let mut stale = Vec::new();
    for (path, contents) in generated() {
        let full = root.join(&path);
        if update {
            fs::create_dir_all(full.parent().unwrap()).unwrap();
            fs::write(&full, &contents).unwrap();
        } else if fs::read(&full).ok().as_deref() != Some(contents.as_slice()) {
            stale.push(path);
        }
    }
    assert!(
        stale.is_empty(),
        "out of date: {stale:?}; regenerate with ETRAN_UPDATE_DOCS=1 cargo test --test docs"
    );
}
