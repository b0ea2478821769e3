//! A real `vigil serve` on a random loopback port with a fresh data directory, stopped on drop.
//!
//! The server is reached as `http://localhost:PORT` (never `127.0.0.1`): access tokens are
//! bound to the FHIR base URL `VIGIL_PUBLIC_URL`, and `__Host-` cookies and WebAuthn need the
//! browser's origin to match it.
//! Once it answers, an administrator `ext-admin` is created with the CLI and an operator token
//! issued for it: the scripts get that token as `VIGIL_TOKEN`.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

/// How long a fresh server may take to answer `GET /health` with 200.
const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// The administrator every server gets, whose token the scripts use.
pub const ADMIN_USER: &str = "ext-admin";

pub struct Options {
    pub referential_integrity: bool,
    /// Seeds the demo clinic (`vigil serve --demo`) for tests that browse it.
    pub demo: bool,
    /// A TOML configuration file's text (`VIGIL_CONFIG`), for the server and its CLI.
    pub config: Option<String>,
}

pub struct Server {
    child: Option<Child>,
    bin: PathBuf,
    /// `http://localhost:PORT`, the origin every client uses.
    pub url: String,
    addr: SocketAddr,
    /// An access token of `ext-admin` with `user/*.cruds` (empty until [`Server::provision`]).
    pub token: String,
    /// The password of `ext-admin`.
    pub admin_password: String,
    /// The `VIGIL_*` settings the server runs with: the CLI and the scripts get the same.
    pub env: Vec<(String, OsString)>,
    pub dir: PathBuf,
    pub log: PathBuf,
}

impl Server {
    pub fn start(bin: &Path, name: &str, opts: &Options) -> Result<Server> {
        let dir = fresh_dir(name)?;
        let data = dir.join("data");
        fs::create_dir_all(&data)?;
        let log = dir.join("server.log");
        let port = free_port()?;
        let listen = format!("127.0.0.1:{port}");
        let url = format!("http://localhost:{port}");
        let mut env: Vec<(String, OsString)> = vec![
            ("VIGIL_DATA_DIR".into(), data.clone().into_os_string()),
            ("VIGIL_PUBLIC_URL".into(), format!("{url}/fhir").into()),
            // The bootstrap token only sets up a first administrator through the web; the
            // CLI does that here, so this one is random and never used.
            ("VIGIL_BOOTSTRAP_TOKEN".into(), random_hex(24)?.into()),
        ];
        if !opts.referential_integrity {
            env.push(("VIGIL_REFERENTIAL_INTEGRITY".into(), "false".into()));
        }
        if let Some(text) = &opts.config {
            let path = dir.join("vigil.toml");
            fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            env.push(("VIGIL_CONFIG".into(), path.into_os_string()));
        }
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .arg("--listen")
            .arg(&listen)
            .stdin(Stdio::null())
            .stdout(File::create(&log)?)
            .stderr(File::create(dir.join("server.stderr.log"))?);
        isolate(&mut cmd, &env);
        if opts.demo {
            cmd.arg("--demo");
        }
        println!(
            "starting {name}: {} with {} (referential integrity {})",
            crate::cmd::display(&cmd),
            show_env(&env),
            if opts.referential_integrity {
                "on"
            } else {
                "off"
            }
        );
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let mut server = Server {
            child: Some(child),
            bin: bin.to_path_buf(),
            url,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            token: String::new(),
            admin_password: String::new(),
            env,
            dir,
            log,
        };
        server.wait_ready()?;
        server.provision()?;
        Ok(server)
    }

    /// Creates the administrator `ext-admin` and issues its token (`self.token`).
    fn provision(&mut self) -> Result<()> {
        let start = Instant::now();
        let password = passphrase()?;
        self.cli(
            &[
                "user",
                "add",
                "--username",
                ADMIN_USER,
                "--role",
                "administrator",
                "--password-stdin",
            ],
            Some(&password),
        )?;
        self.admin_password = password;
        // The external suites load and read data across every patient: a
        // backend-service token (system scopes, no person) does that; people
        // get their own tokens and relationships where a round needs them.
        self.token = self.issue_service_token("system/*.cruds")?;
        println!(
            "{ADMIN_USER} created and its token issued in {}",
            crate::cmd::secs(start.elapsed())
        );
        Ok(())
    }

    /// `vigil token issue --service`: a backend-service access token.
    pub fn issue_service_token(&self, scope: &str) -> Result<String> {
        self.token_from(&["--service"], scope)
    }

    /// `vigil token issue` for `username`: the printed access token.
    pub fn issue_token(&self, username: &str, scope: &str) -> Result<String> {
        self.token_from(&["--username", username], scope)
    }

    fn token_from(&self, who: &[&str], scope: &str) -> Result<String> {
        let mut args = vec!["token", "issue"];
        args.extend_from_slice(who);
        args.extend_from_slice(&["--scope", scope, "--ttl", "60m"]);
        let out = self.cli(&args, None)?;
        // The token is the one word shaped like a JWT (three base64url parts).
        out.split_whitespace()
            .find(|w| {
                let parts: Vec<&str> = w.split('.').collect();
                parts.len() == 3
                    && parts.iter().all(|p| {
                        !p.is_empty()
                            && p.bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                    })
            })
            .map(str::to_owned)
            .with_context(|| format!("`vigil token issue` printed no token: {out:?}"))
    }

    /// Runs `vigil ARGS` with the server's settings (data directory, key file, public URL,
    /// configuration), writing `stdin` and a newline to its input; returns its stdout.
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        isolate(&mut cmd, &self.env);
        let shown = crate::cmd::display(&cmd);
        println!("$ {shown}");
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start `{shown}`"))?;
        if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
            writeln!(input, "{text}").with_context(|| format!("writing to `{shown}`"))?;
        }
        let out = wait_output(child, CLI_TIMEOUT).with_context(|| format!("running `{shown}`"))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() {
            bail!(
                "`{shown}` failed ({})\nstdout: {}\nstderr: {}",
                out.status,
                stdout.trim(),
                stderr.trim()
            );
        }
        Ok(stdout)
    }

    /// `PUT /fhir/{path}` of a JSON body with the administrator's token: the status code.
    pub fn put(&self, path: &str, body: &str) -> Result<u16> {
        let mut stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        stream.set_write_timeout(Some(Duration::from_secs(30)))?;
        let host = self.url.trim_start_matches("http://");
        write!(
            stream,
            "PUT /fhir/{path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\nContent-Type: application/fhir+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.token,
            body.len()
        )?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        let code = status_of(&answer)?;
        if !(200..300).contains(&code) {
            bail!("PUT /fhir/{path} answered {code}: {}", answer.trim());
        }
        Ok(code)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let start = Instant::now();
        let addr = self.addr;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                bail!(
                    "the server exited ({status}) before it was ready\n{}",
                    self.log_tail(40)
                );
            }
            match http_status(addr, "/health") {
                Ok(200) => {
                    println!(
                        "server ready at {} after {}",
                        self.url,
                        crate::cmd::secs(start.elapsed())
                    );
                    return Ok(());
                }
                Ok(_) | Err(_) if start.elapsed() < READY_TIMEOUT => {
                    thread::sleep(Duration::from_millis(250));
                }
                Ok(code) => bail!(
                    "GET /health still {code} after {}s\n{}",
                    READY_TIMEOUT.as_secs(),
                    self.log_tail(40)
                ),
                Err(e) => bail!(
                    "GET /health unanswered after {}s: {e}\n{}",
                    READY_TIMEOUT.as_secs(),
                    self.log_tail(40)
                ),
            }
        }
    }

    /// True while the server process is alive.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The last `n` lines of the server's stdout and stderr logs.
    pub fn log_tail(&self, n: usize) -> String {
        let mut out = String::new();
        for path in [self.log.clone(), self.dir.join("server.stderr.log")] {
            let text = fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(n);
            out.push_str(&format!("--- {} (last {n} lines)\n", path.display()));
            for line in lines.iter().skip(from) {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// Lines of the server logs that show a panic.
    pub fn panics(&self) -> Vec<String> {
        [self.log.clone(), self.dir.join("server.stderr.log")]
            .iter()
            .filter_map(|p| fs::read_to_string(p).ok())
            .flat_map(|t| {
                let lines: Vec<&str> = t.lines().collect();
                // The panic's location line, then its message on the next line.
                lines
                    .windows(2)
                    .filter_map(|w| match w {
                        [at, msg] if at.contains("panicked at") => Some(format!("{at} {msg}")),
                        _ => None,
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Stops the server: SIGTERM, then SIGKILL after 10 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
        println!("server {pid} ignored SIGTERM for 10s: killing it");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Stops the server and removes its directory.
    pub fn discard(mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How long one CLI command may run (Argon2 hashing included).
const CLI_TIMEOUT: Duration = Duration::from_secs(120);

/// Only the given `VIGIL_*` settings: nothing from the caller's environment.
fn isolate(cmd: &mut Command, env: &[(String, OsString)]) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("VIGIL_") {
            cmd.env_remove(&key);
        }
    }
    cmd.env_remove("RUST_BACKTRACE");
    for (key, value) in env {
        cmd.env(key, value);
    }
}

/// The settings for a log line, without the bootstrap token.
fn show_env(env: &[(String, OsString)]) -> String {
    env.iter()
        .filter(|(k, _)| k != "VIGIL_BOOTSTRAP_TOKEN")
        .map(|(k, v)| format!("{k}={}", v.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Waits for `child` to exit within `limit`, collecting its output.
fn wait_output(mut child: Child, limit: Duration) -> Result<std::process::Output> {
    // Read the pipes on threads so a chatty child never blocks on a full pipe.
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let read = |pipe: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = read(stdout.map(|p| Box::new(p) as Box<dyn Read + Send>));
    let err = read(stderr.map(|p| Box::new(p) as Box<dyn Read + Send>));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            bail!("killed after {}s", limit.as_secs());
        }
        thread::sleep(Duration::from_millis(50));
    };
    Ok(std::process::Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// Words for passphrases: common, short, and none of them the organisation's name.
const WORDS: [&str; 64] = [
    "amber", "anchor", "apple", "arrow", "badge", "basket", "beacon", "birch", "blossom",
    "bramble", "breeze", "bucket", "cactus", "candle", "canyon", "carpet", "cedar", "cobalt",
    "comet", "copper", "coral", "cotton", "crater", "dahlia", "delta", "desert", "ember", "falcon",
    "fern", "fiddle", "gadget", "galaxy", "garnet", "glacier", "granite", "harbor", "hazel",
    "helmet", "indigo", "island", "jasper", "juniper", "kettle", "lantern", "lemon", "lizard",
    "magnet", "maple", "meadow", "nectar", "nutmeg", "orchid", "otter", "pebble", "pepper",
    "quartz", "raven", "saddle", "spruce", "tundra", "velvet", "walnut", "willow", "zephyr",
];

/// A long random passphrase: five words and four digits, hyphenated.
pub fn passphrase() -> Result<String> {
    let mut buf = [0u8; 7];
    File::open("/dev/urandom")?.read_exact(&mut buf)?;
    let mut parts: Vec<String> = buf
        .iter()
        .take(5)
        .filter_map(|b| WORDS.get(usize::from(*b) % WORDS.len()))
        .map(|w| (*w).to_owned())
        .collect();
    let n = u16::from_le_bytes([buf[5], buf[6]]) % 10_000;
    parts.push(format!("{n:04}"));
    Ok(parts.join("-"))
}

/// A port nobody listens on right now (the kernel's pick for port 0).
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

pub fn fresh_dir(name: &str) -> Result<PathBuf> {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let dir =
        std::env::temp_dir().join(format!("vigil-xtask-{name}-{}-{nanos}", std::process::id()));
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

pub fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// The status code of `GET path` over plain HTTP/1.1.
fn http_status(addr: SocketAddr, path: &str) -> Result<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head)?;
    status_of(&String::from_utf8_lossy(head.get(..n).unwrap_or_default()))
}

/// The status code of an HTTP/1.1 answer's first line.
fn status_of(answer: &str) -> Result<u16> {
    let line = answer.lines().next().unwrap_or_default();
    let code = line
        .split_whitespace()
        .nth(1)
        .context("empty HTTP response")?;
    code.parse()
        .with_context(|| format!("bad HTTP status line {line:?}"))
}
