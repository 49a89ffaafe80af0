//! TLS for clients: STARTTLS (RFC 3207) and implicit TLS (RFC 8314), with rustls.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::Setting;

/// Loads the certificate chain and key (PEM) into an acceptor. Errors name the
/// file and what is wrong with it.
pub fn acceptor(cert_file: &Path, key_file: &Path) -> anyhow::Result<TlsAcceptor> {
    use anyhow::Context;
    let cert_setting = || Setting::new(&["tls", "cert_file"]);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| anyhow::anyhow!("{}: {e}", cert_file.display()))
        .context(cert_setting())?;
    if certs.is_empty() {
        return Err(anyhow::anyhow!(
            "{}: no certificate in it (expected PEM, -----BEGIN CERTIFICATE-----)",
            cert_file.display()
        ))
        .context(cert_setting());
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| {
            anyhow::anyhow!(
                "{}: {e} (expected a PEM private key, -----BEGIN PRIVATE KEY-----)",
                key_file.display()
            )
        })
        .context(Setting::new(&["tls", "key_file"]))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow::anyhow!("TLS setup: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| anyhow::anyhow!("the certificate and tls.key_file do not go together: {e}"))
        .context(cert_setting())?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The certificate in force, replaced on reload: a renewed certificate is taken
/// for new connections without a restart; connections already open keep theirs.
#[derive(Default)]
pub struct Certificates {
    current: std::sync::RwLock<Option<TlsAcceptor>>,
}

impl Certificates {
    pub fn new(acceptor: Option<TlsAcceptor>) -> Arc<Certificates> {
        Arc::new(Certificates {
            current: std::sync::RwLock::new(acceptor),
        })
    }

    /// The acceptor for a new TLS connection; None without TLS.
    pub fn get(&self) -> Option<TlsAcceptor> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn replace(&self, acceptor: Option<TlsAcceptor>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = acceptor;
    }
}

/// The acceptor a configuration asks for (None without `[tls]`).
pub fn configured(config: &crate::config::TlsConfig) -> anyhow::Result<Option<TlsAcceptor>> {
    match (&config.cert_file, &config.key_file) {
        (Some(cert), Some(key)) => acceptor(cert, key).map(Some),
        _ => Ok(None),
    }
}
