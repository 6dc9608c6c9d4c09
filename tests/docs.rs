//! The man pages in man/ and the shell completions in completions/ are generated from the clap
//! definition; this test fails when they are out of date. Regenerate with
//! `ETRAN_UPDATE_DOCS=1 cargo test --test docs`. And the layering ARCHITECTURE.md states holds:
//! imports between the crate's top-level modules go down only.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
};

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

/// ARCHITECTURE.md's layers, from the top ("Imports go down only"); a module not listed is one
/// of the small helpers at the bottom.
const LAYERS: &[&[&str]] = &[
    &["cmd", "cli"],
    &["app", "daemon"],
    &["backend"],
    &["proto"],
    &["transport"],
    &["loader", "testbed"],
    &["xsk", "netlink", "netns", "ethtool", "napi"],
];

/// The top-level modules `text` names through `crate::` (paths and `use` groups).
fn crate_imports(text: &str) -> BTreeSet<String> {
    let code: Vec<&str> = text.lines().map(|l| l.split("//").next().unwrap_or("")).collect();
    let code = code.join("\n");
    let ident =
        |s: &str| s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>();
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        let Some(group) = rest.strip_prefix('{') else {
            found.insert(ident(rest));
            continue;
        };
        // `crate::{a::b, c, d::{e, f}}`: the first segment of each path at the group's depth.
        let (mut depth, mut start) = (0, true);
        for (i, ch) in group.char_indices() {
            match ch {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => start = true,
                c if start && depth == 0 && (c.is_alphanumeric() || c == '_') => {
                    found.insert(ident(&group[i..]));
                    start = false;
                }
                _ => {}
            }
        }
    }
    found
}

#[test]
fn imports_between_top_level_modules_go_down_only() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let bottom = LAYERS.len();
    let rank = |m: &str| LAYERS.iter().position(|l| l.contains(&m)).unwrap_or(bottom);
    let modules: BTreeSet<String> = fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path().file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    let mut uses: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(&src).unwrap();
            let top =
                rel.iter().next().unwrap().to_string_lossy().trim_end_matches(".rs").to_string();
            if top == "main" || top == "lib" {
                continue;
            }
            for m in crate_imports(&fs::read_to_string(&path).unwrap()) {
                if m != top && modules.contains(&m) {
                    uses.entry(top.clone()).or_default().insert(m);
                }
            }
        }
    }
    let mut wrong = Vec::new();
    for (from, tos) in &uses {
        for to in tos {
            if rank(to) < rank(from) {
                wrong.push(format!("{from} imports {to}, a layer above it"));
            } else if uses.get(to).is_some_and(|back| back.contains(from)) && from < to {
                wrong.push(format!("{from} and {to} import each other"));
            }
        }
    }
    assert!(wrong.is_empty(), "ARCHITECTURE.md's layering is broken: {wrong:#?}");
    // The check sees the imports it judges.
    assert!(uses["cmd"].contains("app") && uses["xsk"].contains("sys"), "{uses:?}");
}
