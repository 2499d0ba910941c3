//! TLS on the agent's listener: the certificate and key of `tls:` (PEM files, mounted from a
//! Secret), read again when either file changes, so a renewed certificate (cert-manager,
//! a rotated Secret) is served without a restart. A renewal that does not load is logged and
//! the last good certificate stays. With a client CA ([`ClientCa`]), clients may also present
//! a certificate signed by it (the handshake verifies it; [`crate::auth`] reads who it names);
//! clients without one still connect, and present a bearer token instead.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::ServerConfig;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use crate::config;

/// The listener's TLS, reloaded when its files change.
pub struct Tls {
    cert_file: PathBuf,
    key_file: PathBuf,
    client_ca: ClientCa,
    current: Mutex<Loaded>,
}

/// The CA that clients' certificates must chain to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ClientCa {
    /// Client certificates are not asked for.
    #[default]
    None,
    /// `auth.clientCAFile`, read again when it changes.
    File(PathBuf),
    /// PEM certificates from elsewhere (the cluster's
    /// `kube-system/extension-apiserver-authentication`), named by `source` in errors.
    Pem {
        /// The CA certificates.
        pem: Vec<u8>,
        /// Where they came from.
        source: String,
    },
}

/// Why the listener's TLS does not load: the file, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file of `tls:` cannot be read.
    #[error("reading {path} (tls)")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `tls.certFile` is not PEM.
    #[error("{path} (tls.certFile) is not PEM certificates")]
    CertificatePem {
        /// The file.
        path: PathBuf,
        /// What the PEM reader said.
        source: pem::Error,
    },
    /// `tls.certFile` holds no certificate.
    #[error("{path} (tls.certFile) holds no certificate")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// `tls.keyFile` holds no private key.
    #[error("{path} (tls.keyFile) holds no PEM private key")]
    KeyPem {
        /// The file.
        path: PathBuf,
        /// What the PEM reader said.
        source: pem::Error,
    },
    /// The protocol versions cannot be set up.
    #[error("TLS")]
    Protocols {
        /// What rustls said.
        source: rustls::Error,
    },
    /// The certificate and the key do not go together.
    #[error("{cert} and {key} (tls) do not make a certificate and its key")]
    KeyMismatch {
        /// `tls.certFile`.
        cert: PathBuf,
        /// `tls.keyFile`.
        key: PathBuf,
        /// What rustls said.
        source: rustls::Error,
    },
    /// `auth.clientCAFile` cannot be read.
    #[error("reading {path} (auth.clientCAFile)")]
    ReadClientCa {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The client CA is not PEM.
    #[error("{origin} is not PEM certificates")]
    ClientCaPem {
        /// Where the client CA came from.
        origin: String,
        /// What the PEM reader said.
        source: pem::Error,
    },
    /// A client CA certificate cannot be used.
    #[error("{origin} holds a CA certificate that cannot be used")]
    ClientCaUnusable {
        /// Where the client CA came from.
        origin: String,
        /// What rustls said.
        source: rustls::Error,
    },
    /// The client CA holds no certificate.
    #[error("{origin} holds no CA certificate")]
    NoClientCa {
        /// Where the client CA came from.
        origin: String,
    },
    /// No verifier of client certificates can be made of the client CA.
    #[error("{origin}")]
    ClientVerifier {
        /// Where the client CA came from.
        origin: String,
        /// What rustls said.
        source: rustls::server::VerifierBuilderError,
    },
}

type Stamps = [Option<SystemTime>; 3];

struct Loaded {
    stamps: Stamps,
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
    /// Loads `tls:`'s files and the client CA; an error names the file and what is wrong
    /// with it.
    pub fn load(config: &config::Tls, client_ca: ClientCa) -> Result<Tls, TlsError> {
        let (cert_file, key_file) = (config.cert_file.clone(), config.key_file.clone());
        let stamps = stamps(&cert_file, &key_file, &client_ca);
        let acceptor = acceptor(&cert_file, &key_file, &client_ca)?;
        Ok(Tls {
            cert_file,
            key_file,
            client_ca,
            current: Mutex::new(Loaded { stamps, acceptor }),
        })
    }

    /// The acceptor for a new connection: the files' current certificate.
    pub fn acceptor(&self) -> TlsAcceptor {
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = stamps(&self.cert_file, &self.key_file, &self.client_ca);
        if now != current.stamps {
            current.stamps = now;
            match acceptor(&self.cert_file, &self.key_file, &self.client_ca) {
                Ok(renewed) => {
                    current.acceptor = renewed;
                    info!(cert = %self.cert_file.display(), "TLS certificate reloaded");
                }
                Err(e) => {
                    warn!(error = %crate::chain(&e), "TLS certificate changed but does not load; serving the previous one")
                }
            }
        }
        current.acceptor.clone()
    }
}

fn stamps(cert: &Path, key: &Path, client_ca: &ClientCa) -> Stamps {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let ca = match client_ca {
        ClientCa::File(path) => modified(path),
        _ => None,
    };
    [modified(cert), modified(key), ca]
}

/// The verifier of clients' certificates: those chaining to `client_ca`, or none at all.
fn client_verifier(
    client_ca: &ClientCa,
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> Result<Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>, TlsError> {
    let (pem, origin) = match client_ca {
        ClientCa::None => return Ok(None),
        ClientCa::File(path) => (
            std::fs::read(path).map_err(|source| TlsError::ReadClientCa {
                path: path.clone(),
                source,
            })?,
            format!("{} (auth.clientCAFile)", path.display()),
        ),
        ClientCa::Pem { pem, source } => (pem.clone(), source.clone()),
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|source| TlsError::ClientCaPem {
            origin: origin.clone(),
            source,
        })?;
        roots
            .add(cert)
            .map_err(|source| TlsError::ClientCaUnusable {
                origin: origin.clone(),
                source,
            })?;
    }
    if roots.is_empty() {
        return Err(TlsError::NoClientCa { origin });
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map(Some)
        .map_err(|source| TlsError::ClientVerifier { origin, source })
}

fn acceptor(
    cert_file: &Path,
    key_file: &Path,
    client_ca: &ClientCa,
) -> Result<TlsAcceptor, TlsError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| TlsError::Read {
            path: p.to_owned(),
            source,
        })
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(cert_file)?)
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::CertificatePem {
            path: cert_file.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_file.to_owned(),
        });
    }
    let key =
        PrivateKeyDer::from_pem_slice(&read(key_file)?).map_err(|source| TlsError::KeyPem {
            path: key_file.to_owned(),
            source,
        })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = client_verifier(client_ca, &provider)?;
    let builder = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Protocols { source })?;
    let builder = match verifier {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config =
        builder
            .with_single_cert(certs, key)
            .map_err(|source| TlsError::KeyMismatch {
                cert: cert_file.to_owned(),
                key: key_file.to_owned(),
                source,
            })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
