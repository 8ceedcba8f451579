//! Running the real `actgate` binary: spawn, read its JSON log lines, find its bound
//! addresses, stop it gracefully or kill it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

pub struct Proc {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
    pub proxy: String,
    pub api: String,
    pub admin: String,
}

impl Proc {
    /// Starts `actgate serve --config <config>` with JSON logs and waits until it listens.
    pub fn spawn(config: &Path, env: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_actgate"));
        cmd.args([
            "serve",
            "--log-format",
            "json",
            "--config",
            config.to_str().unwrap(),
        ])
        .env("ACTGATE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut p = Proc {
            child,
            lines: rx,
            seen: Vec::new(),
            proxy: String::new(),
            api: String::new(),
            admin: String::new(),
        };
        let line = p.wait_for("actgate listening");
        let v: Value = serde_json::from_str(&line).unwrap();
        p.proxy = format!("http://{}", v["proxy"].as_str().unwrap());
        p.api = format!("http://{}", v["api"].as_str().unwrap());
        p.admin = format!("http://{}", v["admin"].as_str().unwrap());
        p
    }

    /// Waits (up to 20 s) for a log line containing `needle`; panics with everything seen.
    pub fn wait_for(&mut self, needle: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| {
                    panic!("no log line containing {needle:?}; saw {:#?}", self.seen)
                });
            self.seen.push(line.clone());
            if line.contains(needle) {
                return line;
            }
        }
    }

    /// SIGTERM, wait, and return every log line.
    pub fn stop(mut self) -> Vec<String> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "actgate exited with {status}");
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(line);
        }
        self.seen
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(mut self) {
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// Runs `actgate <args>` to completion: (exit code, stdout, stderr).
pub fn actgate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_actgate"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
