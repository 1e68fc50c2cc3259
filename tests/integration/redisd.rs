//! A private Redis for a test: `redis-server` (Debian's package, installed by
//! scripts/test.sh) on 127.0.0.1 and a free port, with its files in the test's temporary
//! directory, stopped when dropped; and the test's own client to it (the `redis` crate,
//! synchronous), to put and read records as rustus would.
//!
//! Without `redis-server` the tests that need it are skipped loudly, unless
//! `TUSRING_REQUIRE_REDIS` is set (scripts/test.sh sets it), in which case they fail.
#![allow(dead_code)]

use crate::harness::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long Redis may take to answer PING after it was started.
const REDIS_START: Duration = Duration::from_secs(10);

fn required() -> bool {
    std::env::var_os("TUSRING_REQUIRE_REDIS").is_some_and(|v| !v.is_empty())
}

fn server_binary() -> Option<PathBuf> {
    let bin = PathBuf::from(
        std::env::var_os("TUSRING_REDIS_SERVER").unwrap_or_else(|| "redis-server".into()),
    );
    let runs = Command::new(&bin)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    runs.then_some(bin)
}

/// A Redis server of the test's own.
pub struct Redis {
    bin: PathBuf,
    dir: PathBuf,
    pub port: u16,
    child: Option<Child>,
}

impl Redis {
    /// Starts one in `tmp`, or `None` (the test is then skipped, loudly) when
    /// `redis-server` is missing and `TUSRING_REQUIRE_REDIS` is not set.
    pub fn start(tmp: &TempDir) -> Option<Redis> {
        let Some(bin) = server_binary() else {
            if required() {
                panic!("redis-server is not installed and TUSRING_REQUIRE_REDIS is set; run scripts/test.sh");
            }
            let bang = "!".repeat(78);
            let msg = format!(
                "\n{bang}\n!!! SKIPPED Redis test: redis-server is not installed.\n\
                 !!! Run scripts/test.sh (or set TUSRING_REQUIRE_REDIS=1 to make this fail).\n{bang}\n\n"
            );
            let _ = std::io::Write::write_all(&mut std::io::stderr(), msg.as_bytes());
            return None;
        };
        let dir = tmp.join("redis");
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = Redis {
            bin,
            dir,
            port: free_port(),
            child: None,
        };
        r.spawn();
        Some(r)
    }

    /// Starts the server (again, on the same port and directory: a stop with `SAVE`
    /// left its keys in `dump.rdb`, which it loads).
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new(&self.bin)
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
                "--daemonize",
                "no",
                "--dir",
            ])
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + REDIS_START;
        loop {
            if let Ok(mut c) = self.try_client() {
                if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not answer");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The flags of a tusring node with its records and locks here.
    pub fn flags(&self) -> Vec<String> {
        vec![
            "--info-storage".into(),
            "redis-info-storage".into(),
            "--info-db-dsn".into(),
            self.url(),
        ]
    }

    fn try_client(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(self.url())?.get_connection_with_timeout(Duration::from_secs(2))
    }

    /// The test's own connection.
    pub fn client(&self) -> redis::Connection {
        self.try_client().expect("connect to the test's Redis")
    }

    /// A string value, or `None`.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        redis::cmd("GET")
            .arg(key)
            .query(&mut self.client())
            .expect("GET")
    }

    /// `SET key value`.
    pub fn set(&self, key: &str, value: &[u8]) {
        redis::cmd("SET")
            .arg(key)
            .arg(value)
            .query::<()>(&mut self.client())
            .expect("SET")
    }

    /// The key's remaining time to live in seconds (`TTL`: -1 none, -2 no key).
    pub fn ttl(&self, key: &str) -> i64 {
        redis::cmd("TTL")
            .arg(key)
            .query(&mut self.client())
            .expect("TTL")
    }

    /// Stops the server the way an operator does (`SHUTDOWN SAVE`: its keys are kept
    /// for the next start) and waits for it to exit.
    pub fn stop(&mut self) {
        let _ = redis::cmd("SHUTDOWN")
            .arg("SAVE")
            .query::<()>(&mut self.client());
        if let Some(mut child) = self.child.take() {
            if wait_timeout(&mut child, Duration::from_secs(10)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing is answered.
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Thaws a frozen server (SIGCONT).
    pub fn thaw(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, sig: libc::c_int) {
        let pid = self.child.as_ref().expect("running").id() as libc::pid_t;
        // SAFETY: kill(2) with our own child's pid and a valid signal number.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig})");
    }

    /// The directory of its files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGCONT first, in case a test froze it.
            // SAFETY: kill(2) with our own child's pid.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGCONT) };
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
