//! The client SDKs' own test suites and the examples, against this build's binary: pytest for
//! `sdk/python` (and `examples/openai-agents-python`), node's test runner for
//! `sdk/typescript` (and `examples/responses-loop-node`). `scripts/test` installs what they
//! need (target/py-venv, `npm ci`); ACTGATE_SKIP_SDK_TESTS=1 skips them, loudly.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn skip() -> bool {
    if std::env::var("ACTGATE_SKIP_SDK_TESTS").as_deref() == Ok("1") {
        eprintln!("\n*** SKIPPED: ACTGATE_SKIP_SDK_TESTS=1 ***\n");
        return true;
    }
    false
}

fn python() -> PathBuf {
    if let Ok(p) = std::env::var("ACTGATE_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = root().join("target/py-venv/bin/python");
    assert!(
        venv.exists(),
        "no {}: run scripts/test (it makes the venv from tests/requirements.txt), or set ACTGATE_PYTHON",
        venv.display()
    );
    venv
}

fn run(mut cmd: Command, what: &str) -> String {
    let out = cmd
        .env("ACTGATE_BIN", env!("CARGO_BIN_EXE_actgate"))
        .env_remove("OPENAI_API_KEY")
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    stdout
}

fn in_dir(program: impl AsRef<std::ffi::OsStr>, dir: &Path) -> Command {
    let mut c = Command::new(program);
    c.current_dir(dir);
    c
}

#[test]
fn python_sdk_suite() {
    if skip() {
        return;
    }
    let dir = root().join("sdk/python");
    let mut cmd = in_dir(python(), &dir);
    cmd.args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"])
        .env("PYTHONPATH", dir.join("src"));
    let out = run(cmd, "pytest sdk/python");
    assert!(out.contains("passed"), "{out}");
    assert!(!out.contains("skipped"), "nothing may be skipped:\n{out}");
}

#[test]
fn typescript_sdk_suite() {
    if skip() {
        return;
    }
    let dir = root().join("sdk/typescript");
    let mut cmd = in_dir("node", &dir);
    cmd.args(["--test", "test/client.test.js", "test/readme.test.js"]);
    let out = run(cmd, "node --test sdk/typescript");
    assert!(out.contains("# fail 0"), "{out}");
    assert!(!out.contains("# pass 0"), "{out}");
}

/// The four decisions the example prints (from actgate's audit trail), in order.
#[test]
fn example_openai_agents_python() {
    if skip() {
        return;
    }
    let mut cmd = in_dir(python(), &root());
    cmd.arg("examples/openai-agents-python/run.py")
        .env("PYTHONPATH", root().join("sdk/python/src"));
    let out = run(cmd, "examples/openai-agents-python/run.py");
    let decided: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("what actgate decided"))
        .skip(1)
        .collect();
    assert_eq!(decided.len(), 4, "{out}");
    let expect = [
        ("allowed", "get_customer", "read api://crm/customers/42", ""),
        (
            "denied",
            "list_customers",
            "list api://crm/customers",
            "constraint_violated",
        ),
        (
            "allowed",
            "send_email",
            "send_email api://email/outbound",
            "",
        ),
        (
            "denied",
            "send_email",
            "send_email api://email/outbound",
            "evil.example",
        ),
    ];
    for (line, (decision, what, target, why)) in decided.iter().zip(expect) {
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!((words[0], words[1]), (decision, what), "{line}");
        assert!(line.contains(target) && line.contains(why), "{line}");
    }
    assert!(out.contains("(email_customer ran: sent to ada@yourcompany.com)"));
    assert!(
        !out.contains("sent to someone@evil.example"),
        "the denied e-mail never ran"
    );
}

#[test]
fn example_responses_loop_node() {
    if skip() {
        return;
    }
    let dir = root().join("examples/responses-loop-node");
    assert!(
        dir.join("node_modules").exists(),
        "run scripts/test (npm ci in examples/responses-loop-node)"
    );
    run(
        in_dir(dir.join("node_modules/.bin/tsc"), &dir),
        "tsc --noEmit (examples/responses-loop-node)",
    );
    let mut cmd = in_dir(dir.join("node_modules/.bin/tsx"), &dir);
    cmd.arg("main.ts");
    let out = run(cmd, "examples/responses-loop-node");
    let decided: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("allowed") || l.starts_with("denied"))
        .collect();
    let expect = [
        ("allowed", "get_customer", ""),
        ("denied", "list_customers", "constraint_violated"),
        ("allowed", "send_email", ""),
        ("denied", "send_email", "constraint_violated"),
        ("denied", "delete_customer", "explicit_deny"),
    ];
    assert_eq!(decided.len(), expect.len(), "{out}");
    for (line, (decision, tool, why)) in decided.iter().zip(expect) {
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!((words[0], words[1]), (decision, tool), "{line}");
        assert!(line.contains(why), "{line}");
    }
    assert!(out.contains("model: Done"), "{out}");
}

/// Every line of the code blocks in `doc` (fenced as `lang`) is in `source` (trailing comments
/// aside): the snippets users copy are the ones a test runs.
fn snippets_are_tested(doc: &str, lang: &str, source: &str) {
    let text = std::fs::read_to_string(root().join(doc)).unwrap();
    let code = std::fs::read_to_string(root().join(source)).unwrap();
    let lines: Vec<&str> = code.lines().map(str::trim).collect();
    let mut inside = false;
    let mut checked = 0;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("```") {
            inside = !inside && t == format!("```{lang}");
            continue;
        }
        if !inside || t.is_empty() {
            continue;
        }
        let t = t
            .split("  # ")
            .next()
            .unwrap()
            .split("   // ")
            .next()
            .unwrap()
            .trim();
        assert!(
            lines.iter().any(|l| l.contains(t)),
            "{doc}: this line of a {lang} snippet is not in {source}, which runs them: {t}"
        );
        checked += 1;
    }
    assert!(checked > 0, "{doc} has no {lang} snippet");
}

#[test]
fn readme_snippets_are_the_ones_the_tests_run() {
    snippets_are_tested(
        "sdk/python/README.md",
        "python",
        "sdk/python/tests/test_readme.py",
    );
    snippets_are_tested(
        "docs/src/clients.md",
        "python",
        "sdk/python/tests/test_readme.py",
    );
    snippets_are_tested(
        "sdk/typescript/README.md",
        "ts",
        "sdk/typescript/test/readme.test.js",
    );
}
