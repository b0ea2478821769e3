//! The outbox's SMTP mailer against a minimal SMTP sink written here
//! (EHLO, MAIL, RCPT, DATA, QUIT; no TLS).

use app::Mailer;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// What the sink received in one session.
#[derive(Debug, Default)]
struct Received {
    mail_from: String,
    rcpt_to: Vec<String>,
    data: String,
}

/// Accepts one SMTP session and returns what it received.
async fn sink(listener: TcpListener) -> Received {
    let (stream, _) = listener.accept().await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut got = Received::default();
    write.write_all(b"220 sink.test ESMTP\r\n").await.unwrap();
    while let Some(line) = lines.next_line().await.unwrap() {
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            write
                .write_all(b"250-sink.test\r\n250 8BITMIME\r\n")
                .await
                .unwrap();
        } else if upper.starts_with("MAIL FROM:") {
            got.mail_from = line.get(10..).unwrap().trim().to_owned();
            write.write_all(b"250 ok\r\n").await.unwrap();
        } else if upper.starts_with("RCPT TO:") {
            got.rcpt_to.push(line.get(8..).unwrap().trim().to_owned());
            write.write_all(b"250 ok\r\n").await.unwrap();
        } else if upper == "DATA" {
            write.write_all(b"354 end with .\r\n").await.unwrap();
            while let Some(l) = lines.next_line().await.unwrap() {
                if l == "." {
                    break;
                }
                got.data.push_str(&l);
                got.data.push('\n');
            }
            write.write_all(b"250 queued\r\n").await.unwrap();
        } else if upper == "QUIT" {
            write.write_all(b"221 bye\r\n").await.unwrap();
            break;
        } else {
            write.write_all(b"250 ok\r\n").await.unwrap();
        }
    }
    got
}

fn smtp_config(port: u16) -> vigil::config::SmtpConfig {
    toml::from_str(&format!(
        "relay = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\nfrom = \"Vigil <vigil@clinic.example>\"\n"
    ))
    .unwrap()
}

#[tokio::test]
async fn smtp_mailer_delivers_to_the_relay() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = tokio::spawn(sink(listener));
    let mailer = vigil::mail::SmtpMailer::new(&smtp_config(port)).unwrap();
    mailer
        .send(
            "alice@example.org",
            "Your Vigil enrolment",
            "Open this link to set your password:\nhttps://vigil.test/enrol/abc123",
        )
        .await
        .unwrap();
    let got = tokio::time::timeout(std::time::Duration::from_secs(30), received)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.mail_from, "<vigil@clinic.example>");
    assert_eq!(got.rcpt_to, vec!["<alice@example.org>".to_owned()]);
    assert!(
        got.data.contains("Subject: Your Vigil enrolment\n"),
        "{}",
        got.data
    );
    assert!(got.data.contains("To: alice@example.org\n"), "{}", got.data);
    assert!(
        got.data.contains("From: Vigil <vigil@clinic.example>\n"),
        "{}",
        got.data
    );
    assert!(
        got.data
            .contains("\n\nOpen this link to set your password:\nhttps://vigil.test/enrol/abc123"),
        "{}",
        got.data
    );
}

#[tokio::test]
async fn smtp_failures_do_not_echo_the_relay() {
    // A relay that refuses every recipient, quoting the address back.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        write.write_all(b"220 sink.test ESMTP\r\n").await.unwrap();
        while let Some(line) = lines.next_line().await.unwrap() {
            let upper = line.to_ascii_uppercase();
            let reply: &[u8] = if upper.starts_with("EHLO") {
                b"250 sink.test\r\n"
            } else if upper.starts_with("RCPT") {
                b"550 5.1.1 <bob@example.org> no such user\r\n"
            } else if upper == "QUIT" {
                write.write_all(b"221 bye\r\n").await.unwrap();
                break;
            } else {
                b"250 ok\r\n"
            };
            write.write_all(reply).await.unwrap();
        }
    });
    let mailer = vigil::mail::SmtpMailer::new(&smtp_config(port)).unwrap();
    let err = mailer.send("bob@example.org", "s", "b").await.unwrap_err();
    assert!(err.contains("permanently"), "{err}");
    assert!(!err.contains("bob"), "{err}");
}

#[test]
fn a_password_over_plain_smtp_is_refused() {
    let c: vigil::config::SmtpConfig = toml::from_str(
        "relay = \"mail.example\"\ntls = \"none\"\nusername = \"u\"\npassword = \"p\"\nfrom = \"v@example.org\"\n",
    )
    .unwrap();
    let err = vigil::mail::SmtpMailer::new(&c).err().unwrap().to_string();
    assert!(err.contains("in clear"), "{err}");
}
