//! The container image and the compose stack, built and run for real (docs/containers.md).
//!
//! No image registry is reachable on CI and no Docker daemon runs, so this uses what Debian packages
//! give (../shared/notes/containers.md): podman and buildah as root with runc, base images made locally
//! with mmdebstrap, podman-compose. It
//! 1. builds the image from docker/Dockerfile as users build it without the Rust image: the binary cargo
//!    built for this test given as the `build` context (the from-source stage is skipped), on a base made
//!    with mmdebstrap from the host's own Debian release (the binary links the host's glibc);
//! 2. runs it (host network, free loopback ports, a named journal volume, docker/demo-access.toml): its
//!    /readyz from the host, its HEALTHCHECK command inside, a Basic login, a live WebSocket notification
//!    fed by `callgate sim` inside the container, a graceful stop (exit 0 on SIGTERM);
//! 3. runs docker/compose.yaml unchanged with podman-compose (the nats and postgres services on local
//!    stand-ins, tests/containers/standins.Containerfile): /readyz, a login and a live notification
//!    through the published port, and a CDR row written by the sink into PostgreSQL.
//!
//! Everything it starts is removed at the end, on failure too (drop guards). A missing tool is a failure,
//! never a skip (scripts/test-all.sh installs them). The closing line (`containers: ...: PASS` or
//! `...: FAIL`) is printed by this test's own `main` (`harness = false` in Cargo.toml), so it shows in
//! CI's output whether the test passes or not.
//!
//! Measured on the 2-core CI machine (shared): warm (base images cached in podman's storage) about 25 s
//! in all; cold, the two mmdebstrap bases add ~45 s and ~2 min (PostgreSQL and nats-server included).

mod support;

use anyhow::{Context, Result, anyhow, bail, ensure};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Base images kept in podman's storage across runs (a tag that exists is not made again).
const RUNTIME_BASE: &str = "localhost/callgate-test/runtime-base";
const SERVICES_BASE: &str = "localhost/callgate-test/services-base";
const NATS_STANDIN: &str = "localhost/callgate-test/nats:standin";
const POSTGRES_STANDIN: &str = "localhost/callgate-test/postgres:standin";

/// The compose demo's users and the simulator's token (docker/demo-access.toml).
const ADMIN: (&str, &str) = ("admin", "demo");
const INGEST_TOKEN: &str = "demo-ingest-token";

fn main() -> std::process::ExitCode {
    // libtest's arguments: `--list` lists the one test; a name filter that does not match skips it.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|arg| arg == "--list") {
        println!("containers: test");
        return std::process::ExitCode::SUCCESS;
    }
    let exact = args.iter().any(|arg| arg == "--exact");
    let selected = args
        .iter()
        .filter(|arg| !arg.starts_with('-'))
        .all(|filter| {
            if exact {
                filter == "containers"
            } else {
                "containers".contains(filter.as_str())
            }
        });
    if !selected {
        return std::process::ExitCode::SUCCESS;
    }
    let outcome = std::panic::catch_unwind(run);
    match outcome {
        Ok(Ok(times)) => {
            println!(
                "containers: image built in {:.1} s, container ready in {:.1} s, compose stack ready in {:.1} s, \
                 first CDR row in {:.1} s, {:.1} s in all (base images {}): PASS",
                times.image.as_secs_f64(),
                times.container.as_secs_f64(),
                times.stack.as_secs_f64(),
                times.cdr.as_secs_f64(),
                times.total.as_secs_f64(),
                times.bases,
            );
            std::process::ExitCode::SUCCESS
        }
        Ok(Err(err)) => {
            eprintln!("containers: {err:#}: FAIL");
            std::process::ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("containers: panicked (see above): FAIL");
            std::process::ExitCode::FAILURE
        }
    }
}

/// What the closing line reports.
struct Times {
    bases: &'static str,
    image: Duration,
    container: Duration,
    stack: Duration,
    cdr: Duration,
    total: Duration,
}

fn run() -> Result<Times> {
    let started = Instant::now();
    for (tool, package) in [
        ("podman", "podman"),
        ("runc", "runc"),
        ("mmdebstrap", "mmdebstrap"),
        ("podman-compose", "podman-compose"),
    ] {
        ensure!(
            which(tool),
            "`{tool}` is missing: apt-get install {package} (scripts/test-all.sh does)"
        );
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let work = support::temp_dir("containers");
    let podman = Podman::new(&work)?;
    let _work = RemoveDir(work.clone());

    // The bases, once per machine: a lock keeps two test runs from making the same one at once.
    let _lock = FileLock::take(&std::env::temp_dir().join("callgate-containers.lock"))?;
    let suite = host_suite()?;
    let runtime_base = format!("{RUNTIME_BASE}:{suite}");
    let services_base = format!("{SERVICES_BASE}:{suite}");
    let mut made = Vec::new();
    // bookworm-slim leaves out documentation, manuals and translations; so does this base.
    let slim = [
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        "--dpkgopt=path-exclude=/usr/share/info/*",
    ];
    if podman.ensure_base(&runtime_base, &suite, &slim)? {
        made.push("runtime");
    }
    let mut services = slim.to_vec();
    services.push("--include=nats-server,postgresql");
    if podman.ensure_base(&services_base, &suite, &services)? {
        made.push("services");
    }
    // The stand-ins: two small layers on the services base, cached by podman's build.
    for (target, tag) in [("nats", NATS_STANDIN), ("postgres", POSTGRES_STANDIN)] {
        podman.ok(podman.command().args([
            "build",
            "--quiet",
            "--format",
            "docker",
            "--target",
            target,
            "--build-arg",
            &format!("SERVICES_BASE={services_base}"),
            "--file",
            "tests/containers/standins.Containerfile",
            "--tag",
            tag,
            "tests/containers",
        ]))?;
    }
    drop(_lock);
    progress(started, "base images and stand-ins");
    let bases = if made.is_empty() {
        "cached"
    } else if made.len() == 2 {
        "both made"
    } else if made[0] == "runtime" {
        "runtime made"
    } else {
        "services made"
    };

    // 1. The image, from the project's Dockerfile with the host binary as the `build` context.
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_callgate"));
    let binary_dir = binary
        .parent()
        .context("the binary's folder")?
        .to_path_buf();
    ensure!(
        binary.file_name().and_then(|name| name.to_str()) == Some("callgate"),
        "the binary is not named callgate: {}",
        binary.display()
    );
    let tag = format!("localhost/callgate-test/callgate:{}", std::process::id());
    let _image = RemoveImage(podman.clone(), tag.clone());
    let building = Instant::now();
    podman.ok(podman.command().current_dir(&root).args([
        "build",
        "--quiet",
        "--format",
        "docker",
        "--build-context",
        &format!("build={}", binary_dir.display()),
        "--build-arg",
        &format!("RUNTIME_BASE={runtime_base}"),
        "--file",
        "docker/Dockerfile",
        "--tag",
        &tag,
        ".",
    ]))?;
    let image_time = building.elapsed();
    progress(started, "image built");
    let config = podman.ok(podman.command().args([
        "image",
        "inspect",
        "--format",
        "{{.User}}|{{json .Config.Healthcheck}}",
        &tag,
    ]));
    // `.Config.Healthcheck` is where podman shows a docker-format image's HEALTHCHECK.
    let config = match config {
        Ok(config) => config,
        Err(_) => podman.ok(podman.command().args([
            "image",
            "inspect",
            "--format",
            "{{.Config.User}}|{{json .Config.Healthcheck}}",
            &tag,
        ]))?,
    };
    ensure!(
        config.contains("callgate|") && config.contains("\"callgate\",\"health\""),
        "the image's user and HEALTHCHECK are not callgate's: {config}"
    );

    // 2. One container on the host network, on free loopback ports.
    let container_time = single_container(&podman, &root, &tag)?;
    progress(started, "single container checked and removed");

    // 3. The compose stack.
    let (stack_time, cdr_time) = compose_stack(&podman, &root, &tag)?;
    progress(started, "compose stack checked and removed");

    Ok(Times {
        bases,
        image: image_time,
        container: container_time,
        stack: stack_time,
        cdr: cdr_time,
        total: started.elapsed(),
    })
}

/// Runs the image alone; returns the time from `podman run` to a 200 from /readyz.
fn single_container(podman: &Podman, root: &Path, tag: &str) -> Result<Duration> {
    let name = format!("callgate-test-{}", std::process::id());
    let volume = format!("{name}-journal");
    let _container = RemoveContainers(podman.clone(), vec![name.clone()]);
    let _volume = RemoveVolume(podman.clone(), volume.clone());
    let http = format!("127.0.0.1:{}", free_port()?);
    let ingest = format!("127.0.0.1:{}", free_port()?);
    let access = root.join("docker/demo-access.toml");
    let starting = Instant::now();
    podman.ok(podman.command().args([
        "run",
        "--detach",
        "--name",
        &name,
        "--network",
        "host",
        "--env",
        &format!("CALLGATE_LISTEN={http}"),
        "--env",
        &format!("CALLGATE_INGEST={ingest}"),
        "--env",
        "CALLGATE_ACCESS=/etc/callgate/access.toml",
        "--volume",
        &format!("{}:/etc/callgate/access.toml:ro", access.display()),
        "--volume",
        &format!("{volume}:/var/lib/callgate"),
        tag,
    ]))?;
    wait_ready(&http, Duration::from_secs(30))
        .with_context(|| format!("the container: {}", podman.logs(&name)))?;
    let ready = starting.elapsed();

    // The HEALTHCHECK as the runtime runs it (`podman healthcheck run` needs no systemd; only its
    // periodic schedule does), and the command itself.
    podman
        .ok(podman.command().args(["healthcheck", "run", &name]))
        .context("podman healthcheck run")?;
    podman
        .ok(podman.command().args(["exec", &name, "callgate", "health"]))
        .context("callgate health in the container")?;
    // Not root inside, and the journal in the volume is the gateway's.
    let user = podman.ok(podman.command().args(["exec", &name, "id", "-u"]))?;
    ensure!(user.trim() == "10001", "the container runs as uid {user}");

    login(&http)?;
    let runtime = tokio::runtime::Runtime::new().context("a tokio runtime")?;
    runtime.block_on(live_notification(&http, || {
        // Fed from inside the container, by the image's own binary.
        podman.ok(podman.command().args([
            "exec",
            &name,
            "callgate",
            "sim",
            "--connect",
            &ingest,
            "--token",
            INGEST_TOKEN,
            "--calls",
            "5",
            "--speed",
            "0",
        ]))
    }))?;

    podman.ok(podman.command().args(["stop", "--time", "20", &name]))?;
    let code =
        podman.ok(podman
            .command()
            .args(["inspect", "--format", "{{.State.ExitCode}}", &name]))?;
    ensure!(
        code.trim() == "0",
        "the gateway exited {code} on SIGTERM: {}",
        podman.logs(&name)
    );
    let journal = podman.ok(podman.command().args([
        "run",
        "--rm",
        "--volume",
        &format!("{volume}:/var/lib/callgate"),
        "--entrypoint",
        "ls",
        tag,
        "/var/lib/callgate/journal",
    ]))?;
    ensure!(!journal.trim().is_empty(), "nothing in the journal volume");
    Ok(ready)
}

/// Runs docker/compose.yaml; returns the time from `up` to a 200 from /readyz on the published port,
/// and from `up` to the first CDR row in PostgreSQL.
fn compose_stack(podman: &Podman, root: &Path, tag: &str) -> Result<(Duration, Duration)> {
    let project = format!("callgate-test-{}", std::process::id());
    let http = free_port()?;
    let ingest = free_port()?;
    let compose = |args: &[&str]| {
        let mut command = podman.compose();
        command
            .current_dir(root)
            .args(["--project-name", &project, "--file", "docker/compose.yaml"])
            .args(args)
            .env("CALLGATE_IMAGE", tag)
            .env("CALLGATE_NATS_IMAGE", NATS_STANDIN)
            .env("CALLGATE_POSTGRES_IMAGE", POSTGRES_STANDIN)
            .env("CALLGATE_HTTP_PORT", http.to_string())
            .env("CALLGATE_INGEST_PORT", ingest.to_string())
            // Twenty times real time, short calls: records within seconds rather than minutes.
            .env("CALLGATE_SIM_SPEED", "20")
            .env("CALLGATE_SIM_CALLS_PER_SECOND", "0.5")
            .env("CALLGATE_SIM_TALK_SECS", "20");
        command
    };
    let _stack = ComposeDown {
        podman: podman.clone(),
        project: project.clone(),
        down: compose(&["down", "--volumes"]),
    };
    let starting = Instant::now();
    podman.ok(&mut compose(&["up", "--detach"]))?;
    let address = format!("127.0.0.1:{http}");
    wait_ready(&address, Duration::from_secs(60))
        .with_context(|| format!("the stack: {}", podman.project_logs(&project)))?;
    let ready = starting.elapsed();
    login(&address)?;
    let runtime = tokio::runtime::Runtime::new().context("a tokio runtime")?;
    // The stack's simulator is feeding: nothing to send.
    runtime
        .block_on(live_notification(&address, || Ok(String::new())))
        .with_context(|| podman.project_logs(&project))?;

    let postgres = podman.service_container(&project, "postgres")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // The table is the sink's (created at its first connection): absent until then.
        let count = podman.output(podman.command().args([
            "exec",
            &postgres,
            "psql",
            "--username",
            "callgate",
            "--dbname",
            "callgate",
            "--tuples-only",
            "--no-align",
            "--command",
            "select count(*) from call_cdr",
        ]))?;
        let rows: u64 = String::from_utf8_lossy(&count.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        if rows > 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "no CDR row in PostgreSQL within 60 s: {}",
                podman.project_logs(&project)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let cdr = starting.elapsed();

    // A graceful stop with JetStream in use: the feeders first, as `compose down` orders it, then the
    // gateway, which must exit 0 well within the stop timeout.
    // The sink finishes its batch and exits 0, even while records keep coming.
    for service in ["cdr-sink", "sim"] {
        let name = podman.service_container(&project, service)?;
        podman.ok(podman.command().args(["stop", "--time", "10", &name]))?;
        if service == "cdr-sink" {
            let code = podman.ok(podman.command().args([
                "inspect",
                "--format",
                "{{.State.ExitCode}}",
                &name,
            ]))?;
            ensure!(
                code.trim() == "0",
                "the sink exited {} on SIGTERM: {}",
                code.trim(),
                podman.logs(&name)
            );
        }
    }
    let gateway = podman.service_container(&project, "gateway")?;
    let stopping = Instant::now();
    podman.ok(podman.command().args(["stop", "--time", "20", &gateway]))?;
    let code = podman.ok(podman.command().args([
        "inspect",
        "--format",
        "{{.State.ExitCode}}",
        &gateway,
    ]))?;
    ensure!(
        code.trim() == "0" && stopping.elapsed() < Duration::from_secs(15),
        "the stack's gateway exited {} after {:?} on SIGTERM: {}",
        code.trim(),
        stopping.elapsed(),
        podman.logs(&gateway)
    );
    Ok((ready, cdr))
}

/// A progress line on standard error (shown: this test has no harness capturing it).
fn progress(started: Instant, what: &str) {
    eprintln!(
        "containers: {:6.1} s {what}",
        started.elapsed().as_secs_f64()
    );
}

/// Polls `GET /readyz` at `address` until 200.
fn wait_ready(address: &str, wait: Duration) -> Result<()> {
    let url = format!("http://{address}/readyz");
    let deadline = Instant::now() + wait;
    loop {
        match callgate::cli::health::check(&url, Duration::from_secs(2)) {
            Ok(()) => return Ok(()),
            Err(err) if Instant::now() > deadline => {
                bail!("{url} not ready within {wait:?}: {err}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// A Basic login with the demo's admin answers 200 from /api/v2/me; a wrong password 401.
fn login(address: &str) -> Result<()> {
    let (status, _, body) = support::http_request(
        address,
        "GET",
        "/api/v2/me",
        &[("Authorization", &basic(ADMIN.0, ADMIN.1))],
    );
    ensure!(status == 200, "login: {status} {body}");
    ensure!(body.contains("admin"), "/api/v2/me: {body}");
    let (status, _, _) = support::http_request(
        address,
        "GET",
        "/api/v2/me",
        &[("Authorization", &basic(ADMIN.0, "wrong"))],
    );
    ensure!(status == 401, "a wrong password got {status}");
    Ok(())
}

/// Subscribes to calls over WebSocket (Basic credentials on the handshake), runs `feed`, and waits for
/// a call notification.
async fn live_notification(address: &str, feed: impl FnOnce() -> Result<String>) -> Result<()> {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{address}/api/v2/ws")
        .into_client_request()
        .context("a WebSocket request")?;
    request.headers_mut().insert(
        "Authorization",
        basic(ADMIN.0, ADMIN.1)
            .parse()
            .context("an Authorization header")?,
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .context("the WebSocket handshake")?;
    ws.send(Message::text(
        r#"{"type":"subscribe","sub":"s1","topics":["calls"]}"#,
    ))
    .await
    .context("subscribe")?;
    let reply = support::next_json(&mut ws, Duration::from_secs(10))
        .await
        .context("no answer to subscribe")?;
    ensure!(reply["type"] == "subscribed", "subscribe: {reply}");
    tokio::task::block_in_place(feed).context("feeding events")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = support::next_json(&mut ws, left)
            .await
            .context("no call notification within 30 s")?;
        if frame["type"] == "notification" && frame["data"]["call"]["id"].is_string() {
            return Ok(());
        }
    }
}

/// podman with this test's settings file: runc (crun fails on this kind of machine: "cgroups in hybrid
/// mode not supported") and ulimits the sandbox allows (the default ones cannot be raised here).
#[derive(Clone)]
struct Podman {
    conf: PathBuf,
}

impl Podman {
    fn new(work: &Path) -> Result<Podman> {
        let conf = work.join("containers.conf");
        std::fs::write(
            &conf,
            "[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n\
             [engine]\nruntime = \"runc\"\n",
        )
        .context("writing containers.conf")?;
        Ok(Podman { conf })
    }

    fn command(&self) -> Command {
        let mut command = Command::new("podman");
        command.env("CONTAINERS_CONF", &self.conf);
        command
    }

    fn compose(&self) -> Command {
        let mut command = Command::new("podman-compose");
        command.env("CONTAINERS_CONF", &self.conf);
        command
    }

    fn output(&self, command: &mut Command) -> Result<Output> {
        command
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {command:?}"))
    }

    /// Standard output of `command`, which must succeed.
    fn ok(&self, command: &mut Command) -> Result<String> {
        let output = self.output(command)?;
        if !output.status.success() {
            bail!(
                "{command:?} failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn logs(&self, container: &str) -> String {
        self.output(self.command().args(["logs", "--tail", "30", container]))
            .map(|output| {
                format!(
                    "logs of {container}:\n{}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                )
            })
            .unwrap_or_default()
    }

    fn project_containers(&self, project: &str) -> Vec<String> {
        self.ok(self.command().args([
            "ps",
            "--all",
            "--format",
            "{{.Names}}",
            "--filter",
            &format!("label=io.podman.compose.project={project}"),
        ]))
        .map(|names| names.lines().map(str::to_owned).collect())
        .unwrap_or_default()
    }

    fn project_logs(&self, project: &str) -> String {
        self.project_containers(project)
            .iter()
            .map(|name| self.logs(name))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The container of compose service `service` in `project`.
    fn service_container(&self, project: &str, service: &str) -> Result<String> {
        let names = self.ok(self.command().args([
            "ps",
            "--format",
            "{{.Names}}",
            "--filter",
            &format!("label=io.podman.compose.project={project}"),
            "--filter",
            &format!("label=com.docker.compose.service={service}"),
        ]))?;
        names
            .lines()
            .next()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("no running {service} container in {project}"))
    }

    /// Makes `tag` with mmdebstrap (a minbase of `suite` with `options`) unless it exists; true if made.
    fn ensure_base(&self, tag: &str, suite: &str, options: &[&str]) -> Result<bool> {
        if self
            .output(self.command().args(["image", "exists", tag]))?
            .status
            .success()
        {
            return Ok(false);
        }
        let mut debootstrap = Command::new("mmdebstrap")
            .args(["--variant=minbase", "--quiet"])
            .args(options)
            .args([suite, "-"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .context("running mmdebstrap")?;
        let tarball = debootstrap.stdout.take().context("mmdebstrap's output")?;
        let imported = self
            .command()
            .args(["import", "--quiet", "-", tag])
            .stdin(tarball)
            .output()
            .context("running podman import")?;
        let status = debootstrap.wait().context("waiting for mmdebstrap")?;
        ensure!(status.success(), "mmdebstrap {suite} failed: {status}");
        ensure!(
            imported.status.success(),
            "podman import {tag}: {}",
            String::from_utf8_lossy(&imported.stderr)
        );
        Ok(true)
    }
}

/// The host's Debian release (`VERSION_CODENAME`): the runtime base is made from it, so that the
/// binary built here finds the glibc it was linked against.
fn host_suite() -> Result<String> {
    let release = std::fs::read_to_string("/etc/os-release").context("reading /etc/os-release")?;
    let field = |name: &str| {
        release
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map(|value| value.trim_matches('"').to_owned())
    };
    ensure!(
        field("ID=").as_deref() == Some("debian"),
        "the host is not Debian: mmdebstrap makes the base from the host's Debian release"
    );
    field("VERSION_CODENAME=").context("no VERSION_CODENAME in /etc/os-release")
}

fn which(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// An exclusive `flock` on a file, released when dropped.
struct FileLock {
    _file: std::fs::File,
}

impl FileLock {
    fn take(path: &Path) -> Result<FileLock> {
        use std::os::fd::AsRawFd;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: flock on a descriptor this function owns.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        ensure!(
            locked == 0,
            "flock {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
        Ok(FileLock { _file: file })
    }
}

struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct RemoveImage(Podman, String);

impl Drop for RemoveImage {
    fn drop(&mut self) {
        let _ = self
            .0
            .output(self.0.command().args(["rmi", "--force", &self.1]));
    }
}

struct RemoveContainers(Podman, Vec<String>);

impl Drop for RemoveContainers {
    fn drop(&mut self) {
        for name in &self.1 {
            let _ = self.0.output(self.0.command().args([
                "rm",
                "--force",
                "--volumes",
                "--time",
                "5",
                name,
            ]));
        }
    }
}

struct RemoveVolume(Podman, String);

impl Drop for RemoveVolume {
    fn drop(&mut self) {
        let _ = self
            .0
            .output(self.0.command().args(["volume", "rm", "--force", &self.1]));
    }
}

/// The stack's containers stopped and removed with their anonymous volumes (the image's VOLUME gives
/// `sim` and `cdr-sink` one each, which `compose down --volumes` leaves behind), then `compose down
/// --volumes`, then whatever of the project is left (named volumes, network).
struct ComposeDown {
    podman: Podman,
    project: String,
    down: Command,
}

impl Drop for ComposeDown {
    fn drop(&mut self) {
        let label = format!("label=io.podman.compose.project={}", self.project);
        // Dependents first, as `compose down` does: a gateway stopped after NATS waits for it in vain.
        for service in ["cdr-sink", "sim", "gateway", "postgres"] {
            if let Ok(name) = self.podman.service_container(&self.project, service) {
                let _ = self
                    .podman
                    .output(self.podman.command().args(["stop", "--time", "10", &name]));
            }
        }
        for name in self.podman.project_containers(&self.project) {
            let _ = self.podman.output(self.podman.command().args([
                "rm",
                "--force",
                "--volumes",
                "--time",
                "10",
                &name,
            ]));
        }
        let _ = self.podman.output(&mut self.down);
        if let Ok(volumes) = self.podman.ok(self
            .podman
            .command()
            .args(["volume", "ls", "--quiet", "--filter", &label]))
        {
            for volume in volumes.lines() {
                let _ = self.podman.output(
                    self.podman
                        .command()
                        .args(["volume", "rm", "--force", volume]),
                );
            }
        }
        let _ = self.podman.output(self.podman.command().args([
            "network",
            "rm",
            "--force",
            &format!("{}_default", self.project),
        ]));
    }
}
