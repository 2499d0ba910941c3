//! Which hosts to try, in order, when pulling from a registry: the node's registry host
//! configuration read the way containerd's own client reads it, plus the agent's own mirrors.
//!
//! Three sources, read at every pull (containerd rereads its files too, so an edit applies
//! without a restart):
//!
//! 1. containerd's `config_path` directory (usually `/etc/containerd/certs.d`): one
//!    `hosts.toml` per registry, as containerd's `core/remotes/docker/config/hosts.go`
//!    describes it (see `docs/hosts.md` in containerd's tree).
//! 2. k3s's `registries.yaml` (`/etc/rancher/k3s/registries.yaml`), which k3s turns into such
//!    `hosts.toml` files at start (k3s `pkg/agent/containerd/config.go`); used for a registry
//!    only when `config_path` has nothing for it.
//! 3. The agent's `runtime.mirrors` ([`MirrorsConfig`]).
//!
//! Where containerd logs a broken file and carries on without it, we refuse: a pull that
//! silently skips the node's mirror may reach a registry the node was configured never to
//! reach.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::credentials::{Credentials, decode_auth};

/// Where containerd looks for `hosts.toml` files unless configured otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/containerd/certs.d";
/// Where k3s reads its registry configuration.
pub const K3S_REGISTRIES: &str = "/etc/rancher/k3s/registries.yaml";
/// Docker Hub as images name it.
const DOCKER_HUB: &str = "docker.io";
/// The host that serves Docker Hub's registry API.
const DOCKER_HUB_HOST: &str = "registry-1.docker.io";
/// The directory containerd falls back to when a registry has none of its own.
const DEFAULT_DIR: &str = "_default";
/// [`RegistryHost::origin`] of an upstream no file configured.
pub const UPSTREAM: &str = "upstream";
/// [`RegistryHost::origin`] of the agent's own mirrors.
pub const RUNTIME_MIRRORS: &str = "runtime.mirrors";

/// One host to try for a registry, with how to speak to it.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryHost {
    /// `scheme://host[:port]`.
    pub url: String,
    /// The API root on that host: `/v2` unless the configuration overrides it (`override_path`),
    /// e.g. `/some/prefix/v2` or `/v2/upstream`. Requests go to `url + path + "/<name>/..."`.
    pub path: String,
    /// Whether blobs and manifests by digest may be pulled from this host. Hosts without it
    /// are kept so messages can name them, but must be skipped for pulls.
    pub pull: bool,
    /// Whether this host may be asked which digest a tag names (a trusted operation).
    /// Without it, ask it for manifests by digest only.
    pub resolve: bool,
    /// Whether images may be pushed to this host (not used by the agent; kept for messages).
    pub push: bool,
    /// CA certificate files to trust besides the system's, absolute.
    pub ca: Vec<PathBuf>,
    /// Client certificates (TLS client authentication), absolute. Parsed and kept; the
    /// registry client does not present them yet, so a caller that needs them should refuse
    /// the host rather than connect without them.
    pub client: Vec<ClientCertificate>,
    /// Whether the server's certificate chain and name go unchecked.
    pub skip_verify: bool,
    /// Extra request headers, in file order; a name given several values appears once per
    /// value.
    pub headers: Vec<(String, String)>,
    /// The longest a connection attempt may take (`dial_timeout`), if configured.
    pub dial_timeout: Option<Duration>,
    /// Credentials configured for this host (k3s `configs.<host>.auth`); `None` leaves the
    /// choice to the caller's own credentials.
    pub credentials: Option<Credentials>,
    /// Where the host comes from, for messages: a file's path, [`RUNTIME_MIRRORS`] or
    /// [`UPSTREAM`].
    pub origin: String,
}

impl fmt::Debug for RegistryHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Credentials' own Debug redacts the password; spelled out so no field is added
        // here without a thought.
        f.debug_struct("RegistryHost")
            .field("url", &self.url)
            .field("path", &self.path)
            .field("pull", &self.pull)
            .field("resolve", &self.resolve)
            .field("push", &self.push)
            .field("ca", &self.ca)
            .field("client", &self.client)
            .field("skip_verify", &self.skip_verify)
            .field("headers", &self.headers)
            .field("dial_timeout", &self.dial_timeout)
            .field("credentials", &self.credentials)
            .field("origin", &self.origin)
            .finish()
    }
}

impl RegistryHost {
    /// A host with containerd's defaults: every capability, path `/v2`, nothing else.
    fn new(url: String, path: String, origin: &str) -> RegistryHost {
        RegistryHost {
            url,
            path,
            pull: true,
            resolve: true,
            push: true,
            ca: Vec::new(),
            client: Vec::new(),
            skip_verify: false,
            headers: Vec::new(),
            dial_timeout: None,
            credentials: None,
            origin: origin.to_owned(),
        }
    }
}

/// A client certificate and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The certificate file (PEM).
    pub cert: PathBuf,
    /// The key file; `None` when the certificate file holds the key too.
    pub key: Option<PathBuf>,
}

/// Registry host configuration that cannot be used: the pull is refused rather than made with
/// half of it.
#[derive(Debug, thiserror::Error)]
pub enum HostsError {
    /// A configuration file exists but could not be read.
    #[error("reading registry host configuration {path}")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A `hosts.toml` is not TOML, or not containerd's schema.
    #[error(
        "{path}:{line}:{column}: {message}; fix the file (containerd's docs/hosts.md describes it) or move it away"
    )]
    HostsToml {
        /// The file.
        path: PathBuf,
        /// Where, from 1.
        line: usize,
        /// Where on the line, from 1, in characters.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// k3s's `registries.yaml` is not YAML, or not k3s's schema (the parser's message names
    /// the line).
    #[error("{path} is not a k3s registries.yaml (mirrors, configs); fix the file or move it away")]
    RegistriesYaml {
        /// The file.
        path: PathBuf,
        /// What the YAML parser said.
        source: Box<serde_saphyr::Error>,
    },
    /// An entry of `registries.yaml` that cannot be used.
    #[error("{path}: {message}; fix the entry for {registry:?}")]
    K3sEntry {
        /// The file.
        path: PathBuf,
        /// The entry's registry (or host, for `configs`).
        registry: String,
        /// What is wrong.
        message: String,
    },
    /// A mirror rewrites image names, which we cannot do (no regular expressions here).
    #[error(
        "{origin}: the mirrors of {registry:?} rewrite image names, which the agent's registry client does not support; remove the rewrite or pull the image under its mirrored name"
    )]
    RewriteUnsupported {
        /// The file.
        origin: String,
        /// The registry.
        registry: String,
    },
    /// An entry of the agent's `runtime.mirrors` that cannot be used.
    #[error("runtime.mirrors.{registry:?}: {message}; fix the agent's configuration")]
    Mirrors {
        /// The registry.
        registry: String,
        /// What is wrong.
        message: String,
    },
}

/// The agent's own mirrors (`runtime.mirrors`), by registry as images name it (`docker.io`,
/// `registry.example.com:5000`); `"*"` serves every registry without an entry of its own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct MirrorsConfig(pub BTreeMap<String, RegistryMirrors>);

/// The agent's mirrors of one registry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegistryMirrors {
    /// Replaces the upstream (`https://<registry>`), as `server` in a `hosts.toml`; it wins
    /// over the node's. A URL; `https://` when no scheme is given.
    #[serde(default)]
    pub server: Option<String>,
    /// Mirrors, tried in order after the node's and before the upstream.
    #[serde(default)]
    pub hosts: Vec<MirrorHost>,
}

/// One of the agent's mirrors.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MirrorHost {
    /// `scheme://host[:port][/path]`; `https://` when no scheme is given.
    pub url: String,
    /// `pull`, `resolve`, `push`, `referrers`; all of them when absent (containerd's default).
    #[serde(default)]
    pub capabilities: Option<Vec<String>>,
    /// CA certificate files to trust for this host.
    #[serde(default)]
    pub ca: Option<Vec<PathBuf>>,
    /// Whether the server's certificate goes unchecked.
    #[serde(default)]
    pub skip_verify: bool,
    /// Whether the URL's path is the API root as is (no `/v2` appended).
    #[serde(default)]
    pub override_path: bool,
    /// Extra request headers.
    #[serde(default)]
    pub header: BTreeMap<String, String>,
}

/// Where a node's registry host configuration lives, and the agent's own mirrors.
#[derive(Debug, Clone, Default)]
pub struct HostsSources {
    /// containerd's `config_path` ([`DEFAULT_CONFIG_PATH`] on most nodes); `None` when
    /// containerd is not configured with one.
    pub config_path: Option<PathBuf>,
    /// k3s's `registries.yaml` ([`K3S_REGISTRIES`]); `None` off k3s.
    pub k3s_registries: Option<PathBuf>,
    /// The agent's `runtime.mirrors`.
    pub mirrors: MirrorsConfig,
}

impl HostsSources {
    /// Reads the configuration for `registry` (as images name it: `docker.io`,
    /// `registry.example.com:5000`) now, and gives the hosts to try in order: the node's
    /// mirrors (from `config_path`, or else from `registries.yaml`), then the agent's
    /// `runtime.mirrors`, then the upstream last. `insecure` lists registries spoken to over
    /// plain HTTP: the default upstream of such a registry is `http://` (Docker Hub's never
    /// is).
    ///
    /// A registry configured nowhere gives one host, the upstream: `https://registry-1.docker.io`
    /// for `docker.io`, else `https://<registry>`, path `/v2`.
    pub fn hosts_for(
        &self,
        registry: &str,
        insecure: &[String],
    ) -> Result<Vec<RegistryHost>, HostsError> {
        let mut node = None;
        if let Some(root) = &self.config_path
            && let Some(dir) = host_dir(root, registry)?
        {
            node = Some(load_host_dir(&dir)?);
        }
        if node.is_none()
            && let Some(file) = &self.k3s_registries
        {
            node = k3s_hosts(file, registry)?;
        }
        let mut hosts = node.unwrap_or_default();
        // The node's upstream is the last of its hosts, with its server's settings; without a
        // server, the registry itself (containerd's ConfigureHosts fills it in the same way).
        let node_upstream = hosts.pop().map(|mut host| {
            if host.url.is_empty() {
                host.url = default_upstream(registry, insecure, UPSTREAM).url;
            }
            host
        });
        let (agent_mirrors, agent_server) = self.agent_hosts(registry)?;
        hosts.extend(agent_mirrors);
        let upstream = match (agent_server, node_upstream) {
            (Some(server), _) => server,
            (None, Some(node)) => node,
            (None, None) => default_upstream(registry, insecure, UPSTREAM),
        };
        hosts.push(upstream);
        Ok(hosts)
    }

    /// The agent's mirrors of `registry` and its replacement upstream, if any.
    fn agent_hosts(
        &self,
        registry: &str,
    ) -> Result<(Vec<RegistryHost>, Option<RegistryHost>), HostsError> {
        let (key, entry) = match self.mirrors.0.get_key_value(registry) {
            Some(found) => found,
            None => match self.mirrors.0.get_key_value("*") {
                Some(found) => found,
                None => return Ok((Vec::new(), None)),
            },
        };
        let bad = |message: String| HostsError::Mirrors {
            registry: key.clone(),
            message,
        };
        let mut hosts = Vec::with_capacity(entry.hosts.len());
        for mirror in &entry.hosts {
            let (url, path) = host_url(&mirror.url, mirror.override_path).map_err(&bad)?;
            let mut host = RegistryHost::new(url, path, RUNTIME_MIRRORS);
            if let Some(capabilities) = &mirror.capabilities {
                set_capabilities(&mut host, capabilities).map_err(&bad)?;
            }
            host.ca = mirror.ca.clone().unwrap_or_default();
            host.skip_verify = mirror.skip_verify;
            host.headers = mirror
                .header
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            hosts.push(host);
        }
        let server = match &entry.server {
            Some(server) => {
                let (url, path) = host_url(server, false).map_err(&bad)?;
                Some(RegistryHost::new(url, path, RUNTIME_MIRRORS))
            }
            None => None,
        };
        Ok((hosts, server))
    }
}

/// The registry's own host when nothing configures it (containerd's `ConfigureHosts` with no
/// host directory): Docker Hub's API host for `docker.io`, HTTPS unless `insecure` lists it.
///
/// containerd also speaks plain HTTP to `localhost` on ports other than 443 unasked; we keep
/// to the agent's `insecureRegistries` for that, as the agent did before.
fn default_upstream(registry: &str, insecure: &[String], origin: &str) -> RegistryHost {
    let url = if registry == DOCKER_HUB {
        format!("https://{DOCKER_HUB_HOST}")
    } else if insecure.iter().any(|i| i == registry) {
        format!("http://{registry}")
    } else {
        format!("https://{registry}")
    };
    RegistryHost::new(url, "/v2".to_owned(), origin)
}

/// The directory of `registry` under `root`, as containerd's `hostPaths` (config_unix.go) and
/// `HostDirFromRoot` find it: `host_port_` for a registry with a port, then the name as is,
/// then `_default`; the first that exists.
fn host_dir(root: &Path, registry: &str) -> Result<Option<PathBuf>, HostsError> {
    let mut candidates = Vec::with_capacity(3);
    // containerd's hostDirectory: the last ':' (not a leading one) becomes "_port_".
    if let Some(colon) = registry.rfind(':').filter(|&i| i > 0) {
        candidates.push(format!(
            "{}_{}_",
            &registry[..colon],
            &registry[colon + 1..]
        ));
    }
    candidates.push(registry.to_owned());
    candidates.push(DEFAULT_DIR.to_owned());
    for name in candidates {
        // A registry name is a host and port: never a path that leaves the root.
        if name.contains('/') || name == ".." || name == "." {
            continue;
        }
        let dir = root.join(name);
        match std::fs::metadata(&dir) {
            Ok(_) => return Ok(Some(dir)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(HostsError::Read { path: dir, source }),
        }
    }
    Ok(None)
}

/// A host directory's hosts, server last (containerd's `loadHostDir`): from its `hosts.toml`,
/// or from Docker-style certificate files when there is none. The server's URL is empty when
/// the file names none (the caller puts the default upstream there).
fn load_host_dir(dir: &Path) -> Result<Vec<RegistryHost>, HostsError> {
    let file = dir.join("hosts.toml");
    let text = match std::fs::read(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(source) => return Err(HostsError::Read { path: file, source }),
    };
    if text.is_empty() {
        return load_cert_files(dir);
    }
    let text = String::from_utf8(text).map_err(|e| {
        let (line, column) = line_column(
            &String::from_utf8_lossy(e.as_bytes()),
            e.utf8_error().valid_up_to(),
        );
        HostsError::HostsToml {
            path: file.clone(),
            line,
            column,
            message: "not UTF-8".to_owned(),
        }
    })?;
    HostsFile {
        path: &file,
        dir,
        text: &text,
    }
    .parse()
}

/// A host directory without `hosts.toml`, Docker's way (containerd's `loadCertFiles`): `*.crt`
/// are CA certificates, `*.cert` client certificates with the `*.key` of the same name if
/// there is one. All apply to the upstream.
fn load_cert_files(dir: &Path) -> Result<Vec<RegistryHost>, HostsError> {
    let read_error = |source| HostsError::Read {
        path: dir.to_owned(),
        source,
    };
    let mut host = RegistryHost::new(String::new(), "/v2".to_owned(), &dir.display().to_string());
    let mut names = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry.map_err(read_error)?;
                if entry.file_type().map_err(read_error)?.is_dir() {
                    continue;
                }
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        // `_default` may be a file, or gone since we looked: nothing to read then.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) => {}
        Err(e) => return Err(read_error(e)),
    }
    // containerd lists the directory sorted (os.ReadDir); so do we.
    names.sort();
    for name in names {
        if name.ends_with(".crt") {
            host.ca.push(dir.join(&name));
        }
        if let Some(stem) = name.strip_suffix(".cert") {
            let key = dir.join(format!("{stem}.key"));
            host.client.push(ClientCertificate {
                cert: dir.join(&name),
                key: key.exists().then_some(key),
            });
        }
    }
    Ok(vec![host])
}

/// A `hosts.toml` being read.
struct HostsFile<'a> {
    /// The file, for messages.
    path: &'a Path,
    /// Its directory: relative paths in it are relative to this.
    dir: &'a Path,
    /// Its text.
    text: &'a str,
}

/// The settings a `[host."..."]` table and the top level share.
#[derive(Default)]
struct Settings {
    capabilities: Option<(bool, bool, bool)>,
    ca: Vec<PathBuf>,
    client: Vec<ClientCertificate>,
    skip_verify: bool,
    override_path: bool,
    headers: Vec<(String, String)>,
    dial_timeout: Option<Duration>,
}

impl HostsFile<'_> {
    /// The hosts, in file order, then the server (containerd's `parseHostsFile`).
    ///
    /// containerd keeps the `[host."..."]` tables in the order their headers appear
    /// (`getSortedHosts` walks the parse tree); we sort them by where their key first appears,
    /// from toml's spans, so toml's `preserve_order` feature is not needed.
    fn parse(&self) -> Result<Vec<RegistryHost>, HostsError> {
        let document = DeTable::parse(self.text).map_err(|e| {
            let at = e.span().map_or(0, |s| s.start);
            self.error(at..at, e.message().trim_end().to_owned())
        })?;
        let document = document.get_ref();
        let mut server = None;
        let mut top = Settings::default();
        let mut mirrors = Vec::new();
        for (key, value) in document.iter() {
            match key.get_ref().as_ref() {
                "server" => server = Some((self.string(value, "server")?, value.span())),
                "host" => {
                    let DeValue::Table(table) = value.get_ref() else {
                        return Err(self.error(value.span(), "host must be a table of hosts"));
                    };
                    for (url, settings) in table.iter() {
                        mirrors.push((url, settings));
                    }
                }
                name => {
                    if !self.setting(name, key, value, &mut top)? {
                        return Err(self.unknown(key, "at the top level"));
                    }
                }
            }
        }
        mirrors.sort_by_key(|(url, _)| url.span().start);
        let mut hosts = Vec::with_capacity(mirrors.len() + 1);
        for (url, value) in mirrors {
            let DeValue::Table(table) = value.get_ref() else {
                return Err(self.error(
                    value.span(),
                    format!("host.{:?} must be a table", url.get_ref()),
                ));
            };
            let mut settings = Settings::default();
            for (key, value) in table.iter() {
                if !self.setting(key.get_ref(), key, value, &mut settings)? {
                    return Err(self.unknown(key, &format!("in host.{:?}", url.get_ref())));
                }
            }
            let (base, path) = host_url(url.get_ref(), settings.override_path)
                .map_err(|message| self.error(url.span(), message))?;
            hosts.push(self.host(base, path, settings, true));
        }
        match server {
            Some((server, span)) if !server.is_empty() => {
                let (base, path) = host_url(&server, top.override_path)
                    .map_err(|message| self.error(span, message))?;
                hosts.push(self.host(base, path, top, true));
            }
            // No server: containerd fills in the registry itself, with every capability and
            // path /v2 whatever the top level says; the other settings still apply.
            _ => hosts.push(self.host(String::new(), "/v2".to_owned(), top, false)),
        }
        Ok(hosts)
    }

    /// A host from its URL and settings; `capabilities` false ignores the configured ones.
    fn host(
        &self,
        url: String,
        path: String,
        settings: Settings,
        capabilities: bool,
    ) -> RegistryHost {
        let mut host = RegistryHost::new(url, path, &self.path.display().to_string());
        if let (true, Some((pull, resolve, push))) = (capabilities, settings.capabilities) {
            (host.pull, host.resolve, host.push) = (pull, resolve, push);
        }
        host.ca = settings.ca;
        host.client = settings.client;
        host.skip_verify = settings.skip_verify;
        host.headers = settings.headers;
        host.dial_timeout = settings.dial_timeout;
        host
    }

    /// Reads one of the shared settings into `into`; false if `name` is none of them.
    fn setting(
        &self,
        name: &str,
        key: &Spanned<toml::de::DeString<'_>>,
        value: &Spanned<DeValue<'_>>,
        into: &mut Settings,
    ) -> Result<bool, HostsError> {
        match name {
            "capabilities" => {
                let names = self.strings(value, name)?;
                // An empty list means the default, as in containerd.
                if !names.is_empty() {
                    let mut host = RegistryHost::new(String::new(), String::new(), "");
                    set_capabilities(&mut host, &names)
                        .map_err(|message| self.error(value.span(), message))?;
                    into.capabilities = Some((host.pull, host.resolve, host.push));
                }
            }
            "ca" => {
                into.ca = self
                    .string_or_strings(value, name)?
                    .iter()
                    .map(|p| absolute(self.dir, p))
                    .collect();
            }
            "client" => into.client = self.client(value)?,
            "skip_verify" => into.skip_verify = self.boolean(value, name)?,
            "override_path" => into.override_path = self.boolean(value, name)?,
            "header" => into.headers = self.headers(value)?,
            "dial_timeout" => {
                let text = self.string(value, name)?;
                let timeout = go_duration(&text).ok_or_else(|| {
                    self.error(
                        value.span(),
                        format!(
                            "dial_timeout {text:?} is not a duration such as \"1s\" or \"500ms\""
                        ),
                    )
                })?;
                into.dial_timeout = Some(timeout);
            }
            // k3s's containerd reads `rewrite` tables that k3s writes from registries.yaml.
            "rewrite" => {
                return Err(self.error(
                    key.span(),
                    "rewrite (k3s's image name rewrites) is not supported by the agent's registry client; remove it or pull the image under its mirrored name",
                ));
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// `client`: a path, a list of paths, or a list of `[cert, key]` pairs.
    fn client(&self, value: &Spanned<DeValue<'_>>) -> Result<Vec<ClientCertificate>, HostsError> {
        let one = |cert: &str| ClientCertificate {
            cert: absolute(self.dir, cert),
            key: None,
        };
        match value.get_ref() {
            DeValue::String(cert) => Ok(vec![one(cert)]),
            DeValue::Array(items) => items
                .iter()
                .map(|item| match item.get_ref() {
                    DeValue::String(cert) => Ok(one(cert)),
                    DeValue::Array(_) => {
                        let pair = self.strings(item, "client")?;
                        let [cert, key] = pair.as_slice() else {
                            return Err(self.error(
                                item.span(),
                                "a client pair is [\"cert file\", \"key file\"]",
                            ));
                        };
                        // An empty key means the certificate file holds the key (docs/hosts.md).
                        Ok(ClientCertificate {
                            cert: absolute(self.dir, cert),
                            key: (!key.is_empty()).then(|| absolute(self.dir, key)),
                        })
                    }
                    _ => Err(self.error(
                        item.span(),
                        "client entries are paths or [\"cert file\", \"key file\"] pairs",
                    )),
                })
                .collect(),
            _ => Err(self.error(
                value.span(),
                "client must be a path, a list of paths, or a list of [cert, key] pairs",
            )),
        }
    }

    /// `[header]`: names with a string or a list of strings each, in file order.
    fn headers(&self, value: &Spanned<DeValue<'_>>) -> Result<Vec<(String, String)>, HostsError> {
        let DeValue::Table(table) = value.get_ref() else {
            return Err(self.error(value.span(), "header must be a table of names and values"));
        };
        let mut entries: Vec<_> = table.iter().collect();
        entries.sort_by_key(|(name, _)| name.span().start);
        let mut headers = Vec::new();
        for (name, values) in entries {
            let what = format!("header {:?}", name.get_ref());
            for v in self.string_or_strings(values, &what)? {
                headers.push((name.get_ref().to_string(), v));
            }
        }
        Ok(headers)
    }

    fn string(&self, value: &Spanned<DeValue<'_>>, what: &str) -> Result<String, HostsError> {
        match value.get_ref() {
            DeValue::String(s) => Ok(s.to_string()),
            _ => Err(self.error(value.span(), format!("{what} must be a string"))),
        }
    }

    fn boolean(&self, value: &Spanned<DeValue<'_>>, what: &str) -> Result<bool, HostsError> {
        match value.get_ref() {
            DeValue::Boolean(b) => Ok(*b),
            _ => Err(self.error(value.span(), format!("{what} must be true or false"))),
        }
    }

    fn strings(&self, value: &Spanned<DeValue<'_>>, what: &str) -> Result<Vec<String>, HostsError> {
        match value.get_ref() {
            DeValue::Array(items) => items
                .iter()
                .map(|item| match item.get_ref() {
                    DeValue::String(s) => Ok(s.to_string()),
                    _ => Err(self.error(item.span(), format!("{what} must list strings"))),
                })
                .collect(),
            _ => Err(self.error(value.span(), format!("{what} must be a list of strings"))),
        }
    }

    fn string_or_strings(
        &self,
        value: &Spanned<DeValue<'_>>,
        what: &str,
    ) -> Result<Vec<String>, HostsError> {
        match value.get_ref() {
            DeValue::String(s) => Ok(vec![s.to_string()]),
            DeValue::Array(_) => self.strings(value, what),
            _ => Err(self.error(
                value.span(),
                format!("{what} must be a string or a list of strings"),
            )),
        }
    }

    fn unknown(&self, key: &Spanned<toml::de::DeString<'_>>, place: &str) -> HostsError {
        self.error(
            key.span(),
            format!(
                "unknown key {:?} {place} (known: server, host, capabilities, ca, client, skip_verify, override_path, header, dial_timeout)",
                key.get_ref()
            ),
        )
    }

    fn error(&self, span: Range<usize>, message: impl Into<String>) -> HostsError {
        let (line, column) = line_column(self.text, span.start);
        HostsError::HostsToml {
            path: self.path.to_owned(),
            line,
            column,
            message: message.into(),
        }
    }
}

/// Line and column (from 1; the column in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

/// `path` made absolute against `dir` (containerd's `makeAbsPath`).
fn absolute(dir: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_owned()
    } else {
        dir.join(path)
    }
}

/// Sets a host's capabilities from their names (containerd's `parseHostConfig`): `pull`,
/// `resolve`, `push`, `referrers` (accepted, not used), any case.
fn set_capabilities(host: &mut RegistryHost, names: &[String]) -> Result<(), String> {
    (host.pull, host.resolve, host.push) = (false, false, false);
    for name in names {
        match name.to_ascii_lowercase().as_str() {
            "pull" => host.pull = true,
            "resolve" => host.resolve = true,
            "push" => host.push = true,
            "referrers" => {}
            _ => {
                return Err(format!(
                    "unknown capability {name:?} (known: pull, resolve, push, referrers)"
                ));
            }
        }
    }
    Ok(())
}

/// A host's base URL (`scheme://host[:port]`) and API root from a `server` or `[host."..."]`
/// key, as containerd's `parseHostConfig`: `https://` unless the text starts with `http`, the
/// path cleaned, and `/v2` appended unless it already ends so or `override_path` is set.
/// `https://mirror.example.com/some/prefix` gives `/some/prefix/v2`.
///
/// containerd turns a bare `/` path into `//v2`; we give `/v2`.
fn host_url(text: &str, override_path: bool) -> Result<(String, String), String> {
    if let Some((scheme, _)) = text.split_once("://")
        && scheme != "http"
        && scheme != "https"
    {
        return Err(format!("{text:?}: the scheme must be http or https"));
    }
    let full = if text.starts_with("http") {
        text.to_owned()
    } else {
        format!("https://{text}")
    };
    let Some((scheme, rest)) = full.split_once("://") else {
        return Err(format!(
            "{text:?} is not a URL such as https://mirror.example.com"
        ));
    };
    if scheme != "http" && scheme != "https" {
        return Err(format!("{text:?}: the scheme must be http or https"));
    }
    if rest.contains(['?', '#']) {
        return Err(format!("{text:?}: a registry URL has no query or fragment"));
    }
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if authority.is_empty() || authority.contains('@') {
        return Err(format!(
            "{text:?}: give a host (and port), without user information"
        ));
    }
    let mut path = clean_path(path);
    if !override_path && !path.ends_with("/v2") {
        path.push_str("/v2");
    }
    Ok((format!("{scheme}://{authority}"), path))
}

/// A URL path with empty, `.` and `..` segments resolved, without a trailing `/`; empty for
/// the root.
fn clean_path(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    segments.iter().map(|s| format!("/{s}")).collect()
}

/// A Go duration (`300ms`, `1m30s`, `1.5h`), as containerd's `dial_timeout`; not negative.
fn go_duration(text: &str) -> Option<Duration> {
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = text;
    let mut seconds = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        seconds += number * scale;
        rest = &rest[unit..];
    }
    Duration::try_from_secs_f64(seconds).ok()
}

/// k3s's `registries.yaml`, as rancher/wharfie's `registries.Registry` reads it; unknown keys
/// are refused (wharfie ignores them).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct K3sRegistries {
    #[serde(default)]
    mirrors: Option<BTreeMap<String, Option<K3sMirror>>>,
    #[serde(default)]
    configs: Option<BTreeMap<String, Option<K3sConfig>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct K3sMirror {
    #[serde(default)]
    endpoint: Option<Vec<String>>,
    #[serde(default)]
    rewrite: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct K3sConfig {
    #[serde(default)]
    auth: Option<K3sAuth>,
    #[serde(default)]
    tls: Option<K3sTls>,
}

impl K3sConfig {
    /// Whether k3s writes a host directory for it (k3s's `endpointHasConfig`).
    fn has_content(&self) -> bool {
        self.auth.is_some() || self.tls.is_some()
    }
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct K3sAuth {
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    identity_token: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct K3sTls {
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    cert_file: Option<PathBuf>,
    #[serde(default)]
    key_file: Option<PathBuf>,
    #[serde(default)]
    insecure_skip_verify: bool,
}

/// The hosts k3s configures containerd with for `registry` from `file` (k3s's
/// `getHostConfigs`), server last with an empty URL for the default upstream; `None` when
/// the file is absent or says nothing of the registry.
///
/// - The registry's own entry (a mirror with endpoints, or `configs` with `auth` or `tls`)
///   makes k3s write its own host directory; otherwise the `"*"` entries apply, as k3s writes
///   them into `_default`.
/// - Endpoints keep their order; without a scheme they are `https://` (`http://` for
///   localhost on a port other than 443); `docker.io` means `registry-1.docker.io`; a path
///   other than empty, `/` or `/v2` is the API root as is (override_path). Duplicates go, and
///   a last endpoint equal to the default one is the upstream rather than a mirror
///   (`normalizeEndpointAddress`). k3s writes them with capabilities pull and resolve.
/// - `configs` apply by host: an endpoint gets its host's `tls` and `auth` (for
///   `registry-1.docker.io`, that entry or else `docker.io`'s; `configForHost`), the upstream
///   the registry's (or `"*"`'s when the registry has no entry of its own).
/// - The upstream is always tried last: k3s's `--disable-default-registry-endpoint` is a k3s
///   flag, not in this file, and is not honoured.
fn k3s_hosts(file: &Path, registry: &str) -> Result<Option<Vec<RegistryHost>>, HostsError> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(HostsError::Read {
                path: file.to_owned(),
                source,
            });
        }
    };
    let parsed: K3sRegistries = if text.trim().is_empty() {
        K3sRegistries::default()
    } else {
        serde_saphyr::from_str(&text).map_err(|source| HostsError::RegistriesYaml {
            path: file.to_owned(),
            source: Box::new(source),
        })?
    };
    let mirrors = parsed.mirrors.unwrap_or_default();
    let configs: BTreeMap<String, K3sConfig> = parsed
        .configs
        .unwrap_or_default()
        .into_iter()
        .map(|(host, config)| (host, config.unwrap_or_default()))
        .collect();
    let origin = file.display().to_string();
    let bad = |registry: &str, message: String| HostsError::K3sEntry {
        path: file.to_owned(),
        registry: registry.to_owned(),
        message,
    };

    let own_mirror = mirrors
        .get(registry)
        .and_then(Option::as_ref)
        .filter(|m| m.endpoint.as_ref().is_some_and(|e| !e.is_empty()));
    let own_config = config_for_host(&configs, registry).filter(|c| c.has_content());
    let (key, mirror, upstream_config) = if own_mirror.is_some() || own_config.is_some() {
        (registry, own_mirror, config_for_host(&configs, registry))
    } else {
        let wildcard = mirrors.get("*").and_then(Option::as_ref);
        ("*", wildcard, configs.get("*"))
    };
    if mirror.is_none() && upstream_config.is_none_or(|c| !c.has_content()) {
        return Ok(None);
    }

    let (default_url, default_path, _) = k3s_endpoint(registry).map_err(|m| bad(registry, m))?;
    let mut hosts: Vec<RegistryHost> = Vec::new();
    let endpoints = mirror.and_then(|m| m.endpoint.as_deref()).unwrap_or(&[]);
    for (i, endpoint) in endpoints.iter().enumerate() {
        let (url, path, name) = k3s_endpoint(endpoint).map_err(|m| bad(key, m))?;
        if hosts.iter().any(|h| h.url == url && h.path == path) {
            continue;
        }
        if i + 1 == endpoints.len() && url == default_url && path == default_path {
            continue;
        }
        let mut host = RegistryHost::new(url, path, &origin);
        host.push = false;
        if let Some(config) = config_for_host(&configs, &name) {
            apply_k3s_config(&mut host, config).map_err(|m| bad(&name, m))?;
        }
        hosts.push(host);
    }
    if !hosts.is_empty()
        && mirror.is_some_and(|m| m.rewrite.as_ref().is_some_and(|r| !r.is_empty()))
    {
        return Err(HostsError::RewriteUnsupported {
            origin,
            registry: key.to_owned(),
        });
    }
    let mut upstream = RegistryHost::new(String::new(), "/v2".to_owned(), &origin);
    if let Some(config) = upstream_config {
        apply_k3s_config(&mut upstream, config).map_err(|m| bad(key, m))?;
    }
    hosts.push(upstream);
    Ok(Some(hosts))
}

/// The `configs` entry for `host` (k3s's `configForHost`): for `docker.io`, the
/// `registry-1.docker.io` entry first.
fn config_for_host<'a>(
    configs: &'a BTreeMap<String, K3sConfig>,
    host: &str,
) -> Option<&'a K3sConfig> {
    if host == DOCKER_HUB
        && let Some(config) = configs.get(DOCKER_HUB_HOST)
    {
        return Some(config);
    }
    configs.get(host)
}

/// A `configs` entry's TLS settings and credentials on `host`.
fn apply_k3s_config(host: &mut RegistryHost, config: &K3sConfig) -> Result<(), String> {
    if let Some(tls) = &config.tls {
        host.ca.extend(tls.ca_file.iter().cloned());
        match (&tls.cert_file, &tls.key_file) {
            (Some(cert), Some(key)) => host.client.push(ClientCertificate {
                cert: cert.clone(),
                key: Some(key.clone()),
            }),
            (None, None) => {}
            // wharfie's getTLSConfigForHost refuses half a pair.
            _ => return Err("tls needs both cert_file and key_file, or neither".to_owned()),
        }
        host.skip_verify = tls.insecure_skip_verify;
    }
    if let Some(auth) = &config.auth {
        host.credentials = match auth {
            K3sAuth {
                identity_token: Some(token),
                ..
            } if !token.is_empty() => {
                return Err(
                    "auth.identity_token (an OAuth refresh token) is not supported by the agent's registry client, only username and password"
                        .to_owned(),
                );
            }
            K3sAuth {
                auth: Some(encoded),
                ..
            } if !encoded.is_empty() => Some(
                decode_auth(encoded)
                    .ok_or("auth.auth is not base64 of user:password".to_owned())?,
            ),
            K3sAuth {
                username: Some(username),
                password,
                ..
            } => Some(Credentials {
                username: username.clone(),
                password: password.clone().unwrap_or_default(),
            }),
            _ => None,
        };
    }
    Ok(())
}

/// An endpoint of `registries.yaml` as k3s normalises it (`normalizeEndpointAddress`): base
/// URL, API root, and the registry name its `configs` entry is found by.
fn k3s_endpoint(endpoint: &str) -> Result<(String, String, String), String> {
    let (scheme, rest) = match endpoint.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, endpoint.strip_prefix("//").unwrap_or(endpoint)),
    };
    if rest.contains(['?', '#']) {
        return Err(format!("endpoint {endpoint:?} has a query or fragment"));
    }
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if authority.is_empty() || authority.contains('@') {
        return Err(format!(
            "endpoint {endpoint:?} is not a URL such as https://mirror.example.com"
        ));
    }
    let scheme = match scheme {
        Some(s @ ("http" | "https")) => s,
        Some(other) => {
            return Err(format!(
                "endpoint {endpoint:?}: the scheme {other:?} is neither http nor https"
            ));
        }
        None if localhost_odd_port(authority) => "http",
        None => "https",
    };
    let (host, name) = match authority {
        DOCKER_HUB | DOCKER_HUB_HOST => (DOCKER_HUB_HOST, DOCKER_HUB),
        other => (other, other),
    };
    let path = match path {
        "" | "/" | "/v2" => "/v2".to_owned(),
        other => other.to_owned(),
    };
    Ok((format!("{scheme}://{host}"), path, name.to_owned()))
}

/// Whether `authority` is localhost (or a loopback address) on a port other than 443: k3s
/// (after containerd's `IsLocalhost`) speaks plain HTTP to it when no scheme is given.
fn localhost_odd_port(authority: &str) -> bool {
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (host, port),
        _ => (authority, ""),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let local = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    local && !port.is_empty() && port != "443"
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system's temporary one, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!(
                "kdbg-hosts-{name}-{}-{}",
                std::process::id(),
                super::super::unique()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn write(&self, relative: &str, text: &str) -> PathBuf {
            let path = self.0.join(relative);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn urls(hosts: &[RegistryHost]) -> Vec<String> {
        hosts
            .iter()
            .map(|h| format!("{}{}", h.url, h.path))
            .collect()
    }

    fn node(config_path: &Path) -> HostsSources {
        HostsSources {
            config_path: Some(config_path.to_owned()),
            ..HostsSources::default()
        }
    }

    #[test]
    fn hosts_default_to_the_upstream() {
        let dir = TempDir::new("default");
        let sources = node(&dir.0);
        let hub = sources.hosts_for("docker.io", &[]).unwrap();
        assert_eq!(urls(&hub), ["https://registry-1.docker.io/v2"]);
        assert!(hub[0].pull && hub[0].resolve);
        assert_eq!(hub[0].origin, UPSTREAM);
        let local = sources.hosts_for("registry.example.com:5000", &[]).unwrap();
        assert_eq!(urls(&local), ["https://registry.example.com:5000/v2"]);
        let insecure = ["registry.example.com:5000".to_owned()];
        let plain = HostsSources::default()
            .hosts_for("registry.example.com:5000", &insecure)
            .unwrap();
        assert_eq!(urls(&plain), ["http://registry.example.com:5000/v2"]);
    }

    #[test]
    fn hosts_toml_mirrors_keep_file_order_and_settings() {
        let dir = TempDir::new("toml");
        // The port's directory form wins over the plain name.
        dir.write(
            "registry.example.com:5000/hosts.toml",
            "server = \"https://ignored\"\n",
        );
        let file = dir.write(
            "registry.example.com_5000_/hosts.toml",
            r#"server = "https://upstream.example.com"
ca = "upstream.crt"

[host."https://z-mirror.example.com/some/prefix"]
  capabilities = ["pull"]
  ca = ["mirror.crt", "/etc/ssl/other.pem"]
  [host."https://z-mirror.example.com/some/prefix".header]
    x-b = "1"
    x-a = ["2", "3"]

[host."http://a-mirror.example.com:8080/v2/upstream"]
  capabilities = ["pull", "resolve"]
  skip_verify = true
  override_path = true
  dial_timeout = "1.5s"
  client = [["c.cert", "c.key"], ["both.pem", ""]]
"#,
        );
        let hosts = node(&dir.0)
            .hosts_for("registry.example.com:5000", &[])
            .unwrap();
        assert_eq!(
            urls(&hosts),
            [
                "https://z-mirror.example.com/some/prefix/v2",
                "http://a-mirror.example.com:8080/v2/upstream",
                "https://upstream.example.com/v2",
            ]
        );
        let base = dir.0.join("registry.example.com_5000_");
        let (z, a, server) = (&hosts[0], &hosts[1], &hosts[2]);
        assert!(z.pull && !z.resolve && !z.push);
        assert_eq!(
            z.ca,
            [base.join("mirror.crt"), PathBuf::from("/etc/ssl/other.pem")]
        );
        assert_eq!(
            z.headers,
            [
                ("x-b".into(), "1".into()),
                ("x-a".into(), "2".into()),
                ("x-a".into(), "3".into())
            ]
        );
        assert!(!z.skip_verify);
        assert!(a.pull && a.resolve && !a.push && a.skip_verify);
        assert_eq!(a.dial_timeout, Some(Duration::from_millis(1500)));
        assert_eq!(
            a.client,
            [
                ClientCertificate {
                    cert: base.join("c.cert"),
                    key: Some(base.join("c.key")),
                },
                ClientCertificate {
                    cert: base.join("both.pem"),
                    key: None,
                },
            ]
        );
        assert!(server.pull && server.resolve && server.push);
        assert_eq!(server.ca, [base.join("upstream.crt")]);
        assert_eq!(server.origin, file.display().to_string());
    }

    #[test]
    fn hosts_default_directory_serves_registries_without_their_own() {
        let dir = TempDir::new("fallback");
        dir.write(
            "_default/hosts.toml",
            "skip_verify = true\ncapabilities = [\"pull\"]\n[host.\"mirror.example.com\"]\n",
        );
        let hosts = node(&dir.0).hosts_for("quay.io", &[]).unwrap();
        assert_eq!(
            urls(&hosts),
            ["https://mirror.example.com/v2", "https://quay.io/v2"]
        );
        // No server: the registry itself, every capability, the top-level TLS settings.
        assert!(hosts[1].skip_verify && hosts[1].resolve);
        assert!(hosts[0].pull && hosts[0].resolve && !hosts[0].skip_verify);
        // Docker-style certificate files when there is no hosts.toml.
        dir.write("docker.io/ca.crt", "");
        dir.write("docker.io/client.cert", "");
        dir.write("docker.io/client.key", "");
        let hub = node(&dir.0).hosts_for("docker.io", &[]).unwrap();
        assert_eq!(urls(&hub), ["https://registry-1.docker.io/v2"]);
        assert_eq!(hub[0].ca, [dir.0.join("docker.io/ca.crt")]);
        assert_eq!(
            hub[0].client[0].key,
            Some(dir.0.join("docker.io/client.key"))
        );
    }

    #[test]
    fn hosts_toml_unknown_key_names_file_and_line() {
        let dir = TempDir::new("unknown");
        let file = dir.write(
            "docker.io/hosts.toml",
            "server = \"https://registry-1.docker.io\"\n\n[host.\"https://m.example.com\"]\n  capabilties = [\"pull\"]\n",
        );
        let err = node(&dir.0).hosts_for("docker.io", &[]).unwrap_err();
        let HostsError::HostsToml {
            path, line, column, ..
        } = &err
        else {
            panic!("{err:?}");
        };
        assert_eq!((path, *line, *column), (&file, 4, 3));
        let message = err.to_string();
        assert!(
            message.contains(&format!("{}:4:3", file.display())),
            "{message}"
        );
        assert!(message.contains("capabilties"), "{message}");
        // A wrong capability too.
        dir.write(
            "quay.io/hosts.toml",
            "\ncapabilities = [\"pul\"]\nserver = \"quay.io\"\n",
        );
        let err = node(&dir.0).hosts_for("quay.io", &[]).unwrap_err();
        assert!(
            matches!(err, HostsError::HostsToml { line: 2, .. }),
            "{err}"
        );
        // And a scheme other than HTTP's.
        dir.write("ghcr.io/hosts.toml", "[host.\"ftp://m.example.com\"]\n");
        let err = node(&dir.0).hosts_for("ghcr.io", &[]).unwrap_err();
        assert!(
            matches!(
                err,
                HostsError::HostsToml {
                    line: 1,
                    column: 7,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn hosts_toml_broken_names_file_and_line() {
        let dir = TempDir::new("broken");
        let file = dir.write(
            "docker.io/hosts.toml",
            "server = \"https://registry-1.docker.io\"\n[host.\"https://m.example.com\"\n  capabilities = [\"pull\"]\n",
        );
        let err = node(&dir.0).hosts_for("docker.io", &[]).unwrap_err();
        let HostsError::HostsToml { path, line, .. } = &err else {
            panic!("{err:?}");
        };
        assert_eq!((path, *line), (&file, 2));
        assert!(
            err.to_string()
                .starts_with(&format!("{}:2:", file.display())),
            "{err}"
        );
    }

    #[test]
    fn hosts_from_k3s_registries_yaml() {
        let dir = TempDir::new("k3s");
        let file = dir.write(
            "registries.yaml",
            r#"mirrors:
  docker.io:
    endpoint:
      - "https://mirror.example.com:5000"
      - "localhost:5001/v2/hub"
      - "https://mirror.example.com:5000"
      - "docker.io"
  "*":
    endpoint:
      - "https://any.example.com"
configs:
  "mirror.example.com:5000":
    auth:
      username: user
      password: s3cret
    tls:
      ca_file: /etc/ssl/mirror.pem
      cert_file: /etc/ssl/client.pem
      key_file: /etc/ssl/client.key
  "docker.io":
  "*":
    tls:
      insecure_skip_verify: true
"#,
        );
        let sources = HostsSources {
            k3s_registries: Some(file.clone()),
            ..HostsSources::default()
        };
        let hub = sources.hosts_for("docker.io", &[]).unwrap();
        assert_eq!(
            urls(&hub),
            [
                "https://mirror.example.com:5000/v2",
                "http://localhost:5001/v2/hub",
                "https://registry-1.docker.io/v2",
            ]
        );
        let mirror = &hub[0];
        assert!(mirror.pull && mirror.resolve && !mirror.push);
        assert_eq!(mirror.ca, [PathBuf::from("/etc/ssl/mirror.pem")]);
        assert_eq!(
            mirror.client[0].key,
            Some(PathBuf::from("/etc/ssl/client.key"))
        );
        let credentials = mirror.credentials.as_ref().unwrap();
        assert_eq!(
            (credentials.username.as_str(), credentials.password.as_str()),
            ("user", "s3cret")
        );
        assert_eq!(mirror.origin, file.display().to_string());
        assert!(!hub[2].skip_verify);
        // Every other registry: the "*" mirror, and the "*" configs on its upstream.
        let quay = sources.hosts_for("quay.io", &[]).unwrap();
        assert_eq!(
            urls(&quay),
            ["https://any.example.com/v2", "https://quay.io/v2"]
        );
        assert!(!quay[0].skip_verify && quay[1].skip_verify);
        // config_path comes first when it has the registry.
        let certs = TempDir::new("k3s-certs");
        certs.write("quay.io/hosts.toml", "server = \"https://quay.io\"\n");
        let both = HostsSources {
            config_path: Some(certs.0.clone()),
            ..sources
        };
        assert_eq!(
            urls(&both.hosts_for("quay.io", &[]).unwrap()),
            ["https://quay.io/v2"]
        );
    }

    #[test]
    fn hosts_k3s_rewrite_is_refused() {
        let dir = TempDir::new("rewrite");
        let file = dir.write(
            "registries.yaml",
            "mirrors:\n  docker.io:\n    endpoint: [\"https://mirror.example.com\"]\n    rewrite:\n      \"^rancher/(.*)\": \"mirror/$1\"\n",
        );
        let sources = HostsSources {
            k3s_registries: Some(file.clone()),
            ..HostsSources::default()
        };
        let err = sources.hosts_for("docker.io", &[]).unwrap_err();
        assert!(
            matches!(&err, HostsError::RewriteUnsupported { origin, registry } if *origin == file.display().to_string() && registry == "docker.io"),
            "{err:?}"
        );
        assert!(err.to_string().contains("not support"), "{err}");
        // Other registries are unaffected.
        assert_eq!(sources.hosts_for("quay.io", &[]).unwrap().len(), 1);
        // And an unknown key is an error naming the file.
        dir.write("registries.yaml", "mirror:\n  docker.io: {}\n");
        let err = sources.hosts_for("docker.io", &[]).unwrap_err();
        assert!(
            err.to_string().contains(&file.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn hosts_runtime_mirrors_come_after_the_nodes() {
        let dir = TempDir::new("agent");
        dir.write(
            "docker.io/hosts.toml",
            "server = \"https://registry-1.docker.io\"\nskip_verify = true\n[host.\"https://node-mirror.example.com\"]\n",
        );
        let mirrors: MirrorsConfig = serde_saphyr::from_str(
            r#"docker.io:
  hosts:
    - url: https://agent-mirror.example.com/prefix
      capabilities: [pull]
      skipVerify: true
      header: {x-token: abc}
    - url: http://plain.example.com/raw
      overridePath: true
"#,
        )
        .unwrap();
        let sources = HostsSources {
            mirrors,
            ..node(&dir.0)
        };
        let hosts = sources.hosts_for("docker.io", &[]).unwrap();
        assert_eq!(
            urls(&hosts),
            [
                "https://node-mirror.example.com/v2",
                "https://agent-mirror.example.com/prefix/v2",
                "http://plain.example.com/raw",
                "https://registry-1.docker.io/v2",
            ]
        );
        assert_eq!(hosts[1].origin, RUNTIME_MIRRORS);
        assert!(hosts[1].pull && !hosts[1].resolve && hosts[1].skip_verify);
        assert_eq!(hosts[1].headers, [("x-token".into(), "abc".into())]);
        assert!(
            hosts[3].skip_verify,
            "the node's server settings stay on the upstream"
        );
        // Unknown fields are refused.
        let err = serde_saphyr::from_str::<MirrorsConfig>("docker.io:\n  mirrors: []\n");
        assert!(err.is_err());
    }

    #[test]
    fn hosts_debug_redacts_credentials() {
        let mut host = default_upstream("docker.io", &[], UPSTREAM);
        host.credentials = Some(Credentials {
            username: "user".to_owned(),
            password: "hunter2-secret".to_owned(),
        });
        let shown = format!("{host:?} {:?}", [&host]);
        assert!(shown.contains("user"), "{shown}");
        assert!(!shown.contains("hunter2-secret"), "{shown}");
    }
}
