//! TLS on the agent's listener: the certificate and key of `tls:` (PEM files, mounted from a
//! Secret), read again when either file changes, so a renewed certificate (cert-manager,
//! a rotated Secret) is served without a restart. A renewal that does not load is logged and
//! the last good certificate stays.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use crate::config;

/// The listener's TLS, reloaded when its files change.
pub struct Tls {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: Mutex<Loaded>,
}

struct Loaded {
    stamps: (Option<SystemTime>, Option<SystemTime>),
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads `tls:`'s files; an error names the file and what is wrong with it.
    pub fn load(config: &config::Tls) -> Result<Tls, String> {
        let (cert_file, key_file) = (config.cert_file.clone(), config.key_file.clone());
        let stamps = stamps(&cert_file, &key_file);
        let acceptor = acceptor(&cert_file, &key_file)?;
        Ok(Tls {
            cert_file,
            key_file,
            current: Mutex::new(Loaded { stamps, acceptor }),
        })
    }

    /// The acceptor for a new connection: the files' current certificate.
    pub fn acceptor(&self) -> TlsAcceptor {
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = stamps(&self.cert_file, &self.key_file);
        if now != current.stamps {
            current.stamps = now;
            match acceptor(&self.cert_file, &self.key_file) {
                Ok(renewed) => {
                    current.acceptor = renewed;
                    info!(cert = %self.cert_file.display(), "TLS certificate reloaded");
                }
                Err(e) => {
                    warn!(error = %e, "TLS certificate changed but does not load; serving the previous one")
                }
            }
        }
        current.acceptor.clone()
    }
}

fn stamps(cert: &Path, key: &Path) -> (Option<SystemTime>, Option<SystemTime>) {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (modified(cert), modified(key))
}

fn acceptor(cert_file: &Path, key_file: &Path) -> Result<TlsAcceptor, String> {
    let read =
        |p: &Path| std::fs::read(p).map_err(|e| format!("reading {} (tls): {e}", p.display()));
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(cert_file)?)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            format!(
                "{} (tls.certFile) is not PEM certificates: {e}",
                cert_file.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!(
            "{} (tls.certFile) holds no certificate",
            cert_file.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&read(key_file)?).map_err(|e| {
        format!(
            "{} (tls.keyFile) holds no PEM private key: {e}",
            key_file.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            format!(
                "{} and {} (tls) do not make a certificate and its key: {e}",
                cert_file.display(),
                key_file.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
