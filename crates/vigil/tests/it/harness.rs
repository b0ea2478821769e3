use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

pub fn pg_admin() -> String {
    std::env::var("VIGIL_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn rand_suffix() -> String {
    crypto::random_token()
        .to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(10)
        .collect()
}

/// A scratch directory removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("vigil-it-{tag}-{}", rand_suffix()));
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A scratch PostgreSQL database dropped on drop.
pub struct PgDb {
    pub name: String,
    pub url: String,
}

impl PgDb {
    pub async fn new() -> PgDb {
        let name = format!("vigil_it_{}", rand_suffix());
        vigil::pgadmin::create_database(&pg_admin(), &name)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL must be reachable at {} for these tests: {e:#}",
                    pg_admin()
                )
            });
        let url = vigil::pgadmin::database_url(&pg_admin(), &name);
        PgDb { name, url }
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let admin = pg_admin();
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                let _ = rt.block_on(vigil::pgadmin::drop_database(&admin, &name));
            }
        })
        .join();
    }
}

pub fn vigil_cmd(args: &[&str], envs: &[(&str, &str)]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vigil"));
    c.args(args);
    for k in [
        "VIGIL_DATA_DIR",
        "VIGIL_DATABASE_URL",
        "VIGIL_KEYS",
        "VIGIL_KEY_FILE",
        "VIGIL_CONFIG",
        "VIGIL_BOOTSTRAP_TOKEN",
        "VIGIL_LISTEN",
        "VIGIL_TLS_CERT",
        "VIGIL_TLS_KEY",
        "VIGIL_TRUSTED_PROXIES",
        "VIGIL_SMTP_PASSWORD",
        "VIGIL_PUBLIC_URL",
    ] {
        c.env_remove(k);
    }
    for (k, v) in envs {
        c.env(k, v);
    }
    c
}

/// Runs a CLI verb to completion; returns (success, stdout, stderr).
pub fn run(args: &[&str], envs: &[(&str, &str)]) -> (bool, String, String) {
    let out = vigil_cmd(args, envs).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs a command that is expected to exit; kills it after `secs`.
pub fn run_bounded(args: &[&str], envs: &[(&str, &str)], secs: u64) -> (bool, String) {
    let err_path = std::env::temp_dir().join(format!("vigil-it-err-{}", rand_suffix()));
    let mut child = vigil_cmd(args, envs)
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&err_path).unwrap()))
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break Some(st);
        }
        if started.elapsed() > Duration::from_secs(secs) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    let _ = std::fs::remove_file(&err_path);
    (status.is_some_and(|s| s.success()), err)
}

pub struct Server {
    child: Child,
    pub base: String,
    pub token: String,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl Server {
    /// Starts `vigil serve` with `args`, a fixed bootstrap token and logs to files in `logs`.
    pub fn start(args: &[&str], envs: &[(&str, &str)], logs: &Path) -> Server {
        let token = format!("it-token-{}", rand_suffix());
        let stdout = logs.join(format!("stdout-{}.log", rand_suffix()));
        let stderr = logs.join(format!("stderr-{}.log", rand_suffix()));
        let mut all = vec!["serve", "--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let mut envs: Vec<(&str, &str)> = envs.to_vec();
        envs.push(("VIGIL_BOOTSTRAP_TOKEN", &token));
        envs.push(("VIGIL_LOG", "debug"));
        let child = vigil_cmd(&all, &envs)
            .stdout(Stdio::from(std::fs::File::create(&stdout).unwrap()))
            .stderr(Stdio::from(std::fs::File::create(&stderr).unwrap()))
            .spawn()
            .unwrap();
        let mut s = Server {
            child,
            base: String::new(),
            token: String::new(),
            stdout,
            stderr,
        };
        let started = Instant::now();
        loop {
            let text = std::fs::read_to_string(&s.stdout).unwrap_or_default();
            if let Some(rest) = text.split("listening on ").nth(1)
                && let Some((scheme, rest)) = rest.split_once("://")
            {
                let addr = rest.split('/').next().unwrap();
                s.base = format!("{scheme}://{addr}");
                break;
            }
            if let Ok(Some(status)) = s.child.try_wait() {
                panic!(
                    "vigil serve exited with {status}: {}",
                    std::fs::read_to_string(&s.stderr).unwrap_or_default()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "vigil serve did not start in time"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("vigil serve ready in {:?}", started.elapsed());
        s.token = s.admin_token(args, &envs);
        s
    }

    /// An administrator's access token for this server, as an operator gets
    /// one: `vigil user add` (once per store) and `vigil token issue`.
    fn admin_token(&self, args: &[&str], envs: &[(&str, &str)]) -> String {
        // The store and key file flags `serve` got, for the CLI verbs.
        let mut common: Vec<&str> = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if matches!(
                *a,
                "--data-dir" | "--database-url" | "--key-file" | "--config"
            ) && let Some(v) = it.next()
            {
                common.push(a);
                common.push(v);
            }
        }
        let envs: Vec<(&str, &str)> = envs
            .iter()
            .copied()
            .filter(|(k, _)| *k != "VIGIL_BOOTSTRAP_TOKEN" && *k != "VIGIL_LOG")
            .collect();
        let mut add = vec![
            "user",
            "add",
            "--username",
            "it-admin",
            "--role",
            "administrator",
            "--password-stdin",
        ];
        add.extend_from_slice(&common);
        let mut child = vigil_cmd(&add, &envs)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write as _;
            let mut stdin = child.stdin.take().unwrap();
            stdin
                .write_all(b"integration tests use a long passphrase\n")
                .unwrap();
        }
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() || err.contains("taken"),
            "user add failed: {err}"
        );
        let public = format!("{}/fhir", self.base);
        let mut with_url = envs.clone();
        with_url.push(("VIGIL_PUBLIC_URL", &public));
        // The tests act on records across patients: a backend-service token
        // (system scopes, no person, not decided by the relationship rules).
        let mut issue = vec![
            "token",
            "issue",
            "--service",
            "--scope",
            "system/*.cruds",
            "--ttl",
            "60m",
        ];
        issue.extend_from_slice(&common);
        let (ok, stdout, stderr) = run(&issue, &with_url);
        assert!(ok, "token issue failed: {stderr}");
        stdout.trim().to_owned()
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let mut b = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {}", self.token));
        let bytes = match body {
            Some(v) => {
                b = b.header("content-type", "application/fhir+json");
                serde_json::to_vec(v).unwrap()
            }
            None => Vec::new(),
        };
        let resp = client
            .request(b.body(Full::new(Bytes::from(bytes))).unwrap())
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        (status, v)
    }

    /// Kills the server with SIGKILL (no shutdown at all, as in a crash) and waits.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the server with SIGTERM (graceful) and waits.
    pub fn stop(mut self) -> (PathBuf, PathBuf) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        (self.stdout.clone(), self.stderr.clone())
    }
}

/// A server a test forgot to stop (or a test that panicked) is killed, so
/// no `vigil serve` outlives its test.
impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(t) if t.is_file() => out.push(p),
                _ => {}
            }
        }
    }
    out
}

/// Files (among `files`) containing any needle, in any letter case.
pub fn find_plaintext(files: &[PathBuf], needles: &[&str]) -> Vec<String> {
    let needles: Vec<Vec<u8>> = needles
        .iter()
        .map(|n| n.to_ascii_lowercase().into_bytes())
        .collect();
    let mut hits = Vec::new();
    for f in files {
        let mut buf = Vec::new();
        let Ok(mut fh) = std::fs::File::open(f) else {
            continue;
        };
        if fh.read_to_end(&mut buf).is_err() {
            continue;
        }
        buf.make_ascii_lowercase();
        for n in &needles {
            if memchr::memmem::find(&buf, n).is_some() {
                hits.push(format!(
                    "{} contains {:?}",
                    f.display(),
                    String::from_utf8_lossy(n)
                ));
            }
        }
    }
    hits
}
