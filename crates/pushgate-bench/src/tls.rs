//! TLS for `--tls`: rustls with the aws-lc-rs provider (the server's), so
//! the handshake and the records are what a modern client would make
//! (TLS 1.3, X25519MLKEM768 first, AES-GCM).
//!
//! The certificate is checked against `--tls-ca` (a PEM file; a
//! self-signed test certificate works as its own anchor if it is not marked
//! as a CA), or with `--tls-insecure` not checked at all, though the
//! handshake's signature still is, so both sides do a real handshake's work.

use std::net::IpAddr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::error::{BenchError, ErrorKind};
use crate::net;

/// How the server's certificate is trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// The certificates in this PEM file are the trust anchors.
    CaFile(String),
    /// Any certificate (self-signed test certificates).
    Insecure,
}

/// What ALPN offers: `http/1.1` alone for WebSocket, SSE, long-poll and
/// publishes; `h2` alone for `--h2-connections`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    Http1,
    H2,
}

/// The client side of TLS, shared by every connection of a run.
#[derive(Clone)]
pub struct TlsClient {
    http1: TlsConnector,
    h2: TlsConnector,
    /// Sent as SNI (a name) or used to check the certificate's IP address.
    server_name: ServerName<'static>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl TlsClient {
    /// `host` is the URL's host, as written (`localhost`, `127.0.0.1`, `[::1]`).
    pub fn new(trust: &Trust, host: &str) -> Result<Self, BenchError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| BenchError::config(format!("TLS: {e}")))?;
        let config = match trust {
            Trust::CaFile(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| BenchError::config(format!("--tls-ca {path}: {e}")))?;
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(&pem) {
                    let cert = cert.map_err(|e| {
                        BenchError::config(format!("--tls-ca {path}: not PEM certificates: {e}"))
                    })?;
                    roots.add(cert).map_err(|e| {
                        BenchError::config(format!("--tls-ca {path}: unusable certificate: {e}"))
                    })?;
                }
                if roots.is_empty() {
                    return Err(BenchError::config(format!(
                        "--tls-ca {path}: no certificate in it (expected PEM)"
                    )));
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            Trust::Insecure => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth(),
        };
        let with_alpn = |alpn: &[u8]| {
            let mut c = config.clone();
            c.alpn_protocols = vec![alpn.to_vec()];
            TlsConnector::from(Arc::new(c))
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let server_name = match host.parse::<IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => ServerName::try_from(host.to_owned())
                .map_err(|e| BenchError::config(format!("TLS server name {host:?}: {e}")))?,
        };
        Ok(TlsClient {
            http1: with_alpn(b"http/1.1"),
            h2: with_alpn(b"h2"),
            server_name,
        })
    }

    /// The handshake over an established TCP connection.
    pub async fn handshake(
        &self,
        tcp: TcpStream,
        alpn: Alpn,
    ) -> Result<TlsStream<TcpStream>, BenchError> {
        let connector = match alpn {
            Alpn::Http1 => &self.http1,
            Alpn::H2 => &self.h2,
        };
        let tls = connector
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| BenchError::new(ErrorKind::Connect, format!("TLS handshake: {e}")))?;
        if alpn == Alpn::H2 && tls.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err(BenchError::new(
                ErrorKind::Protocol,
                "the server did not choose h2 by ALPN",
            ));
        }
        Ok(tls)
    }
}

/// Connects, over TLS when `tls` is given (ALPN `http/1.1`).
pub async fn connect(
    tls: Option<&TlsClient>,
    target: std::net::SocketAddr,
    source: Option<IpAddr>,
) -> Result<net::Stream, BenchError> {
    let tcp = net::connect(target, source)
        .await
        .map_err(|e| BenchError::new(ErrorKind::Connect, format!("connect: {e}")))?;
    match tls {
        None => Ok(net::Stream::Tcp(tcp)),
        // Boxed: the handshake's future holds a whole client connection
        // (~1.1 KiB), which would otherwise widen every caller's future,
        // and so every plaintext subscriber's task, for its whole life.
        Some(t) => Ok(net::Stream::Tls(Box::new(
            Box::pin(t.handshake(tcp, Alpn::Http1)).await?,
        ))),
    }
}

/// `--tls-insecure`: accepts any certificate, but checks that the server
/// signed the handshake with its key.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
