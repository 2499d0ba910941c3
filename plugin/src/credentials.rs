//! What the plugin shows an agent: the user's own kubeconfig credentials (the agent reviews a
//! token with the cluster, a TokenReview, or verifies a client certificate against the
//! cluster's client CA; then a SubjectAccessReview per request), and the CA it verifies the
//! agent's certificate against.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, anyhow, bail};
use kube::config::{AuthInfo, ExecConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use secrecy::ExposeSecret;

/// The bearer token of the kubeconfig user `info`: its `token`, its `tokenFile`, or what its
/// exec plugin prints (an `ExecCredential`), the sources kubectl uses. `None` when the user
/// has none (a client certificate, say: [`identity`]).
pub fn bearer(info: &AuthInfo) -> anyhow::Result<Option<String>> {
    if let Some(token) = &info.token {
        return Ok(Some(token.expose_secret().trim().to_owned()));
    }
    if let Some(file) = &info.token_file {
        let token = std::fs::read_to_string(file)
            .with_context(|| format!("reading the kubeconfig user's tokenFile {file}"))?;
        return Ok(Some(token.trim().to_owned()));
    }
    if let Some(exec) = &info.exec {
        return exec_token(exec).map(Some);
    }
    Ok(None)
}

/// Runs an exec credential plugin, as kubectl does, and returns its token.
fn exec_token(exec: &ExecConfig) -> anyhow::Result<String> {
    let command = exec
        .command
        .as_deref()
        .ok_or_else(|| anyhow!("the kubeconfig user's exec plugin names no command"))?;
    let api_version = exec
        .api_version
        .clone()
        .unwrap_or_else(|| "client.authentication.k8s.io/v1".into());
    let mut cmd = std::process::Command::new(command);
    cmd.args(exec.args.iter().flatten());
    for pair in exec.env.iter().flatten() {
        if let (Some(name), Some(value)) = (pair.get("name"), pair.get("value")) {
            cmd.env(name, value);
        }
    }
    for name in exec.drop_env.iter().flatten() {
        cmd.env_remove(name);
    }
    cmd.env(
        "KUBERNETES_EXEC_INFO",
        serde_json::json!({
            "apiVersion": api_version,
            "kind": "ExecCredential",
            "spec": {"interactive": false}
        })
        .to_string(),
    );
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| {
            format!(
                "running the kubeconfig user's exec plugin {command}{}",
                exec.install_hint
                    .as_deref()
                    .map(|h| format!(" ({h})"))
                    .unwrap_or_default()
            )
        })?;
    if !out.status.success() {
        bail!(
            "the kubeconfig user's exec plugin {command} failed ({}); log in again",
            out.status
        );
    }
    let credential: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!("reading what exec plugin {command} printed (an ExecCredential)")
    })?;
    credential["status"]["token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| {
            anyhow!(
                "exec plugin {command} gave no status.token; kubectl-debug presents an exec plugin's token, or the kubeconfig user's client-certificate and client-key"
            )
        })
}

/// The kubeconfig user's client certificate (chain) and key, which kubectl presents to the
/// API server, and kubectl-debug to agents over TLS.
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("certificates", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// The client certificate and key of the kubeconfig user `info`
/// (`client-certificate-data`/`client-key-data`, else the files `client-certificate`/
/// `client-key`), or `None` when it has none.
pub fn identity(info: &AuthInfo) -> anyhow::Result<Option<Identity>> {
    let cert = pem_of(
        "client-certificate",
        info.client_certificate_data.as_deref(),
        info.client_certificate.as_deref(),
    )?;
    let key = pem_of(
        "client-key",
        info.client_key_data.as_ref().map(|k| k.expose_secret()),
        info.client_key.as_deref(),
    )?;
    let (cert, key) = match (cert, key) {
        (None, None) => return Ok(None),
        (Some(cert), Some(key)) => (cert, key),
        (Some(_), None) => {
            bail!("the kubeconfig user has a client-certificate but no client-key; add its key")
        }
        (None, Some(_)) => {
            bail!(
                "the kubeconfig user has a client-key but no client-certificate; add the certificate"
            )
        }
    };
    let chain = CertificateDer::pem_slice_iter(&cert)
        .collect::<Result<Vec<_>, _>>()
        .context("the kubeconfig user's client-certificate is not PEM certificates")?;
    if chain.is_empty() {
        bail!("the kubeconfig user's client-certificate holds no certificate");
    }
    let key = PrivateKeyDer::from_pem_slice(&key)
        .context("the kubeconfig user's client-key holds no PEM private key")?;
    Ok(Some(Identity { chain, key }))
}

/// The PEM a kubeconfig user gives as `<what>-data` (base64) or in the file `<what>`.
fn pem_of(what: &str, data: Option<&str>, file: Option<&str>) -> anyhow::Result<Option<Vec<u8>>> {
    use base64::Engine as _;
    if let Some(data) = data.filter(|d| !d.trim().is_empty()) {
        let pem = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .with_context(|| format!("the kubeconfig user's {what}-data is not base64"))?;
        return Ok(Some(pem));
    }
    match file.filter(|f| !f.is_empty()) {
        Some(file) => std::fs::read(file)
            .map(Some)
            .with_context(|| format!("reading the kubeconfig user's {what} {file}")),
        None => Ok(None),
    }
}

/// TLS to an agent: the CA its certificate must chain to, and the name it must carry.
#[derive(Clone)]
pub struct AgentTls {
    /// Trust for agents' certificates.
    pub config: Arc<rustls::ClientConfig>,
    /// The name verified: the node's IP (direct) or the agents' service-style name
    /// (port-forward).
    pub name: ServerName<'static>,
}

impl std::fmt::Debug for AgentTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentTls")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The name an agent's certificate must carry when reached through a port-forward.
pub fn service_name(agent_namespace: &str) -> String {
    format!("kubectl-debug-agent.{agent_namespace}.svc")
}

/// A client configuration trusting the CA certificates in `pem` (from `source`, for errors),
/// presenting `identity` when there is one.
pub fn trusting(
    pem: &[u8],
    source: &str,
    identity: Option<&Identity>,
) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.with_context(|| format!("{source} is not PEM certificates"))?;
        roots
            .add(cert)
            .with_context(|| format!("{source} holds a certificate rustls cannot use"))?;
    }
    if roots.is_empty() {
        bail!("{source} holds no CA certificate");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS")?
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some(identity) => builder
            .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
            .context("the kubeconfig user's client-certificate and client-key do not match")?,
    };
    Ok(Arc::new(config))
}

/// [`trusting`] the CA file `path`.
pub fn trusting_file(
    path: &Path,
    identity: Option<&Identity>,
) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let pem = std::fs::read(path)
        .with_context(|| format!("reading the agents' CA {} (--agent-ca)", path.display()))?;
    trusting(&pem, &path.display().to_string(), identity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_come_from_the_token_the_file_or_the_exec_plugin() {
        let mut info = AuthInfo::default();
        assert_eq!(bearer(&info).unwrap(), None);
        let dir = std::env::temp_dir().join(format!("kdbg-cred-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "from-file\n").unwrap();
        info.token_file = Some(file.display().to_string());
        assert_eq!(bearer(&info).unwrap().as_deref(), Some("from-file"));
        info.token = Some("inline".to_string().into());
        assert_eq!(bearer(&info).unwrap().as_deref(), Some("inline"));

        let exec: ExecConfig = serde_json::from_value(serde_json::json!({
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": "sh",
            "args": ["-c", "printf '{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\",\"status\":{\"token\":\"%s\"}}' \"$WHO\""],
            "env": [{"name": "WHO", "value": "from-exec"}]
        }))
        .unwrap();
        let info = AuthInfo {
            exec: Some(exec),
            ..AuthInfo::default()
        };
        assert_eq!(bearer(&info).unwrap().as_deref(), Some("from-exec"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_ca_file_without_certificates_is_named() {
        let err = trusting(b"nothing here", "ca.pem", None)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("ca.pem holds no CA certificate"), "{err}");
    }
}
