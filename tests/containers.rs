//! The container image and the compose stack, built and run for real (docs/containers.md).
//!
//! No image registry is reachable on CI and no Docker daemon runs, so this uses what Debian packages
//! give (../shared/notes/containers.md): podman and buildah as root with runc, a base image made locally
//! with mmdebstrap, podman-compose. It
//! 1. builds the image from docker/Dockerfile as users build it without the Rust image: the binary cargo
//!    built for this test given as the `build` context (the from-source stage is skipped), on a base made
//!    with mmdebstrap from the host's own Debian release (the binary links the host's glibc);
//! 2. runs it (host network, free loopback ports, a named journal volume, docker/demo-access.toml): its
//!    /readyz from the host, its HEALTHCHECK inside (`podman healthcheck run`, `callgate health`), a Basic
//!    login, a live WebSocket notification fed by `callgate sim` inside the container, a graceful stop
//!    (exit 0 on SIGTERM), a journal in the volume;
//! 3. runs docker/compose.yaml unchanged with podman-compose, the nats and postgres services on local
//!    stand-ins (tests/containers/standins.Containerfile: the same base with the host's own nats-server
//!    and PostgreSQL): /readyz, a login and a live notification through the published port, a CDR row
//!    written by the sink into PostgreSQL (sim -> gateway -> JetStream CG_CDR -> sink -> PostgreSQL), and
//!    exit 0 of the sink and the gateway on SIGTERM.
//!
//! Everything it starts is removed at the end, on failure too (drop guards). A missing tool is a failure,
//! never a skip (scripts/test-all.sh installs them). The closing line (`containers: ...: PASS` or
//! `...: FAIL`) is printed by this test's own `main` (`harness = false` in Cargo.toml), so it shows in
//! CI's output whether the test passes or not.
//!
//! Measured on the shared 2-core machine (load 4-5 from other builds), test binary built: warm (base
//! image and stand-ins cached in podman's storage) 31-45 s in all, of which image build 2-10 s (the
//! 270 MB debug binary copied), container ready 1-2 s, compose stack ready 7-8 s, first CDR row 9-11 s
//! after `up`; cold (no image at all) 114 s, the base's mmdebstrap ~70 s and the stand-ins ~10 s of it.

mod support;

use anyhow::{Context, Result, anyhow, bail, ensure};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The runtime base, kept in podman's storage across runs (a tag that exists is not made again).
const RUNTIME_BASE: &str = "localhost/callgate-test/runtime-base";
/// The stand-ins' names, completed by a digest of what they are made of.
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
                 first CDR row in {:.1} s, {:.1} s in all (base image {}): PASS",
                times.image.as_secs_f64(),
                times.container.as_secs_f64(),
                times.stack.as_secs_f64(),
                times.cdr.as_secs_f64(),
                times.total.as_secs_f64(),
                times.base,
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
    base: &'static str,
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

    // The base, once per machine: a lock keeps two test runs from making it at once.
    let _lock = FileLock::take(&std::env::temp_dir().join("callgate-containers.lock"))?;
    let suite = host_suite()?;
    let runtime_base = format!("{RUNTIME_BASE}:{suite}");
    // bookworm-slim leaves out documentation, manuals and translations; so does this base.
    let slim = [
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        "--dpkgopt=path-exclude=/usr/share/info/*",
    ];
    let base = if podman.ensure_base(&runtime_base, &suite, &slim)? {
        "made"
    } else {
        "cached"
    };
    // The stand-ins: the same base plus this machine's own nats-server and PostgreSQL (which the other
    // tests use too), copied with the libraries they load. A second mmdebstrap with those packages took
    // ~100 s more on a cold machine; this takes a few seconds, and the tag (named for the inputs) is
    // reused while they are unchanged.
    let standins = work.join("standins");
    stage_standins(&root, &standins)?;
    let key = standins_key(&standins, &runtime_base)?;
    let nats_image = format!("{NATS_STANDIN}-{key}");
    let postgres_image = format!("{POSTGRES_STANDIN}-{key}");
    for (target, tag) in [("nats", &nats_image), ("postgres", &postgres_image)] {
        if podman
            .output(podman.command().args(["image", "exists", tag]))?
            .status
            .success()
        {
            continue;
        }
        podman.ok(podman.command().args([
            "build",
            "--quiet",
            "--format",
            "docker",
            "--target",
            target,
            "--build-arg",
            &format!("RUNTIME_BASE={runtime_base}"),
            "--file",
            &root
                .join("tests/containers/standins.Containerfile")
                .display()
                .to_string(),
            "--tag",
            tag,
            &standins.display().to_string(),
        ]))?;
    }
    // Stand-ins of earlier inputs (a package update, an edited Containerfile) are not needed again.
    let images = podman.ok(podman.command().args([
        "images",
        "--format",
        "{{.Repository}}:{{.Tag}}",
        "--filter",
        "reference=localhost/callgate-test/*",
    ]))?;
    for stale in images
        .lines()
        .filter(|image| image.contains(":standin-") && !image.ends_with(&key))
    {
        let _ = podman.output(podman.command().args(["rmi", stale]));
    }
    drop(_lock);
    progress(started, "base image and stand-ins");

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
    let (stack_time, cdr_time) = compose_stack(&podman, &root, &tag, &nats_image, &postgres_image)?;
    progress(started, "compose stack checked and removed");

    Ok(Times {
        base,
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
fn compose_stack(
    podman: &Podman,
    root: &Path,
    tag: &str,
    nats_image: &str,
    postgres_image: &str,
) -> Result<(Duration, Duration)> {
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
            .env("CALLGATE_NATS_IMAGE", nats_image)
            .env("CALLGATE_POSTGRES_IMAGE", postgres_image)
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

/// The build context of tests/containers/standins.Containerfile in `dir`: `nats/` and `postgres/`, each
/// a tree to copy over the base: this machine's nats-server, its newest PostgreSQL's programs, modules
/// and data, the shared libraries they need beyond glibc (found with ldd), and the postgres entrypoint.
fn stage_standins(root: &Path, dir: &Path) -> Result<()> {
    let nats = Path::new("/usr/sbin/nats-server");
    ensure!(
        nats.is_file(),
        "nats-server is not installed: apt-get install nats-server (scripts/test-all.sh does)"
    );
    stage(&dir.join("nats"), &[nats.to_path_buf()])?;
    let version = std::fs::read_dir("/usr/lib/postgresql")
        .context(
            "PostgreSQL is not installed: apt-get install postgresql (scripts/test-all.sh does)",
        )?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|version| {
            Path::new(&format!("/usr/lib/postgresql/{version}/bin/postgres")).is_file()
        })
        .max()
        .context("no PostgreSQL server under /usr/lib/postgresql")?;
    let postgres = dir.join("postgres");
    stage(
        &postgres,
        &[
            PathBuf::from(format!("/usr/lib/postgresql/{version}")),
            PathBuf::from(format!("/usr/share/postgresql/{version}")),
        ],
    )?;
    let entrypoint = postgres.join("usr/local/bin/docker-entrypoint.sh");
    std::fs::create_dir_all(entrypoint.parent().context("a folder")?)?;
    std::fs::copy(
        root.join("tests/containers/postgres-entrypoint.sh"),
        &entrypoint,
    )
    .context("copying the postgres entrypoint")?;
    Ok(())
}

/// Copies `paths` (files or folders; symbolic links inside folders kept as links) into `dir` at the same
/// paths, with the shared libraries their ELF files load, except glibc's own (the base has the same
/// release's, and its loader must match its libc).
fn stage(dir: &Path, paths: &[PathBuf]) -> Result<()> {
    fn copy(from: &Path, dir: &Path, elves: &mut Vec<PathBuf>) -> Result<()> {
        let to = dir.join(from.strip_prefix("/").context("an absolute path")?);
        // PostgreSQL's JIT provider and its bitcode: 10 MB that load libLLVM (~100 MB); without them the
        // server simply does not JIT.
        let name = from
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or("");
        if name.starts_with("llvmjit") || name == "bitcode" {
            return Ok(());
        }
        let meta =
            std::fs::symlink_metadata(from).with_context(|| format!("{}", from.display()))?;
        if meta.file_type().is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(from)?, &to)
                .with_context(|| format!("linking {}", to.display()))?;
        } else if meta.is_dir() {
            std::fs::create_dir_all(&to).with_context(|| format!("{}", to.display()))?;
            for entry in std::fs::read_dir(from)? {
                copy(&entry?.path(), dir, elves)?;
            }
        } else {
            std::fs::create_dir_all(to.parent().context("a folder")?)?;
            std::fs::copy(from, &to).with_context(|| format!("copying {}", from.display()))?;
            let mut magic = [0u8; 4];
            use std::io::Read;
            if std::fs::File::open(from)?.read_exact(&mut magic).is_ok() && magic == *b"\x7fELF" {
                elves.push(from.to_path_buf());
            }
        }
        Ok(())
    }
    let mut elves = Vec::new();
    for path in paths {
        copy(path, dir, &mut elves)?;
    }
    let listed = Command::new("ldd")
        .args(&elves)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .context("running ldd")?;
    let glibc = [
        "libc.so",
        "libm.so",
        "libpthread.so",
        "libdl.so",
        "librt.so",
        "libresolv.so",
        "ld-linux",
    ];
    let mut libraries: Vec<PathBuf> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter_map(|line| line.split_once("=> ")?.1.split_whitespace().next())
        .filter(|path| path.starts_with('/'))
        .map(PathBuf::from)
        .filter(|path| {
            let name = path
                .file_name()
                .and_then(|name| name.to_str())
                .unwrap_or("");
            !glibc.iter().any(|libc| name.starts_with(libc))
        })
        .collect();
    libraries.sort();
    libraries.dedup();
    ensure!(!elves.is_empty(), "no programs among {paths:?}");
    for library in libraries {
        // At its real folder (/lib is a link to /usr/lib on merged-/usr systems, and a folder copied
        // over the base's link would hide the rest of /usr/lib), under the name the loader looks for.
        let folder = std::fs::canonicalize(library.parent().context("a folder")?)?;
        let name = library.file_name().context("a file name")?;
        let to = dir.join(folder.strip_prefix("/")?).join(name);
        std::fs::create_dir_all(to.parent().context("a folder")?)?;
        if !to.exists() {
            std::fs::copy(&library, &to)
                .with_context(|| format!("copying {}", library.display()))?;
        }
    }
    Ok(())
}

/// A short digest of the stand-ins' inputs: the staged trees (paths and sizes, which change with any
/// package update), the Containerfile and the base's tag.
fn standins_key(dir: &Path, base: &str) -> Result<String> {
    use sha2::Digest;
    fn walk(top: &Path, path: &Path, hasher: &mut sha2::Sha256) -> Result<()> {
        let meta = std::fs::symlink_metadata(path)?;
        hasher.update(path.strip_prefix(top)?.as_os_str().as_encoded_bytes());
        hasher.update(meta.len().to_le_bytes());
        if meta.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?
                .map(|entry| entry.map(|entry| entry.path()))
                .collect::<std::io::Result<_>>()?;
            entries.sort();
            for entry in entries {
                walk(top, &entry, hasher)?;
            }
        } else if meta.is_file() && path.extension().is_some_and(|ext| ext == "sh") {
            hasher.update(std::fs::read(path)?);
        }
        Ok(())
    }
    let mut hasher = sha2::Sha256::new();
    hasher.update(base.as_bytes());
    hasher.update(std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/containers/standins.Containerfile"),
    )?);
    walk(dir, dir, &mut hasher)?;
    let digest = hasher.finalize();
    Ok(digest[..6]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect())
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
