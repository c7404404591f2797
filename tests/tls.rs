//! TLS (access.md, "TLS"), black-box: a test CA made in the test (rcgen), the real binary serving HTTPS,
//! WSS and ingest over TLS, clients speaking rustls as browsers and T-Server bridges would.

mod support;

use futures_util::SinkExt;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use support::Gateway;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;

/// A CA able to issue certificates.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let issuer =
            CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA");
        Ca { issuer }
    }

    /// A certificate for `names`, and its key, both PEM.
    fn issue(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let cert = CertificateParams::new(names)
            .expect("params")
            .signed_by(&key, &self.issuer)
            .expect("certificate");
        (cert.pem(), key.serialize_pem())
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path.to_str().expect("path").to_owned()
}

/// A client trusting `ca`, presenting `identity` (certificate and key PEM) when given.
fn connector(ca: &str, identity: Option<&(String, String)>) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("root");
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .expect("chain"),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key"),
            )
            .expect("client auth"),
    };
    TlsConnector::from(Arc::new(config))
}

async fn tls_connect(
    addr: &str,
    connector: &TlsConnector,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").expect("name");
    connector.connect(name, tcp).await
}

async fn https_get(addr: &str, connector: &TlsConnector, path: &str) -> std::io::Result<String> {
    let mut tls = tls_connect(addr, connector).await?;
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut response = String::new();
    tls.read_to_string(&mut response).await?;
    Ok(response)
}

/// Writes `lines` over TLS ingest, half-closes, returns the reply lines (an error when the handshake or
/// the connection fails).
async fn tls_ingest(
    addr: &str,
    connector: &TlsConnector,
    lines: &str,
) -> std::io::Result<Vec<String>> {
    let mut tls = tls_connect(addr, connector).await?;
    tls.write_all(lines.as_bytes()).await?;
    tls.shutdown().await?;
    let mut replies = Vec::new();
    let mut reader = BufReader::new(tls).lines();
    while let Some(line) = reader.next_line().await? {
        replies.push(line);
    }
    Ok(replies)
}

#[tokio::test]
async fn https_wss_and_ingest_over_tls_with_client_certificates() {
    let _guard = support::exclusive().await;
    let dir = support::temp_dir("tls");
    let ca = Ca::new("callgate test CA");
    let rogue = Ca::new("rogue CA");
    let (cert, key) = ca.issue(&["localhost"]);
    let client = ca.issue(&["sip-primary"]);
    let stranger = rogue.issue(&["sip-primary"]);
    let ca_file = write(&dir, "ca.pem", &ca.pem());
    let cert_file = write(&dir, "cert.pem", &cert);
    let key_file = write(&dir, "key.pem", &key);
    let gateway = Gateway::start(&[
        "--tls-cert",
        &cert_file,
        "--tls-key",
        &key_file,
        "--ingest-tls-cert",
        &cert_file,
        "--ingest-tls-key",
        &key_file,
        "--ingest-client-ca",
        &ca_file,
    ]);
    let trusting = connector(&ca.pem(), None);

    // HTTPS; plain HTTP on the same port gets no answer.
    let response = https_get(&gateway.http, &trusting, "/healthz")
        .await
        .expect("HTTPS");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let (status_line, _) = plain_http(&gateway.http).await;
    assert!(!status_line.starts_with("HTTP/1.1 200"), "{status_line:?}");
    // A client that does not trust the test CA refuses the server.
    assert!(
        https_get(&gateway.http, &connector(&rogue.pem(), None), "/healthz")
            .await
            .is_err()
    );

    // Ingest: with a client certificate of the CA, events are applied.
    let events = "{\"event\":\"EventEstablished\",\"ConnID\":\"0000000000000001\",\"ThisDN\":\"7001\",\"EventSequenceNumber\":1}\n";
    let replies = tls_ingest(
        &gateway.ingest,
        &connector(&ca.pem(), Some(&client)),
        events,
    )
    .await
    .expect("ingest over TLS");
    let last: serde_json::Value = serde_json::from_str(replies.last().expect("ack")).expect("JSON");
    assert_eq!(last["applied"], 1, "{replies:?}");
    // Without one, or with one of another CA: no events get in.
    for identity in [None, Some(&stranger)] {
        let refused = tls_ingest(&gateway.ingest, &connector(&ca.pem(), identity), events).await;
        assert!(
            refused.as_ref().map_or(true, |replies| replies.is_empty()),
            "{refused:?}"
        );
    }

    // WSS: the snapshot holds the call ingested over TLS.
    let tls = tls_connect(&gateway.http, &trusting).await.expect("TLS");
    let (mut ws, _) = tokio_tungstenite::client_async("wss://localhost/api/v2/ws", tls)
        .await
        .expect("WebSocket over TLS");
    ws.send(Message::text(r#"{"type":"subscribe","sub":"all"}"#))
        .await
        .expect("subscribe");
    let subscribed = loop {
        use futures_util::StreamExt;
        let message = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a reply in time")
            .expect("open")
            .expect("a message");
        if let Message::Text(text) = message {
            break serde_json::from_str::<serde_json::Value>(text.as_str()).expect("JSON");
        }
    };
    assert_eq!(
        subscribed["calls"].as_array().map(Vec::len),
        Some(1),
        "{subscribed}"
    );
    let uri = subscribed["calls"][0]["uri"].as_str().unwrap_or_default();
    assert!(
        uri.starts_with("https://"),
        "the base URL follows TLS: {uri}"
    );
}

/// Writes a plain HTTP request; returns the first line of whatever comes back (empty when nothing).
async fn plain_http(addr: &str) -> (String, ()) {
    let Ok(mut tcp) = TcpStream::connect(addr).await else {
        return (String::new(), ());
    };
    let _ = tcp
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    let mut buf = vec![0u8; 256];
    let read = tokio::time::timeout(Duration::from_secs(12), tcp.read(&mut buf))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(0);
    let text = String::from_utf8_lossy(&buf[..read]).into_owned();
    (text.lines().next().unwrap_or_default().to_owned(), ())
}

#[tokio::test]
async fn certificates_are_reread_on_sighup() {
    let _guard = support::exclusive().await;
    let dir = support::temp_dir("tlsreload");
    let first = Ca::new("first CA");
    let second = Ca::new("second CA");
    let (cert, key) = first.issue(&["localhost"]);
    let cert_file = write(&dir, "cert.pem", &cert);
    let key_file = write(&dir, "key.pem", &key);
    let gateway = Gateway::start(&["--tls-cert", &cert_file, "--tls-key", &key_file]);
    let response = https_get(&gateway.http, &connector(&first.pem(), None), "/healthz").await;
    assert!(response.expect("HTTPS").starts_with("HTTP/1.1 200"));
    // A bad file keeps the certificate in force; a good one replaces it.
    write(&dir, "cert.pem", "not a certificate");
    gateway.hangup();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        https_get(&gateway.http, &connector(&first.pem(), None), "/healthz")
            .await
            .is_ok()
    );
    let (cert, key) = second.issue(&["localhost"]);
    write(&dir, "cert.pem", &cert);
    write(&dir, "key.pem", &key);
    gateway.hangup();
    let mut reloaded = false;
    for _ in 0..50 {
        if https_get(&gateway.http, &connector(&second.pem(), None), "/healthz")
            .await
            .is_ok()
        {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reloaded, "the new certificate is served");
}
