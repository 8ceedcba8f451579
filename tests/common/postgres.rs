//! A throwaway PostgreSQL for the tests: a fresh cluster (initdb) in a temporary directory,
//! its own port on 127.0.0.1 and its own socket directory, trust authentication, stopped and
//! deleted when dropped. Needs Debian's `postgresql` package (scripts/test installs it); with
//! none installed the tests fail, unless ACTGATE_SKIP_POSTGRES_TESTS=1 says to skip them, which
//! they then say loudly.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The database password of the tests' PostgreSQL (a canary: never in a log or a body).
pub const PASSWORD: &str = "pg-canary-5e1f0c2a9d";

pub struct Pg {
    bin: PathBuf,
    dir: tempfile::TempDir,
    pub port: u16,
    /// `postgres://actgate:<PASSWORD>@127.0.0.1:<port>/postgres?sslmode=disable`
    pub url: String,
    /// Run the server as this user (initdb refuses root).
    as_user: Option<String>,
}

fn bin_dir() -> Option<PathBuf> {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if p.join("initdb").exists() {
            return Some(p);
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Pg {
    /// A running server, or `None` when the tests are told to skip (see the module doc).
    pub fn start() -> Option<Pg> {
        let Some(bin) = bin_dir() else {
            if std::env::var("ACTGATE_SKIP_POSTGRES_TESTS").as_deref() == Ok("1") {
                eprintln!(
                    "\n*** SKIPPED: no PostgreSQL installed and ACTGATE_SKIP_POSTGRES_TESTS=1 ***\n"
                );
                return None;
            }
            panic!(
                "PostgreSQL is not installed (no initdb): apt-get install postgresql, or set ACTGATE_SKIP_POSTGRES_TESTS=1 to skip these tests"
            );
        };
        let dir = tempfile::tempdir().unwrap();
        let is_root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        let as_user = is_root.then(|| "postgres".to_string());
        if let Some(u) = &as_user {
            let ok = Command::new("chown")
                .args(["-R", &format!("{u}:"), dir.path().to_str().unwrap()])
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown the PostgreSQL directory to {u}");
        }
        let pg = Pg {
            bin,
            port: free_port(),
            url: String::new(),
            dir,
            as_user,
        };
        let data = pg.data();
        // A real password (SCRAM): the tests check it never reaches a log line or a body.
        let pwfile = pg.dir.path().join("pw");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        if let Some(u) = &pg.as_user {
            let _ = Command::new("chown")
                .args([&format!("{u}:"), pwfile.to_str().unwrap()])
                .status();
        }
        pg.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "--auth=scram-sha-256",
                "--pwfile",
                pwfile.to_str().unwrap(),
                "-U",
                "actgate",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        let mut pg = pg;
        pg.url = format!(
            "postgres://actgate:{PASSWORD}@127.0.0.1:{}/postgres?sslmode=disable",
            pg.port
        );
        pg.resume();
        Some(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let exe = self.bin.join(tool);
        let out = match &self.as_user {
            Some(u) => Command::new("runuser")
                .args(["-u", u, "--"])
                .arg(&exe)
                .args(args)
                .current_dir(self.dir.path())
                .output(),
            None => Command::new(&exe)
                .args(args)
                .current_dir(self.dir.path())
                .output(),
        }
        .unwrap_or_else(|e| panic!("{}: {e}", exe.display()));
        assert!(
            out.status.success(),
            "{tool} {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts the server (again) on the same port and data.
    pub fn resume(&self) {
        let data = self.data();
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("postgres.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-o",
                &opts,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start",
            ],
        );
    }

    /// Stops the server at once (open connections are cut).
    pub fn pause(&self) {
        let data = self.data();
        self.run(
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-m", "fast", "-w", "stop"],
        );
    }

    /// A client connection, for checks and tampering behind actgate's back.
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .expect("connect to the test PostgreSQL");
        tokio::spawn(conn);
        client
    }

    #[allow(dead_code)]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let data = self.data();
        let exe = self.bin.join("pg_ctl");
        let args = ["-D", data.to_str().unwrap(), "-m", "immediate", "stop"];
        let _ = match &self.as_user {
            Some(u) => Command::new("runuser")
                .args(["-u", u, "--"])
                .arg(&exe)
                .args(args)
                .output(),
            None => Command::new(&exe).args(args).output(),
        };
    }
}
