//! A real PostgreSQL server for a test: Debian's `postgresql` binaries, a fresh cluster in a temporary
//! folder, run as an unprivileged user (`postgres` when the tests run as root, which PostgreSQL
//! refuses), on a free loopback port. Stopped and removed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running PostgreSQL server.
pub struct PgServer {
    child: Child,
    dir: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

/// The folder of the newest installed PostgreSQL's programs; the test fails (never skips) without one.
fn bin_dir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect(
            "PostgreSQL is not installed: apt-get install postgresql (scripts/test-all.sh does)",
        )
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .expect("no PostgreSQL server under /usr/lib/postgresql: apt-get install postgresql")
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `program` run as the unprivileged user when the tests run as root.
fn as_server_user(program: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

impl PgServer {
    /// Creates a cluster in `dir/pg` (user `callgate`, trust authentication on loopback) and starts
    /// it without fsync (tests); waits until it takes connections.
    pub fn start(dir: &Path) -> PgServer {
        Self::start_with(dir, &["-c", "fsync=off"])
    }

    /// Like [`PgServer::start`], with PostgreSQL's durable defaults (benchmarks).
    pub fn start_durable(dir: &Path) -> PgServer {
        Self::start_with(dir, &[])
    }

    fn start_with(dir: &Path, settings: &[&str]) -> PgServer {
        let bin = bin_dir();
        let root = dir.join("pg");
        let data = root.join("data");
        std::fs::create_dir_all(&root).expect("pg folder");
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&root)
                .status()
                .expect("chown");
            assert!(status.success());
            // The server user must reach the folder through its parents.
            let status = Command::new("chmod")
                .args(["a+rx"])
                .arg(dir)
                .status()
                .expect("chmod");
            assert!(status.success());
        }
        let output = as_server_user(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "callgate", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .output()
            .expect("initdb runs");
        assert!(
            output.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let port = free_port();
        let child = as_server_user(&bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-k"])
            .arg(&root)
            .args(["-c", "logging_collector=off"])
            .args(settings)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("postgres starts");
        let server = PgServer {
            child,
            dir: root,
            port,
        };
        server.wait_ready(&bin);
        server
    }

    fn wait_ready(&self, bin: &Path) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|status| status.success());
            if ready {
                return;
            }
            assert!(Instant::now() < deadline, "PostgreSQL did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The connection string of its `postgres` database.
    pub fn dsn(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=callgate dbname=postgres",
            self.port
        )
    }

    /// A client of its `postgres` database (its connection task on the current runtime).
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.dsn(), tokio_postgres::NoTls)
            .await
            .expect("connects");
        tokio::spawn(connection);
        client
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // SIGINT: PostgreSQL's fast shutdown.
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
