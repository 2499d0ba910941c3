//! A registry host's own TLS, as its `hosts.toml` (or k3s's `registries.yaml`) says: CA
//! certificates trusted besides the system's, a client certificate, or no verification at all
//! (`skip_verify`, for a lab's mirror).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::containerd::hosts::RegistryHost;

/// Why a host's TLS settings cannot be used: the file and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: host {url}: {what}; fix the file, or remove the setting")]
pub struct HostTlsError {
    /// Where the host is configured.
    pub origin: String,
    /// The host.
    pub url: String,
    /// What is wrong.
    pub what: String,
}

/// The rustls configuration for `host`, when its settings differ from the defaults (the
/// system's CA certificates, no client certificate); `None` when they do not.
pub fn client_config(host: &RegistryHost) -> Result<Option<rustls::ClientConfig>, HostTlsError> {
    if host.ca.is_empty() && host.client.is_empty() && !host.skip_verify {
        return Ok(None);
    }
    let fail = |what: String| HostTlsError {
        origin: host.origin.clone(),
        url: host.url.clone(),
        what,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(e.to_string()))?;
    let builder = if host.skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
    } else {
        let mut roots = rustls::RootCertStore::empty();
        // The system's, as for every other host (none found is not an error here: the
        // configured CAs may be all this host needs).
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        for path in &host.ca {
            let shown = path.display();
            let pem = std::fs::read(path).map_err(|e| fail(format!("reading ca {shown}: {e}")))?;
            let mut added = 0;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| fail(format!("ca {shown} is not PEM: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| fail(format!("ca {shown}: {e}")))?;
                added += 1;
            }
            if added == 0 {
                return Err(fail(format!("ca {shown} holds no certificate")));
            }
        }
        builder.with_root_certificates(roots)
    };
    let Some(client) = host.client.first() else {
        return Ok(Some(builder.with_no_client_auth()));
    };
    let shown = client.cert.display();
    let pem =
        std::fs::read(&client.cert).map_err(|e| fail(format!("reading client {shown}: {e}")))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| fail(format!("client {shown} is not PEM: {e}")))?;
    let key_path = client.key.as_ref().unwrap_or(&client.cert);
    let key_pem = std::fs::read(key_path)
        .map_err(|e| fail(format!("reading {}: {e}", key_path.display())))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| fail(format!("no private key in {}: {e}", key_path.display())))?;
    builder
        .with_client_auth_cert(chain, key)
        .map(Some)
        .map_err(|e| fail(format!("client {shown}: {e}")))
}

/// `skip_verify`: any certificate and name are accepted; the handshake's signatures are still
/// checked, so the connection is at least to whoever holds the certificate's key.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
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
        rustls::crypto::verify_tls13_signature(
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
