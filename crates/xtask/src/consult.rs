//! The telehealth consultation round (`consult-browser.js`): Chromium, coturn and the Vigil
//! server inside a network namespace of their own.
//!
//! Chromium gathers no ICE candidates on a machine with only loopback, so the round re-runs
//! this binary under `unshare --net` ([`in_namespace`]); there the hidden command
//! [`NAMESPACE_COMMAND`] ([`namespace_round`]) brings up loopback and one veth pair whose
//! addresses exist only in that namespace, starts Debian's coturn (`turnserver`) on
//! [`TURN_ADDR`], starts the server with a `[consult]` section naming that relay and sharing
//! its secret, and runs the round like any other ([`ext::run_round`]). The outcomes come back
//! through a file. The relay's configuration is the production one of docs/coturn.md, without
//! TLS and with the test subnet allowed as a peer.

use std::fs::{self, File};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

use crate::cmd;
use crate::ext::{self, Outcome, add_user};
use crate::server::{Server, fresh_dir, random_hex};

/// The command this binary runs inside the namespace (not for people: see [`in_namespace`]).
pub const NAMESPACE_COMMAND: &str = "ext-in-namespace";

/// The veth pair's addresses: coturn listens and relays on the first; Chromium also gathers
/// host candidates on both.
pub const TURN_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const PEER_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const TURN_PORT: u16 = 3478;

/// The longest the whole round (server, setup, script) may take in the namespace.
const ROUND_LIMIT: Duration = Duration::from_secs(25 * 60);

/// How long coturn may take to accept connections.
const RELAY_READY: Duration = Duration::from_secs(15);

/// Runs the round `server` with the scripts `files` in a fresh network namespace; returns its
/// outcomes (a failure of its own when the namespace could not be made or reported nothing).
pub fn in_namespace(ext: &Path, bin: &Path, server: &str, files: &[&str]) -> Vec<Outcome> {
    match spawn_in_namespace(ext, bin, server, files) {
        Ok(outcomes) => outcomes,
        Err(e) => {
            println!("FAIL {server} in a network namespace: {e:#}");
            vec![(
                format!("{server} in a network namespace"),
                Some(format!("{e:#}")),
            )]
        }
    }
}

fn spawn_in_namespace(
    ext: &Path,
    bin: &Path,
    server: &str,
    files: &[&str],
) -> Result<Vec<Outcome>> {
    let exe = std::env::current_exe().context("where is this xtask binary")?;
    let host = net_namespace()?;
    let report = fresh_dir(&format!("{server}-report"))?;
    let report_file = report.join("outcomes.tsv");
    // The scripts run in tests-external and the server binary may be relative.
    let bin = fs::canonicalize(bin).unwrap_or_else(|_| bin.to_path_buf());
    let ext = fs::canonicalize(ext).unwrap_or_else(|_| ext.to_path_buf());
    let mut command = Command::new("unshare");
    command
        .arg("--net")
        .arg(&exe)
        .arg(NAMESPACE_COMMAND)
        .arg(&ext)
        .arg(&bin)
        .arg(&report_file)
        .arg(&host)
        .arg(server)
        .args(files);
    let status = cmd::status_within(&mut command, ROUND_LIMIT)
        .context("running the round in a network namespace (`unshare --net` needs root)")?;
    let text = fs::read_to_string(&report_file).unwrap_or_default();
    let _ = fs::remove_dir_all(&report);
    let mut outcomes: Vec<Outcome> = text.lines().filter_map(parse_outcome).collect();
    if outcomes.is_empty() {
        bail!(
            "`{}` exited with {status} and reported nothing (does `unshare --net` work here? it needs root)",
            cmd::display(&command)
        );
    }
    if !status.success() && outcomes.iter().all(|(_, e)| e.is_none()) {
        outcomes.push((
            format!("{server} in a network namespace"),
            Some(format!("exited with {status}")),
        ));
    }
    Ok(outcomes)
}

/// This process's network namespace (`net:[4026531840]`).
fn net_namespace() -> Result<String> {
    let link = fs::read_link("/proc/self/ns/net").context("reading /proc/self/ns/net")?;
    Ok(link.to_string_lossy().into_owned())
}

/// One outcome as a line of the report: `PASS\tname` or `FAIL\tname\tfirst line of the error`.
fn outcome_line((name, error): &Outcome) -> String {
    let clean = |s: &str| s.replace(['\t', '\n', '\r'], " ");
    match error {
        None => format!("PASS\t{}\n", clean(name)),
        Some(e) => format!(
            "FAIL\t{}\t{}\n",
            clean(name),
            clean(e.lines().next().unwrap_or("failed"))
        ),
    }
}

fn parse_outcome(line: &str) -> Option<Outcome> {
    let mut parts = line.splitn(3, '\t');
    match (parts.next()?, parts.next()?, parts.next()) {
        ("PASS", name, None) => Some((name.to_owned(), None)),
        ("FAIL", name, error) => {
            Some((name.to_owned(), Some(error.unwrap_or("failed").to_owned())))
        }
        _ => None,
    }
}

/// `xtask ext-in-namespace EXT BIN REPORT HOST-NAMESPACE SERVER SCRIPT...`, run by
/// [`in_namespace`] under `unshare --net`: refuses to touch the network unless its namespace
/// differs from HOST-NAMESPACE, runs the round, and writes its outcomes to REPORT.
pub fn namespace_round(args: &[String]) -> Result<()> {
    let [ext, bin, report, host, server, files @ ..] = args else {
        bail!("usage: xtask {NAMESPACE_COMMAND} EXT BIN REPORT HOST-NAMESPACE SERVER SCRIPT...");
    };
    if net_namespace()? == *host {
        bail!("{NAMESPACE_COMMAND} runs only in a network namespace of its own (unshare --net)");
    }
    let mut outcomes: Vec<Outcome> = Vec::new();
    let step = |outcomes: &mut Vec<Outcome>, name: &str, result: Result<()>| {
        let error = result.err().map(|e| format!("{e:#}"));
        if let Some(e) = &error {
            println!("FAIL {name}: {e}");
        }
        let ok = error.is_none();
        outcomes.push((name.to_owned(), error));
        ok
    };
    if step(
        &mut outcomes,
        &format!("network namespace up (lo, veth {TURN_ADDR} and {PEER_ADDR})"),
        network_up(),
    ) {
        match Relay::start() {
            Err(e) => {
                step(
                    &mut outcomes,
                    &format!("coturn starts on {TURN_ADDR}:{TURN_PORT}"),
                    Err(e),
                );
            }
            Ok(mut relay) => {
                outcomes.push((format!("coturn starts on {TURN_ADDR}:{TURN_PORT}"), None));
                match ext::round_named(server, files) {
                    None => outcomes.push((server.clone(), Some("no such round".to_owned()))),
                    Some(mut round) => {
                        round.opts.config = Some(vigil_config(&relay.secret));
                        let env = [
                            ("VIGIL_TURN_SECRET".to_owned(), relay.secret.clone()),
                            ("VIGIL_TURN_HOST".to_owned(), TURN_ADDR.to_string()),
                            ("VIGIL_TURN_PORT".to_owned(), TURN_PORT.to_string()),
                        ];
                        outcomes.extend(ext::run_round(
                            Path::new(ext),
                            Path::new(bin),
                            round,
                            &env,
                        ));
                    }
                }
                let alive = relay.alive();
                step(
                    &mut outcomes,
                    "coturn stays up",
                    if alive {
                        Ok(())
                    } else {
                        Err(anyhow::anyhow!("turnserver exited during the round"))
                    },
                );
                relay.stop();
                if outcomes.iter().any(|(_, e)| e.is_some()) {
                    println!("{}", relay.log_tail(40));
                    println!(
                        "kept coturn's directory for inspection: {}",
                        relay.dir.display()
                    );
                } else {
                    let _ = fs::remove_dir_all(&relay.dir);
                }
            }
        }
    }
    let text: String = outcomes.iter().map(outcome_line).collect();
    fs::write(report, text).with_context(|| format!("writing {report}"))?;
    Ok(())
}

/// Loopback up, and the veth pair `v0` ([`TURN_ADDR`]) – `v1` ([`PEER_ADDR`]), both up.
fn network_up() -> Result<()> {
    let ip = |args: &[&str]| cmd::run(Command::new("ip").args(args));
    ip(&["link", "set", "lo", "up"])?;
    ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"])?;
    ip(&["addr", "add", &format!("{TURN_ADDR}/24"), "dev", "v0"])?;
    ip(&["addr", "add", &format!("{PEER_ADDR}/24"), "dev", "v1"])?;
    ip(&["link", "set", "v0", "up"])?;
    ip(&["link", "set", "v1", "up"])?;
    Ok(())
}

/// The server's `[consult]` section: STUN and TURN (UDP and TCP) on the relay, its secret.
fn vigil_config(secret: &str) -> String {
    format!(
        "[consult]\n\
stun_urls = [\"stun:{TURN_ADDR}:{TURN_PORT}\"]\n\
turn_urls = [\"turn:{TURN_ADDR}:{TURN_PORT}?transport=udp\", \"turn:{TURN_ADDR}:{TURN_PORT}?transport=tcp\"]\n\
turn_secret = \"{secret}\"\n\
turn_ttl_secs = 600\n"
    )
}

/// The relay's configuration: docs/coturn.md's production settings, except that it listens on
/// the namespace's address without TLS and allows the test subnet as a peer.
fn turn_config(secret: &str, dir: &Path) -> String {
    format!(
        "# coturn for the consultation test (crates/xtask/src/consult.rs).\n\
# The production configuration of docs/coturn.md, except: no TLS listener (no-tls, no-dtls),\n\
# it listens and relays on the test namespace's veth address, and allowed-peer-ip lets the\n\
# test subnet through the private-range denials (TEST ONLY: production allows no private peer).\n\
listening-ip={TURN_ADDR}\n\
relay-ip={TURN_ADDR}\n\
listening-port={TURN_PORT}\n\
min-port=49152\n\
max-port=49999\n\
realm=vigil.test\n\
use-auth-secret\n\
static-auth-secret={secret}\n\
fingerprint\n\
stale-nonce=600\n\
no-tls\n\
no-dtls\n\
no-cli\n\
no-tcp-relay\n\
no-multicast-peers\n\
no-rfc5780\n\
no-stun-backward-compatibility\n\
response-origin-only-with-rfc5780\n\
no-software-attribute\n\
user-quota=12\n\
total-quota=1200\n\
max-bps=500000\n\
{denied}\
# TEST ONLY: the namespace's veth subnet, where both browsers' relay candidates are.\n\
allowed-peer-ip=10.77.0.0-10.77.0.255\n\
log-file={log}\n\
simple-log\n\
no-stdout-log\n\
pidfile={pid}\n\
userdb={db}\n",
        denied = DENIED_PEERS
            .iter()
            .map(|range| format!("denied-peer-ip={range}\n"))
            .collect::<String>(),
        log = dir.join("turnserver.log").display(),
        pid = dir.join("turnserver.pid").display(),
        db = dir.join("turndb").display(),
    )
}

/// The peer addresses the relay never sends to (docs/coturn.md): "this network", loopback,
/// the private ranges, shared address space (CGNAT), link-local, IPv4-mapped IPv6, unique-local
/// and link-local IPv6.
const DENIED_PEERS: [&str; 11] = [
    "0.0.0.0-0.255.255.255",
    "10.0.0.0-10.255.255.255",
    "100.64.0.0-100.127.255.255",
    "127.0.0.0-127.255.255.255",
    "169.254.0.0-169.254.255.255",
    "172.16.0.0-172.31.255.255",
    "192.168.0.0-192.168.255.255",
    "::1",
    "::ffff:0.0.0.0-::ffff:255.255.255.255",
    "fc00::-fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    "fe80::-febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
];

/// Debian's `turnserver` in the foreground, with its own directory, stopped on drop.
struct Relay {
    child: Option<Child>,
    secret: String,
    dir: PathBuf,
}

impl Relay {
    fn start() -> Result<Relay> {
        let dir = fresh_dir("coturn")?;
        let secret = random_hex(32)?;
        let conf = dir.join("turnserver.conf");
        fs::write(&conf, turn_config(&secret, &dir))
            .with_context(|| format!("writing {}", conf.display()))?;
        let output = dir.join("turnserver.out");
        let mut command = Command::new("turnserver");
        command
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(File::create(&output)?)
            .stderr(File::create(&output)?);
        println!("$ {}", cmd::display(&command));
        let child = command
            .spawn()
            .context("cannot start turnserver (apt-get install coturn)")?;
        let mut relay = Relay {
            child: Some(child),
            secret,
            dir,
        };
        relay.wait_ready()?;
        Ok(relay)
    }

    /// Until coturn accepts TCP on its listening address.
    fn wait_ready(&mut self) -> Result<()> {
        let addr = SocketAddr::from((TURN_ADDR, TURN_PORT));
        let start = Instant::now();
        loop {
            if !self.alive() {
                bail!("turnserver exited at start\n{}", self.log_tail(40));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
                println!(
                    "coturn ready at {addr} after {}",
                    cmd::secs(start.elapsed())
                );
                return Ok(());
            }
            if start.elapsed() > RELAY_READY {
                bail!(
                    "turnserver did not accept connections on {addr} within {}s\n{}",
                    RELAY_READY.as_secs(),
                    self.log_tail(40)
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    fn log_tail(&self, n: usize) -> String {
        let mut out = String::new();
        for name in ["turnserver.log", "turnserver.out"] {
            let path = self.dir.join(name);
            let text = fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- {} (last {n} lines)\n", path.display()));
            for line in lines.iter().skip(lines.len().saturating_sub(n)) {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// SIGTERM, then SIGKILL after 5 s.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---- the round's records ----

/// The consultation round's Practitioner, physician, Patients and Appointments.
const PRACTITIONER: &str = "ext-consult-dr";
const PHYSICIAN: &str = "dr.consult";
const PATIENT: &str = "ext-consult-pat";
const OTHER: &str = "ext-consult-other";
const APPOINTMENTS: [&str; 2] = ["ext-consult-appt", "ext-consult-appt2"];

/// The Practitioner `ext-consult-dr` and the physician `dr.consult` on it; the Patient
/// `ext-consult-pat` (name, birth date, phone, e-mail, MRN) and another, `ext-consult-other`,
/// whose identifiers the clinician's chat must not carry; and two booked Appointments of the
/// first with the Practitioner, from five minutes ago to forty minutes from now, made with the
/// operator token (someone else scheduled them).
pub fn set_up(server: &Server, env: &mut Vec<(String, String)>) -> Result<()> {
    server.put(
        &format!("Practitioner/{PRACTITIONER}"),
        &format!(
            r#"{{"resourceType":"Practitioner","id":"{PRACTITIONER}","name":[{{"family":"Okafor","given":["Imani"],"prefix":["Dr"]}}]}}"#
        ),
    )?;
    let dr = add_user(
        server,
        PHYSICIAN,
        "physician",
        &["--practitioner", PRACTITIONER, "--name", "Dr Imani Okafor"],
    )?;
    server.put(
        &format!("Patient/{PATIENT}"),
        &format!(
            r#"{{"resourceType":"Patient","id":"{PATIENT}","identifier":[{{"type":{{"coding":[{{"system":"http://terminology.hl7.org/CodeSystem/v2-0203","code":"MR"}}]}},"system":"urn:oid:2.16.840.1.113883.19.5","value":"MRN-40211"}}],"name":[{{"family":"Delgado","given":["Rosa"]}}],"telecom":[{{"system":"phone","value":"+1 617 555 0142","use":"mobile"}},{{"system":"email","value":"rosa@example.org"}}],"gender":"female","birthDate":"1961-03-14"}}"#
        ),
    )?;
    server.put(
        &format!("Patient/{OTHER}"),
        &format!(
            r#"{{"resourceType":"Patient","id":"{OTHER}","name":[{{"family":"Finch","given":["Walter"]}}],"telecom":[{{"system":"phone","value":"+1 617 555 0199","use":"home"}}],"gender":"male","birthDate":"1958-11-02"}}"#
        ),
    )?;
    let now: i64 = SystemTime::now()
        .duration_since(UNIX_EPOCH)?
        .as_secs()
        .try_into()
        .context("the clock is past 2262")?;
    let (start, end) = (fhir_instant(now - 5 * 60), fhir_instant(now + 40 * 60));
    for id in APPOINTMENTS {
        server.put(
            &format!("Appointment/{id}"),
            &format!(
                r#"{{"resourceType":"Appointment","id":"{id}","status":"booked","description":"Video visit","start":"{start}","end":"{end}","participant":[{{"actor":{{"reference":"Patient/{PATIENT}"}},"status":"accepted"}},{{"actor":{{"reference":"Practitioner/{PRACTITIONER}"}},"status":"accepted"}}]}}"#
            ),
        )?;
    }
    env.extend([
        ("VIGIL_DR_USER".to_owned(), PHYSICIAN.to_owned()),
        ("VIGIL_DR_PASSWORD".to_owned(), dr),
        (
            "VIGIL_CONSULT_PRACTITIONER".to_owned(),
            PRACTITIONER.to_owned(),
        ),
        ("VIGIL_CONSULT_PATIENT".to_owned(), PATIENT.to_owned()),
        ("VIGIL_CONSULT_OTHER".to_owned(), OTHER.to_owned()),
        ("VIGIL_CONSULT_APPTS".to_owned(), APPOINTMENTS.join(",")),
    ]);
    Ok(())
}

/// Unix seconds as a FHIR instant in UTC (`2025-03-14T09:26:53Z`).
fn fhir_instant(unix: i64) -> String {
    let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3_600,
        secs % 3_600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants() {
        assert_eq!(fhir_instant(0), "1970-01-01T00:00:00Z");
        assert_eq!(fhir_instant(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(fhir_instant(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(fhir_instant(1_709_251_199), "2024-02-29T23:59:59Z");
    }

    #[test]
    fn outcomes_round_trip() {
        let pass: Outcome = ("a (1.0s)".to_owned(), None);
        assert_eq!(parse_outcome(outcome_line(&pass).trim_end()), Some(pass));
        let fail: Outcome = ("b".to_owned(), Some("first\tline\nsecond".to_owned()));
        assert_eq!(
            parse_outcome(outcome_line(&fail).trim_end()),
            Some(("b".to_owned(), Some("first line".to_owned())))
        );
    }
}
