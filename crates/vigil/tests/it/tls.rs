//! HTTPS: `vigil serve --tls-cert --tls-key` with a self-signed certificate
//! made here, a rustls client that trusts only it, and a plain-HTTP client
//! that gets nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{Scratch, Server, run_bounded};

/// Writes a self-signed certificate for `localhost` and its key; returns
/// (certificate path, key path, certificate).
fn self_signed(dir: &Path) -> (PathBuf, PathBuf, CertificateDer<'static>) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    (cert, key, ck.cert.der().clone())
}

fn client_config(trusted: CertificateDer<'static>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

async fn https_get(addr: &str, path: &str, config: Arc<rustls::ClientConfig>) -> u16 {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .uri(path)
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await.unwrap();
    status
}

#[tokio::test]
async fn serves_https_with_the_given_certificate_and_refuses_plain_http() {
    let dir = Scratch::new("tls");
    let (cert, key, der) = self_signed(&dir.0);
    let data = dir.0.join("data");
    let s = Server::start(
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        &[],
        &dir.0,
    );
    let addr = s
        .base
        .strip_prefix("https://")
        .unwrap_or_else(|| panic!("the printed URL is not https: {}", s.base))
        .to_owned();

    assert_eq!(
        https_get(&addr, "/health", client_config(der.clone())).await,
        200
    );

    // A client that does not trust the certificate fails its handshake.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let tcp = TcpStream::connect(&addr).await.unwrap();
    let refused = tokio_rustls::TlsConnector::from(client_config(other.cert.der().clone()))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await;
    assert!(refused.is_err());

    // Plain HTTP to the TLS port gets no HTTP response.
    let mut tcp = TcpStream::connect(&addr).await.unwrap();
    tcp.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), tcp.read_to_end(&mut got)).await;
    assert!(
        !got.starts_with(b"HTTP/"),
        "plain HTTP was answered: {:?}",
        String::from_utf8_lossy(&got)
    );

    // The server still serves TLS clients after the plain-HTTP attempt.
    assert_eq!(https_get(&addr, "/health", client_config(der)).await, 200);
    let (_, stderr) = s.stop();
    let log = std::fs::read_to_string(stderr).unwrap();
    assert!(log.contains("stopped"), "no graceful stop: {log}");
}

#[test]
fn a_certificate_without_its_key_is_refused_clearly() {
    let dir = Scratch::new("tls-half");
    let (cert, key, _) = self_signed(&dir.0);
    let data = dir.0.join("data");
    let d = data.to_str().unwrap();
    let (ok, err) = run_bounded(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            d,
            "--tls-cert",
            cert.to_str().unwrap(),
        ],
        &[],
        60,
    );
    assert!(!ok);
    assert!(err.contains("without its private key"), "{err}");
    let (ok, err) = run_bounded(
        &["serve", "--listen", "127.0.0.1:0", "--data-dir", d],
        &[("VIGIL_TLS_KEY", key.to_str().unwrap())],
        60,
    );
    assert!(!ok);
    assert!(err.contains("without its certificate"), "{err}");
    // A key that does not match the certificate.
    let other = dir.0.join("other.pem");
    std::fs::write(&other, rcgen::KeyPair::generate().unwrap().serialize_pem()).unwrap();
    let (ok, err) = run_bounded(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            d,
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            other.to_str().unwrap(),
        ],
        &[],
        60,
    );
    assert!(!ok);
    assert!(err.contains("do not go together"), "{err}");
}
