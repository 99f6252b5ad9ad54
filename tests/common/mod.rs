//! Helpers shared by the test crates that run real daemon processes.
#![allow(dead_code)] // each test crate uses its own subset

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use p100_sandbox::RunningSandbox;
use sqlx::PgPool;

pub const BIN: &str = env!("CARGO_BIN_EXE_p100-recon");

/// The URL of the fresh database `#[sqlx::test]` made for this test.
pub fn url_of(pool: &PgPool) -> String {
    let base = std::env::var("DATABASE_URL").expect("tests need DATABASE_URL");
    let mut url = url::Url::parse(&base).unwrap();
    url.set_path(pool.connect_options().get_database().unwrap());
    url.to_string()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn write_schedule(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("p100-recon-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("schedule.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A daemon process; killed on drop.
pub struct Daemon {
    pub child: Child,
    pub port: u16,
}

impl Daemon {
    pub async fn start(
        db: &str,
        p100: &RunningSandbox,
        schedule: &PathBuf,
        extra: &[&str],
    ) -> Daemon {
        Daemon::start_with(db, p100, schedule, extra, &[], None).await
    }

    /// [`Daemon::start`] with more environment, and its log (stderr) written to `log`.
    pub async fn start_with(
        db: &str,
        p100: &RunningSandbox,
        schedule: &PathBuf,
        extra: &[&str],
        env: &[(&str, &str)],
        log: Option<&std::path::Path>,
    ) -> Daemon {
        let port = free_port();
        let stderr = match log {
            Some(path) => Stdio::from(std::fs::File::create(path).unwrap()),
            // Daemon logs only with TEST_LOG=1, like the tests' own.
            None if std::env::var_os("TEST_LOG").is_some() => Stdio::inherit(),
            None => Stdio::null(),
        };
        let child = Command::new(BIN)
            .arg("daemon")
            .arg("--schedule")
            .arg(schedule)
            .args(extra)
            .env("DATABASE_URL", db)
            .env("P100_BASE_URL", p100.base_url())
            .env("P100_API_KEY", p100_sandbox::DEFAULT_API_KEY)
            .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let daemon = Daemon { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "the daemon did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        daemon
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit; its exit code.
    pub async fn wait(mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not exit within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary with `args` against `db`; it must succeed. Its stdout.
pub fn cli(db: &str, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .env("DATABASE_URL", db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
pub mod console;
