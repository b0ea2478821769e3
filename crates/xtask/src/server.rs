//! A real `vigil serve` on a random loopback port with a fresh data directory, stopped on drop.

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

pub struct Options {
    pub referential_integrity: bool,
    /// Seeds the demo clinic (`vigil serve --demo`) for tests that browse it.
    pub demo: bool,
}

pub struct Server {
    child: Option<Child>,
    pub url: String,
    pub token: String,
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
        let token = random_hex(24)?;
        let listen = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(&data)
            .arg("--listen")
            .arg(&listen)
            .env("VIGIL_BOOTSTRAP_TOKEN", &token)
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::null())
            .stdout(File::create(&log)?)
            .stderr(File::create(dir.join("server.stderr.log"))?);
        // Only what we set here: nothing from the caller's VIGIL_* environment.
        for (key, _) in std::env::vars_os() {
            let key_str = key.to_string_lossy();
            if key_str.starts_with("VIGIL_") && key_str != "VIGIL_BOOTSTRAP_TOKEN" {
                cmd.env_remove(&key);
            }
        }
        if !opts.referential_integrity {
            cmd.env("VIGIL_REFERENTIAL_INTEGRITY", "false");
        }
        if opts.demo {
            cmd.arg("--demo");
        }
        println!(
            "starting {name}: {} (data {}, referential integrity {})",
            crate::cmd::display(&cmd),
            data.display(),
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
            url: format!("http://{listen}"),
            token,
            dir,
            log,
        };
        server.wait_ready()?;
        Ok(server)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let start = Instant::now();
        let addr = self.addr()?;
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

    fn addr(&self) -> Result<SocketAddr> {
        let hostport = self.url.trim_start_matches("http://");
        hostport
            .parse()
            .with_context(|| format!("bad server address {hostport}"))
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

/// A port nobody listens on right now (the kernel's pick for port 0).
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

fn fresh_dir(name: &str) -> Result<PathBuf> {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let dir =
        std::env::temp_dir().join(format!("vigil-xtask-{name}-{}-{nanos}", std::process::id()));
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn random_hex(bytes: usize) -> Result<String> {
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
    let line = String::from_utf8_lossy(head.get(..n).unwrap_or_default()).into_owned();
    let code = line
        .split_whitespace()
        .nth(1)
        .context("empty HTTP response")?;
    code.parse()
        .with_context(|| format!("bad HTTP status line {line:?}"))
}
