//! What the plugin shows an agent: the user's own kubeconfig credentials (the agent reviews
//! them with the cluster: a TokenReview, then a SubjectAccessReview per request), and the CA
//! it verifies the agent's certificate against.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, anyhow, bail};
use kube::config::{AuthInfo, ExecConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use secrecy::ExposeSecret;

/// The bearer token of the kubeconfig user `info`: its `token`, its `tokenFile`, or what its
/// exec plugin prints (an `ExecCredential`), the sources kubectl uses. `None` when the user
/// has none (a client certificate, say: agents accept tokens only).
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
                "exec plugin {command} gave no status.token; kubectl-debug's agents accept bearer tokens only"
            )
        })
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

/// A client configuration trusting the CA certificates in `pem` (from `source`, for errors).
pub fn trusting(pem: &[u8], source: &str) -> anyhow::Result<Arc<rustls::ClientConfig>> {
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
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// [`trusting`] the CA file `path`.
pub fn trusting_file(path: &Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let pem = std::fs::read(path)
        .with_context(|| format!("reading the agents' CA {} (--agent-ca)", path.display()))?;
    trusting(&pem, &path.display().to_string())
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
        let err = trusting(b"nothing here", "ca.pem")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("ca.pem holds no CA certificate"), "{err}");
    }
}
