//! The book cannot drift from the code: the CLI reference is generated from clap (the binary's
//! own `--help`), and the configuration reference names every key the config types accept.
//! `ACTGATE_UPDATE_DOCS=1 cargo test --test docs` rewrites the generated page.

use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_actgate"))
        .args(args)
        .arg("--help")
        .env("COLUMNS", "100")
        .env_remove("ACTGATE_CONFIG")
        .env_remove("ACTGATE_API_KEY")
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?} --help");
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

/// The names under "Commands:" in a help text (without `help`).
fn subcommands(help: &str) -> Vec<String> {
    help.split("Commands:\n")
        .nth(1)
        .map(|rest| {
            rest.lines()
                .take_while(|l| l.starts_with("  "))
                .filter_map(|l| l.split_whitespace().next())
                .filter(|c| *c != "help")
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

fn generated() -> String {
    let mut out = String::from(
        "# CLI reference (generated)\n\nThe binary's own help, command by command: `tests/docs.rs` generates this page from clap\nand fails when it differs (`ACTGATE_UPDATE_DOCS=1 cargo test --test docs` rewrites it).\n",
    );
    let mut queue: Vec<Vec<String>> = vec![vec![]];
    while let Some(cmd) = queue.pop() {
        let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
        let text = help(&args);
        out.push_str(&format!(
            "\n## actgate{}{}\n\n```text\n{}\n```\n",
            if cmd.is_empty() { "" } else { " " },
            cmd.join(" "),
            text
        ));
        let mut subs = subcommands(&text);
        subs.reverse();
        for s in subs {
            let mut next = cmd.clone();
            next.push(s);
            queue.push(next);
        }
    }
    out
}

#[test]
fn the_cli_reference_is_generated_from_clap() {
    let path = root().join("docs/src/cli-reference.md");
    let want = generated();
    if std::env::var("ACTGATE_UPDATE_DOCS").as_deref() == Ok("1") {
        std::fs::write(&path, &want).unwrap();
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "docs/src/cli-reference.md is not the binary's help: run ACTGATE_UPDATE_DOCS=1 cargo test --test docs"
    );
}

fn camel(snake: &str) -> String {
    let mut out = String::new();
    let mut up = false;
    for c in snake.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.extend(c.to_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn the_configuration_reference_names_every_key() {
    let raw = std::fs::read_to_string(root().join("src/config/raw.rs")).unwrap();
    let mut book = String::new();
    for entry in std::fs::read_dir(root().join("docs/src")).unwrap() {
        book.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap());
    }
    let reference = std::fs::read_to_string(root().join("docs/src/configuration.md")).unwrap();
    let mut missing = Vec::new();
    let mut checked = 0;
    for line in raw.lines() {
        let line = line.trim();
        let Some(field) = line
            .strip_prefix("pub ")
            .and_then(|l| l.split_once(':'))
            .map(|(name, _)| name.trim())
        else {
            continue;
        };
        if field.contains(' ') || field.contains('(') {
            continue;
        }
        let key = camel(field.trim_start_matches("r#"));
        checked += 1;
        if !book.contains(&key) {
            missing.push(key);
        }
    }
    assert!(
        checked > 60,
        "only {checked} fields found in src/config/raw.rs"
    );
    assert!(
        missing.is_empty(),
        "config keys the book never names: {missing:?}"
    );
    // Every top-level section is in the reference table itself.
    let top = raw
        .split("TOP_LEVEL_KEYS: &[&str] = &[")
        .nth(1)
        .and_then(|r| r.split("];").next())
        .unwrap();
    for key in top.split('"').skip(1).step_by(2) {
        assert!(
            reference.contains(&format!("`{key}")),
            "docs/src/configuration.md has no row for `{key}`"
        );
    }
}
