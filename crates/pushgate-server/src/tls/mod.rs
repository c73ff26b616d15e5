//! TLS with rustls: the certificate the port serves, swapped on reload
//! without touching open connections, and the handshake that decides
//! between HTTP/2 and HTTP/1.1 (ALPN).
//!
//! One `ServerConfig` lives for the whole run; it asks [`Certs`] for the
//! certificate at each handshake. A reload reads both files, checks that the
//! key belongs to the certificate, and only then swaps: a broken file leaves
//! the old certificate serving. Open connections keep the keys their
//! handshake agreed on, so they are not touched at all.
//!
//! The handshake and the records after it are our own [`TlsStream`] over
//! rustls' unbuffered API (`stream`): an idle connection keeps no TLS
//! buffer.

mod stream;

use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio::net::TcpStream;

pub use stream::TlsStream;

use crate::error::Error;

/// The certificate and key files, and what was last loaded from them.
pub struct Tls {
    cert_path: String,
    key_path: String,
    provider: Arc<CryptoProvider>,
    certs: Arc<Certs>,
    /// Offers `h2` (when HTTP/2 is on) and `http/1.1`.
    serve: Arc<ServerConfig>,
    /// Offers only `http/1.1`: a connection refused by a limit is answered
    /// in HTTP/1.1, which the refusal writes by hand.
    refuse: Arc<ServerConfig>,
}

/// What the handshake agreed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    H2,
    /// `http/1.1`, or no ALPN at all (tools such as `curl --http1.1`).
    Http1,
}

struct Certs(RwLock<Arc<CertifiedKey>>);

impl std::fmt::Debug for Certs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Certs")
    }
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

impl Tls {
    /// Loads the certificate and key; an unreadable or mismatched pair is an
    /// error naming the file.
    pub fn load(cert_path: &str, key_path: &str, http2: bool) -> Result<Self, Error> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let key = load_pair(&provider, cert_path, key_path)?;
        let certs = Arc::new(Certs(RwLock::new(Arc::new(key))));
        let config = |alpn: &[&[u8]]| -> Result<Arc<ServerConfig>, Error> {
            // TLS 1.3 and 1.2 (rustls has nothing older), and only the
            // provider's AEAD suites: no legacy ciphers to turn off.
            let mut c = ServerConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| Error::config(format!("TLS: {e}")))?
                .with_no_client_auth()
                .with_cert_resolver(certs.clone());
            c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            // Stateless resumption: a reconnecting client (a reconnect storm
            // after a restart, a page reload) skips the full handshake.
            c.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()
                .map_err(|e| Error::config(format!("TLS: {e}")))?;
            Ok(Arc::new(c))
        };
        let serve: &[&[u8]] = if http2 {
            &[b"h2", b"http/1.1"]
        } else {
            &[b"http/1.1"]
        };
        Ok(Tls {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            serve: config(serve)?,
            refuse: config(&[b"http/1.1"])?,
            provider,
            certs,
        })
    }

    /// Reads the files again; new handshakes use what they hold from now
    /// on. On error nothing changes, and the error names the file.
    pub fn reload(&self) -> Result<(), Error> {
        let key = load_pair(&self.provider, &self.cert_path, &self.key_path)?;
        *self.certs.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
        Ok(())
    }

    /// The certificate's file, for logs.
    pub fn cert_path(&self) -> &str {
        &self.cert_path
    }

    /// The server's side of a handshake. `refusing`: the connection will
    /// only be told it is refused, in HTTP/1.1.
    pub async fn accept(
        &self,
        tcp: TcpStream,
        refusing: bool,
    ) -> std::io::Result<(TlsStream<TcpStream>, Alpn)> {
        let config = if refusing { &self.refuse } else { &self.serve };
        let tls = stream::accept(tcp, config.clone()).await?;
        let alpn = match tls.alpn_protocol() {
            Some(b"h2") => Alpn::H2,
            _ => Alpn::Http1,
        };
        Ok((tls, alpn))
    }
}

/// A certificate chain and its private key, checked to belong together.
fn load_pair(
    provider: &CryptoProvider,
    cert_path: &str,
    key_path: &str,
) -> Result<CertifiedKey, Error> {
    let read = |path: &str, what: &str| {
        std::fs::read(path)
            .map_err(|e| Error::config(format!("cannot read the TLS {what} {path}: {e}")))
    };
    let cert_pem = read(cert_path, "certificate")?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::config(format!("{cert_path}: not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(Error::config(format!(
            "{cert_path}: no certificate in it (expected PEM: -----BEGIN CERTIFICATE-----)"
        )));
    }
    let key_pem = read(key_path, "key")?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        Error::config(format!(
            "{key_path}: no private key in it (expected PEM: PKCS#8, PKCS#1 or SEC1): {e}"
        ))
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        Error::config(format!(
            "{key_path} does not fit the certificate {cert_path}: {e}"
        ))
    })
}
