//! `actgate demo` runs end to end on a fresh directory and shows the allowed and denied calls.

use std::process::Command;

#[test]
fn the_demo_shows_allowed_and_denied_calls_and_where_the_audit_is() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_actgate"))
        .args(["demo", "--data-dir"])
        .arg(dir.path().join("demo-data"))
        .env("ACTGATE_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = |what: &str| {
        stdout
            .lines()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no row {what:?} in\n{stdout}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert!(row("read customer 42").ends_with("allowed allowed 200 yes"));
    assert!(row("list 500 customers").ends_with("denied constraint_violated 403 no"));
    assert!(row("delete customer 42").ends_with("denied explicit_deny 403 no"));
    assert!(row("bcc eve@evil.com").ends_with("denied constraint_violated 403 no"));
    assert!(row("forged token").ends_with("denied token_invalid 401 no"));
    assert!(row("path traversal").ends_with("denied invalid_request 400 no"));
    assert!(row("after revoking").ends_with("denied token_revoked 401 no"));
    assert!(row("MCP tools/list").ends_with("allowed allowed 200 yes"));
    assert!(
        stdout.contains("the agent sees 1 of the server's 3 tools: get_customer"),
        "{stdout}"
    );
    assert!(row("MCP call get_customer 42").ends_with("allowed allowed 200 yes"));
    assert!(row("MCP call delete_customer 42").ends_with("denied explicit_deny 403 no"));
    assert!(
        stdout.contains("the model is told: The call to tool delete_customer was denied"),
        "{stdout}"
    );
    assert!(
        stdout.contains("audit trail: 12 events for 12 calls, one each"),
        "{stdout}"
    );
    // A second run starts fresh (the same agent name and policy again, no conflict).
    let again = Command::new(env!("CARGO_BIN_EXE_actgate"))
        .args(["demo", "--data-dir"])
        .arg(dir.path().join("demo-data"))
        .env("ACTGATE_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "{stdout}");
    assert!(!stdout.contains(" ?"), "every id printed: {stdout}");
    // A directory the demo did not make is never emptied.
    let foreign = dir.path().join("mine");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("precious.txt"), "x").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_actgate"))
        .args(["demo", "--data-dir"])
        .arg(&foreign)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(foreign.join("precious.txt").exists());
}
