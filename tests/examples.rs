//! The documented examples, run as documented: the README's MCP walkthrough
//! (`examples/mcp/walkthrough.sh`, with `config/examples/mcp.yaml` and the example MCP server)
//! against the real binary, and the README's copy of it checked against the script, so the
//! two cannot drift apart.

use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_readme_mcp_walkthrough_is_the_script_the_tests_run() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let script = std::fs::read_to_string(root().join("examples/mcp/walkthrough.sh")).unwrap();
    let section = readme
        .split("<!-- mcp-walkthrough -->")
        .nth(1)
        .expect("the README marks its MCP walkthrough");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a sh block");
    for line in block.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            script.contains(line),
            "README line not in examples/mcp/walkthrough.sh: {line}"
        );
    }
}

#[test]
fn the_mcp_walkthrough_runs_verbatim() {
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
    let out = Command::new("bash")
        .arg("examples/mcp/walkthrough.sh")
        .current_dir(root())
        .env("ACTGATE", env!("CARGO_BIN_EXE_actgate"))
        .env("PATH", path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
