//! The documented examples, run as documented: the book's quick start
//! (`examples/quickstart.sh`) and MCP walkthrough (`examples/mcp/walkthrough.sh`, with
//! `config/examples/mcp.yaml` and the example MCP server) against the real binary, and the
//! book's copies of them checked against the scripts, so they cannot drift apart. Both use the
//! default ports, so they run one at a time.

use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a documented script against this build's binary; its stdout, or a panic with both
/// streams.
fn run_script(script: &str, path: Option<String>) -> String {
    let mut cmd = Command::new("bash");
    cmd.arg(script)
        .current_dir(root())
        .env("ACTGATE", env!("CARGO_BIN_EXE_actgate"));
    if let Some(p) = path {
        cmd.env("PATH", p);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The default ports are shared: one script at a time.
static PORTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Every line of the `sh` block after `marker` in the book page `page` is in `script`.
fn page_block_is_in_script(page: &str, marker: &str, script: &str) {
    let readme = std::fs::read_to_string(root().join(page)).unwrap();
    let script_text = std::fs::read_to_string(root().join(script)).unwrap();
    let section = readme
        .split(marker)
        .nth(1)
        .unwrap_or_else(|| panic!("{page} marks its block with {marker}"));
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a sh block");
    for line in block.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            script_text.contains(line),
            "{page} line not in {script}: {line}"
        );
    }
}

#[test]
fn the_book_quick_start_is_the_script_the_tests_run() {
    page_block_is_in_script(
        "docs/src/getting-started.md",
        "<!-- quickstart -->",
        "examples/quickstart.sh",
    );
}

#[test]
fn the_quick_start_runs_verbatim() {
    let _ports = PORTS.lock().unwrap_or_else(|e| e.into_inner());
    let stdout = run_script("examples/quickstart.sh", None);
    let page = std::fs::read_to_string(root().join("docs/src/getting-started.md")).unwrap();
    // The page shows the output; every line of it but the generated policy id is the output.
    let shown = page
        .split("It prints:\n\n```text\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the page shows the output");
    let got: Vec<&str> = stdout.lines().collect();
    let want: Vec<&str> = shown.lines().collect();
    assert_eq!(got.len(), want.len(), "{stdout}");
    for (g, w) in got.iter().zip(&want) {
        if w.contains("pol_…") {
            assert!(g.starts_with("{\"id\":\"pol_"), "{g}");
        } else {
            assert_eq!(g, w);
        }
    }
}

#[test]
fn the_book_mcp_walkthrough_is_the_script_the_tests_run() {
    page_block_is_in_script(
        "docs/src/mcp.md",
        "<!-- mcp-walkthrough -->",
        "examples/mcp/walkthrough.sh",
    );
}

#[test]
fn the_mcp_walkthrough_runs_verbatim() {
    let _ports = PORTS.lock().unwrap_or_else(|e| e.into_inner());
    let venv = root().join("target/py-venv/bin");
    if std::env::var("ACTGATE_SKIP_SDK_TESTS").as_deref() == Ok("1") {
        eprintln!("\n*** SKIPPED: the MCP walkthrough (ACTGATE_SKIP_SDK_TESTS=1) ***\n");
        return;
    }
    for tool in ["curl", "jq", "openssl"] {
        assert!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .status()
                .unwrap()
                .success(),
            "{tool} is needed (scripts/test installs jq)"
        );
    }
    let path = format!(
        "{}:{}",
        venv.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let stdout = run_script("examples/mcp/walkthrough.sh", Some(path));
    let expected = [
        r#"["get_customer","list_customers","send_email"]"#,
        r#"{"isError":false,"text":"customer 42: Ada Lovelace"}"#,
        r#"{"isError":true,"reason":"explicit_deny"}"#,
        r#"{"isError":true,"reason":"constraint_violated"}"#,
        r#"{"mcpMethod":"tools/call","tool":"delete_customer","decision":"denied","reason":"explicit_deny"}"#,
    ];
    for want in expected {
        assert!(stdout.contains(want), "missing {want} in\n{stdout}");
    }
}
