//! TLS and mutual TLS against a loopback rustls server with a CA generated
//! in the test.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;

use parapet::{Certificate, Client, Identity};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig, server::WebPkiClientVerifier};

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    Ca { cert, key }
}

fn leaf(ca: &Ca, names: &[&str]) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(names.iter().map(|s| (*s).to_string()).collect::<Vec<_>>()).unwrap();
    let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
    (cert, key)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Serves one canned `200 ok` per connection over TLS; returns the port and
/// a channel of the client certificate subjects seen (empty without mTLS).
async fn serve(ca: &Ca, client_ca: Option<&Ca>) -> u16 {
    let (cert, key) = leaf(ca, &["localhost", "127.0.0.1"]);
    let chain = vec![CertificateDer::from(cert.der().to_vec())];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(client_ca) => {
            let mut roots = RootCertStore::empty();
            roots
                .add(CertificateDer::from(client_ca.cert.der().to_vec()))
                .unwrap();
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\nconnection: close\r\n\r\nsecure",
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

#[tokio::test]
async fn https_with_a_private_root_certificate() {
    let ca = ca("test root");
    let port = serve(&ca, None).await;
    let client = Client::builder()
        .webpki_roots(false)
        .add_root_certificate(Certificate::from_pem(ca.cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let resp = client
        .get(&format!("https://127.0.0.1:{port}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "secure");
}

#[tokio::test]
async fn a_wrong_ca_fails_with_a_typed_readable_error() {
    let server_ca = ca("server root");
    let other_ca = ca("some other root");
    let port = serve(&server_ca, None).await;
    let client = Client::builder()
        .webpki_roots(false)
        .add_root_certificate(Certificate::from_pem(other_ca.cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let err = client
        .get(&format!("https://127.0.0.1:{port}/"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    let text = format!("{err}");
    assert!(text.to_lowercase().contains("certificate"), "{text}");
}

#[tokio::test]
async fn mutual_tls_with_a_client_identity() {
    let server_ca = ca("server root");
    let client_ca = ca("client root");
    let port = serve(&server_ca, Some(&client_ca)).await;
    let (client_cert, client_key) = leaf(&client_ca, &["client.test"]);
    let identity = Identity::from_pem(
        client_cert.pem().as_bytes(),
        client_key.serialize_pem().as_bytes(),
    )
    .unwrap();
    assert!(!format!("{identity:?}").contains("PRIVATE"));
    let roots = Certificate::from_pem(server_ca.cert.pem().as_bytes()).unwrap();

    let with_identity = Client::builder()
        .webpki_roots(false)
        .add_root_certificate(roots.clone())
        .identity(identity)
        .build()
        .unwrap();
    let resp = with_identity
        .get(&format!("https://127.0.0.1:{port}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), "secure");

    // Without the identity the server refuses the handshake.
    let without = Client::builder()
        .webpki_roots(false)
        .add_root_certificate(roots)
        .build()
        .unwrap();
    let err = without
        .get(&format!("https://127.0.0.1:{port}/"))
        .send()
        .await
        .unwrap_err();
    assert!(!err.is_status(), "{err:?}");
}

#[test]
fn bad_pem_is_a_typed_config_error() {
    let err = Certificate::from_pem(b"not a certificate").unwrap_err();
    assert!(err.to_string().starts_with("invalid client configuration"));
    let err = Identity::from_pem(b"nope", b"nope").unwrap_err();
    assert!(err.message().contains("client certificate"));
}
