//! The agent's YAML configuration. Unknown keys and bad values are errors that name the key
//! and its line, found before anything starts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kdbg_runtimes::containerd::{Auths, CredentialsError};
use serde::Deserialize;

use crate::duration::GoDuration;

pub use kdbg_api::DEFAULT_PORT;

mod recordings;
mod security;

pub use recordings::{RecordingFormat, RecordingMode, Recordings, Retention};
pub use security::{Auth, AuthMode, Limits, MaxSessions, Policy, Profiles, Tls, image_matches};

/// The debug image when neither the request nor the configuration names one.
pub const DEFAULT_IMAGE: &str = "nicolaka/netshoot:latest";
/// The command when neither the request nor the configuration names one.
pub const DEFAULT_COMMAND: &str = "bash";

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where to listen, e.g. `0.0.0.0:10027`.
    pub listen: SocketAddr,
    /// The container runtime of this node.
    pub runtime: RuntimeConfig,
    /// What a session runs when the request does not say.
    #[serde(default)]
    pub defaults: Defaults,
    /// How the agent logs.
    #[serde(default)]
    pub log: LogConfig,
    /// When sessions and debug containers end.
    #[serde(default)]
    pub lifecycle: Lifecycle,
    /// Whether and how sessions are recorded.
    #[serde(default)]
    pub recordings: Recordings,
    /// The listener's certificate; absent: plain HTTP, refused unless `insecure`.
    #[serde(default)]
    pub tls: Option<Tls>,
    /// Allows plain HTTP and `auth.mode: none` (tests, a loopback-only agent).
    #[serde(default)]
    pub insecure: bool,
    /// Who callers are and what they may do.
    #[serde(default)]
    pub auth: Auth,
    /// What sessions may ask for.
    #[serde(default)]
    pub policy: Policy,
    /// What one connection may hold.
    #[serde(default)]
    pub limits: Limits,
}

/// `lifecycle:`: when sessions end and debug containers are removed. Durations are written
/// like Kubernetes' (`10s`, `4h`, `1h30m`); `0` turns a limit off where it says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Lifecycle {
    /// How long a session's processes get between SIGTERM and SIGKILL when the session is
    /// stopped (its client left or vanished, or it was idle too long).
    pub stop_grace: GoDuration,
    /// Sessions with no input and no output this long end (a warning reaches the terminal
    /// a minute before); `0`: never.
    pub idle_timeout: GoDuration,
    /// A client silent this long (pongs count; clients are pinged every 5 s) is gone.
    pub peer_timeout: GoDuration,
    /// A retained container whose target is gone is removed after this long.
    pub orphan_max_age: GoDuration,
    /// Retained containers older than this are removed; `0`: never.
    pub retained_max_age: GoDuration,
    /// How often the reaper looks for debug containers to remove.
    pub reap_interval: GoDuration,
    /// With no session and no open connection this long (counted from the start and from
    /// the end of the last one), the agent shuts down as on SIGTERM and exits 0 (an
    /// on-demand agent's pod ends); `0`: never.
    pub exit_when_idle: GoDuration,
}

impl Default for Lifecycle {
    fn default() -> Self {
        let secs = |s| GoDuration(Duration::from_secs(s));
        Lifecycle {
            stop_grace: secs(10),
            idle_timeout: secs(4 * 3600),
            peer_timeout: secs(61),
            orphan_max_age: secs(3600),
            retained_max_age: secs(168 * 3600),
            reap_interval: secs(60),
            exit_when_idle: secs(0),
        }
    }
}

/// `log:`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (default; colour only when stderr is a terminal) or `json` (one JSON object a
    /// line, for log collectors).
    #[serde(default)]
    pub format: LogFormat,
    /// The level (`error`, `warn`, `info`, `debug`, `trace`) or a filter like `RUST_LOG`'s;
    /// `RUST_LOG`, when set, wins.
    #[serde(default = "default_log_level")]
    pub level: String,
}

fn default_log_level() -> String {
    "info".into()
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::default(),
            level: default_log_level(),
        }
    }
}

/// `log.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// JSON lines.
    Json,
}

/// `runtime:`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RuntimeConfig {
    /// Which runtime.
    pub kind: RuntimeKindConfig,
    /// Its socket, e.g. `unix:///var/run/docker.sock`; the kind's usual socket when absent.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// containerd: the namespace the pods' containers live in.
    #[serde(default)]
    pub namespace: Option<String>,
    /// containerd: the snapshotter images are unpacked into.
    #[serde(default)]
    pub snapshotter: Option<String>,
    /// containerd: registries (`host[:port]`) spoken to over plain HTTP.
    #[serde(default)]
    pub insecure_registries: Vec<String>,
    /// containerd: a Docker `config.json` with registry credentials (the
    /// `.dockerconfigjson` of a `kubernetes.io/dockerconfigjson` secret).
    #[serde(default)]
    pub registry_auth: Option<PathBuf>,
    /// containerd: the node's registry host configuration directory (containerd's
    /// `config_path`: `<dir>/<registry>/hosts.toml`), read at every pull as containerd
    /// reads it; default `/etc/containerd/certs.d` (nothing there: no mirrors).
    #[serde(default)]
    pub config_path: Option<PathBuf>,
    /// containerd on k3s: its `registries.yaml`, used for a registry `configPath` has no
    /// directory for; default `/etc/rancher/k3s/registries.yaml` (absent: none).
    #[serde(default)]
    pub k3s_registries: Option<PathBuf>,
    /// containerd: mirrors of the agent's own, tried after the node's and before the
    /// registry itself: `{REGISTRY: {server: URL, hosts: [{url, capabilities, ca,
    /// skipVerify, overridePath, header}]}}`.
    #[serde(default)]
    pub mirrors: kdbg_runtimes::containerd::hosts::MirrorsConfig,
    /// Where the sessions' stdio FIFOs are made (containerd, and Docker through its
    /// containerd); the node must see the same path.
    #[serde(default)]
    pub fifo_dir: Option<PathBuf>,
    /// Docker: the engine's own containerd socket, through which sessions' processes are
    /// started so their bytes do not cross dockerd; `off` for dockerd's exec. Default: the
    /// first of `/run/containerd/containerd.sock` and
    /// `/var/run/docker/containerd/containerd.sock` that has namespace `moby`, else dockerd's
    /// exec (said once in the log).
    #[serde(default)]
    pub engine_containerd: Option<String>,
    /// Sessions' processes are started by each debug container's own `kdbg-init` (its
    /// spawner, in `fifoDir`), with no `runc exec` and no copy by the runtime between them and
    /// the agent; `false`: exec'd through the runtime, as containers without a spawner
    /// (made by older agents) always are.
    #[serde(default = "default_spawner")]
    pub spawner: bool,
    /// Where the agent puts `kdbg-init`, which every debug container runs (bind-mounted from
    /// here); the node must see the same path.
    #[serde(default = "default_init_dir")]
    pub init_dir: PathBuf,
    /// The credentials read from [`RuntimeConfig::registry_auth`] by
    /// [`RuntimeConfig::load_credentials`].
    #[serde(skip)]
    pub credentials: Auths,
}

impl RuntimeConfig {
    /// A configuration of `kind` with the kind's defaults for everything else.
    pub fn new(kind: RuntimeKindConfig) -> RuntimeConfig {
        RuntimeConfig {
            kind,
            endpoint: None,
            namespace: None,
            snapshotter: None,
            insecure_registries: Vec::new(),
            registry_auth: None,
            config_path: None,
            k3s_registries: None,
            mirrors: Default::default(),
            fifo_dir: None,
            engine_containerd: None,
            spawner: true,
            init_dir: default_init_dir(),
            credentials: Auths::default(),
        }
    }

    /// Reads the registry credentials `registry_auth` names, if any.
    pub fn load_credentials(&mut self) -> Result<(), CredentialsError> {
        if let Some(path) = &self.registry_auth {
            self.credentials = Auths::load(path)?;
        }
        Ok(())
    }
}

fn default_spawner() -> bool {
    true
}

/// Where `kdbg-init` goes unless `runtime.initDir` says otherwise.
pub const DEFAULT_INIT_DIR: &str = "/run/kubectl-debug/init";

fn default_init_dir() -> PathBuf {
    PathBuf::from(DEFAULT_INIT_DIR)
}

/// `runtime.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKindConfig {
    /// Docker Engine.
    Docker,
    /// containerd.
    Containerd,
    /// Whichever answers first at the usual sockets ([`AUTO_PROBE`]).
    Auto,
}

/// The Docker socket when `runtime.endpoint` is absent.
pub const DEFAULT_DOCKER_ENDPOINT: &str = "unix:///var/run/docker.sock";
/// The containerd socket when `runtime.endpoint` is absent.
pub const DEFAULT_CONTAINERD_ENDPOINT: &str = "/run/containerd/containerd.sock";
/// The sockets `kind: auto` tries, in order: containerd, k3s's containerd, Docker.
pub const AUTO_PROBE: [(RuntimeKindConfig, &str); 3] = [
    (
        RuntimeKindConfig::Containerd,
        "/run/containerd/containerd.sock",
    ),
    (
        RuntimeKindConfig::Containerd,
        "/run/k3s/containerd/containerd.sock",
    ),
    (RuntimeKindConfig::Docker, "/var/run/docker.sock"),
];

/// `defaults:`; each key is optional, with the built-in [`DEFAULT_IMAGE`] and
/// [`DEFAULT_COMMAND`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// The debug image.
    #[serde(default = "default_image")]
    pub image: String,
    /// The command.
    #[serde(default = "default_command")]
    pub command: Vec<String>,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            image: default_image(),
            command: default_command(),
        }
    }
}

fn default_image() -> String {
    DEFAULT_IMAGE.into()
}

fn default_command() -> Vec<String> {
    vec![DEFAULT_COMMAND.into()]
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file's content (or `--config-yaml`'s) is not a configuration the agent can use.
    #[error("{path}")]
    Invalid {
        /// The file, or [`INLINE`].
        path: String,
        /// What is wrong, and where (boxed: it is large, and rare).
        source: Box<InvalidConfig>,
    },
}

/// Where in the file a key is set: shown as ` (line N)`, or as nothing when the key was not
/// found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Line(pub Option<usize>);

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(n) => write!(f, " (line {n})"),
            None => Ok(()),
        }
    }
}

/// A configuration the agent cannot use: what is wrong, the key and its line, and the way
/// out.
#[derive(Debug, thiserror::Error)]
pub enum InvalidConfig {
    /// The YAML does not fit the schema (the parser's message names the key and line).
    #[error("{0}")]
    Yaml(serde_saphyr::Error),
    /// `runtime.endpoint` with `kind: auto`.
    #[error(
        "runtime.endpoint{line} is set with kind: auto, which probes the usual sockets; remove it, or name the kind (docker or containerd)"
    )]
    EndpointWithAuto {
        /// Where `endpoint` is set.
        line: Line,
    },
    /// An empty `runtime.endpoint`.
    #[error(
        "runtime.endpoint{line} is empty; give the runtime's socket, e.g. unix:///var/run/docker.sock, or remove the key for the usual one"
    )]
    EmptyEndpoint {
        /// Where `endpoint` is set.
        line: Line,
    },
    /// A Docker-only key of `runtime` with `kind: containerd`.
    #[error(
        "runtime.{key}{line} applies to Docker only (the Docker engine's own containerd); with kind: containerd the agent talks to containerd already"
    )]
    DockerOnly {
        /// The key.
        key: &'static str,
        /// Where it is set.
        line: Line,
    },
    /// A containerd-only key of `runtime` with `kind: docker`.
    #[error(
        "runtime.{key}{line} applies to containerd only; Docker pulls and stores images itself (for registries, configure dockerd's daemon.json)"
    )]
    ContainerdOnly {
        /// The key, e.g. `insecureRegistries`.
        key: &'static str,
        /// Where it is set.
        line: Line,
    },
    /// The file `runtime.registryAuth` names cannot be used.
    #[error("runtime.registryAuth{line}: {}; fix the file, or the key", crate::chain(.error))]
    RegistryAuth {
        /// Where `registryAuth` is set.
        line: Line,
        /// What is wrong with the file (said inside the message, before the way out).
        error: CredentialsError,
    },
    /// An empty `defaults.image`.
    #[error("defaults.image{line} is empty; give a tools image, e.g. nicolaka/netshoot:latest")]
    EmptyImage {
        /// Where `image` is set.
        line: Line,
    },
    /// An empty `defaults.command`.
    #[error("defaults.command{line} is empty; give a command, e.g. [\"bash\"]")]
    EmptyCommand {
        /// Where `command` is set.
        line: Line,
    },
    /// A key of `auth.mode: token` with another mode.
    #[error("auth.{key}{line} is used only with auth.mode: token; set the mode, or remove the key")]
    TokenKeyWithoutToken {
        /// `tokenSha256` or `user`.
        key: &'static str,
        /// Where it is set.
        line: Line,
    },
    /// `auth.mode: token` without a well-formed `auth.tokenSha256`.
    #[error(
        "auth.tokenSha256{line} {found}: auth.mode: token needs the SHA-256 of the agent's token as 64 hex digits (kubectl-debug sets it when it starts an on-demand agent); give it, or use auth.mode: kubernetes"
    )]
    TokenHash {
        /// Where `tokenSha256` is set.
        line: Line,
        /// What is wrong: `is not set`, `is not 64 hex digits`.
        found: &'static str,
    },
    /// `auth.mode: token` without `auth.user`.
    #[error(
        "auth.user{line} is not set: auth.mode: token needs the name of who started the agent, for its sessions' labels, audit and recordings; give it, or use auth.mode: kubernetes"
    )]
    NoTokenUser {
        /// Where `user` is set.
        line: Line,
    },
    /// `auth.mode: token` over plain HTTP on an address other than loopback.
    #[error(
        "listen{line} is {listen}, not a loopback address, and tls is not set: with auth.mode: token the token would cross the network in clear; listen on 127.0.0.1 (a port-forward reaches the pod's loopback), or give tls.certFile and tls.keyFile"
    )]
    TokenInClear {
        /// Where `listen` is set.
        line: Line,
        /// `listen`.
        listen: SocketAddr,
    },
    /// No `tls:` and no `insecure: true`.
    #[error(
        "tls is not set, so the agent would serve plain HTTP to the network; give tls.certFile and tls.keyFile (see docs/security.md, TLS), or set insecure: true for tests and loopback-only agents"
    )]
    PlainHttp,
    /// `auth.mode: none` without `insecure: true`.
    #[error(
        "auth.mode{line}: none lets anyone who reaches the port create root-capable containers in any pod; use mode: kubernetes, or set insecure: true as well for tests and loopback-only agents"
    )]
    NoAuth {
        /// Where `mode` is set.
        line: Line,
    },
    /// `auth.clientCAFile` with `auth.mode: none` or `token`.
    #[error(
        "auth.clientCAFile{line}: client certificates are checked only with auth.mode: kubernetes; set the mode, or remove the key"
    )]
    ClientCaWithoutAuth {
        /// Where `clientCAFile` is set.
        line: Line,
    },
    /// `auth.clientCAFile` without `tls:`.
    #[error(
        "auth.clientCAFile{line}: client certificates come with TLS, and tls is not set; give tls.certFile and tls.keyFile, or remove the key"
    )]
    ClientCaWithoutTls {
        /// Where `clientCAFile` is set.
        line: Line,
    },
    /// An empty `policy.profiles.allowed`.
    #[error(
        "policy.profiles.allowed{line} is empty; allow at least one of general, netadmin, sysadmin, restricted"
    )]
    NoProfiles {
        /// Where `allowed` is set.
        line: Line,
    },
    /// A `policy.profiles.default` that `policy.profiles.allowed` does not allow.
    #[error(
        "policy.profiles.default{line} is {default}, which policy.profiles.allowed does not allow; allow it, or choose another default"
    )]
    DefaultNotAllowed {
        /// Where `default` is set.
        line: Line,
        /// The default profile.
        default: kdbg_runtimes::Profile,
    },
    /// An empty pattern in `policy.images`.
    #[error(
        "policy.images{line} has an empty pattern (item {item}); give patterns like nicolaka/netshoot:*"
    )]
    EmptyImagePattern {
        /// Where `images` is set.
        line: Line,
        /// Which item, counted from 1.
        item: usize,
    },
    /// A 0 in `policy.maxSessions`.
    #[error(
        "policy.maxSessions{line} has a 0, which would refuse every session; give counts of 1 or more"
    )]
    ZeroMaxSessions {
        /// Where `maxSessions` is set.
        line: Line,
    },
}

/// What errors of a configuration given inline call it.
pub const INLINE: &str = "--config-yaml";

impl Config {
    /// Reads and checks the file at `path`, and the files it names.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::load_text(&text, &path.display().to_string())
    }

    /// Checks a configuration given inline (`--config-yaml`, for a pod with no ConfigMap),
    /// and the files it names, as [`Config::load`] checks a file; errors say [`INLINE`]
    /// where they would say the file.
    pub fn load_inline(text: &str) -> Result<Config, ConfigError> {
        Config::load_text(text, INLINE)
    }

    /// Checks `text`, read from `source`, and the files it names.
    fn load_text(text: &str, source: &str) -> Result<Config, ConfigError> {
        let invalid = |error| ConfigError::Invalid {
            path: source.to_owned(),
            source: Box::new(error),
        };
        let mut config = Config::parse(text).map_err(invalid)?;
        config.runtime.load_credentials().map_err(|error| {
            invalid(InvalidConfig::RegistryAuth {
                line: line_of(text, "registryAuth"),
                error,
            })
        })?;
        Ok(config)
    }

    /// Parses and checks YAML text.
    pub fn parse(text: &str) -> Result<Config, InvalidConfig> {
        let config: Config = serde_saphyr::from_str(text).map_err(InvalidConfig::Yaml)?;
        let line_of = |key: &str| line_of(text, key);
        let runtime = &config.runtime;
        match (runtime.kind, &runtime.endpoint) {
            (RuntimeKindConfig::Auto, Some(_)) => {
                return Err(InvalidConfig::EndpointWithAuto {
                    line: line_of("endpoint"),
                });
            }
            (_, Some(endpoint)) if endpoint.trim().is_empty() => {
                return Err(InvalidConfig::EmptyEndpoint {
                    line: line_of("endpoint"),
                });
            }
            _ => {}
        }
        if runtime.kind == RuntimeKindConfig::Docker {
            let containerd_only = [
                ("namespace", runtime.namespace.is_some()),
                ("snapshotter", runtime.snapshotter.is_some()),
                (
                    "insecureRegistries",
                    !runtime.insecure_registries.is_empty(),
                ),
                ("registryAuth", runtime.registry_auth.is_some()),
                ("configPath", runtime.config_path.is_some()),
                ("k3sRegistries", runtime.k3s_registries.is_some()),
                ("mirrors", !runtime.mirrors.0.is_empty()),
            ];
            if let Some(&(key, _)) = containerd_only.iter().find(|(_, set)| *set) {
                return Err(InvalidConfig::ContainerdOnly {
                    key,
                    line: line_of(key),
                });
            }
        }
        if runtime.kind == RuntimeKindConfig::Containerd && runtime.engine_containerd.is_some() {
            return Err(InvalidConfig::DockerOnly {
                key: "engineContainerd",
                line: line_of("engineContainerd"),
            });
        }
        security::check(
            config.listen,
            config.tls.as_ref(),
            config.insecure,
            &config.auth,
            &config.policy,
            line_of,
        )?;
        if config.defaults.image.trim().is_empty() {
            return Err(InvalidConfig::EmptyImage {
                line: line_of("image"),
            });
        }
        if config.defaults.command.is_empty() {
            return Err(InvalidConfig::EmptyCommand {
                line: line_of("command"),
            });
        }
        Ok(config)
    }
}

/// The first line of `text` that sets `key`, if one does.
fn line_of(text: &str, key: &str) -> Line {
    Line(
        text.lines()
            .position(|l| l.trim_start().starts_with(&format!("{key}:")))
            .map(|i| i + 1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `text` as the configuration of an agent on loopback without TLS (the checks of
    /// `tls`, `auth` and `policy` have tests of their own); an error as the user reads it.
    pub(crate) fn parse(text: &str) -> Result<Config, String> {
        Config::parse(&format!("{text}insecure: true\nauth:\n  mode: none\n"))
            .map_err(|e| e.to_string())
    }

    const GOOD: &str = r#"
listen: "0.0.0.0:10027"
runtime:
  kind: docker                            # docker | containerd | auto
  endpoint: "unix:///var/run/docker.sock"
defaults:
  image: "nicolaka/netshoot:latest"
  command: ["bash"]
"#;

    #[test]
    fn the_documented_config_parses() {
        let config = parse(GOOD).unwrap();
        assert_eq!(config.listen.port(), DEFAULT_PORT);
        assert_eq!(config.runtime.kind, RuntimeKindConfig::Docker);
        assert_eq!(config.defaults.command, ["bash"]);
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let bad = GOOD.replace("  image:", "  imagee:");
        let err = parse(&bad).unwrap_err();
        assert!(err.contains("imagee"), "{err}");
        assert!(err.contains("line 7"), "{err}");
    }

    #[test]
    fn the_documented_containerd_config_parses() {
        let text = r#"
listen: "0.0.0.0:10027"
runtime:
  kind: containerd
  endpoint: "/run/containerd/containerd.sock"
  namespace: k8s.io
  insecureRegistries: ["127.0.0.1:5000"]
  registryAuth: /etc/kubectl-debug/registry/config.json
defaults:
  image: "nicolaka/netshoot:latest"
  command: ["bash"]
"#;
        let config = parse(text).unwrap();
        assert_eq!(config.runtime.kind, RuntimeKindConfig::Containerd);
        assert_eq!(config.runtime.namespace.as_deref(), Some("k8s.io"));
        assert_eq!(config.runtime.insecure_registries, ["127.0.0.1:5000"]);
        let auto = parse(&text.replace("kind: containerd", "kind: auto")).unwrap_err();
        assert!(
            auto.contains("kind: auto") && auto.contains("line 5"),
            "{auto}"
        );
        let docker = parse(&GOOD.replace(
            "  endpoint:",
            "  insecureRegistries: [\"r:5000\"]\n  endpoint:",
        ))
        .unwrap_err();
        assert!(
            docker.contains("insecureRegistries") && docker.contains("containerd only"),
            "{docker}"
        );
    }

    #[test]
    fn listen_and_runtime_are_enough() {
        let config = parse("listen: \"127.0.0.1:10027\"\nruntime:\n  kind: docker\n").unwrap();
        assert_eq!(config.defaults.image, "nicolaka/netshoot:latest");
        assert_eq!(config.defaults.command, ["bash"]);
        assert_eq!(config.log, LogConfig::default());
        assert_eq!(config.log.level, "info");
        let partial = parse(
            "listen: \"127.0.0.1:10027\"\nruntime:\n  kind: docker\ndefaults:\n  command: [sh]\nlog:\n  format: json\n",
        )
        .unwrap();
        assert_eq!(partial.defaults.image, "nicolaka/netshoot:latest");
        assert_eq!(partial.defaults.command, ["sh"]);
        assert_eq!(partial.log.format, LogFormat::Json);
        let err =
            parse("listen: \"127.0.0.1:10027\"\nruntime:\n  kind: docker\nlog:\n  format: xml\n")
                .unwrap_err();
        assert!(err.contains("xml") && err.contains("line 5"), "{err}");
    }

    #[test]
    fn lifecycle_defaults_and_overrides() {
        let base = "listen: \"127.0.0.1:10027\"\nruntime:\n  kind: docker\n";
        let config = parse(base).unwrap();
        assert_eq!(config.lifecycle, Lifecycle::default());
        assert_eq!(
            config.lifecycle.idle_timeout.0,
            Duration::from_secs(4 * 3600)
        );
        let config = parse(&format!(
            "{base}lifecycle:\n  stopGrace: 2s\n  idleTimeout: 0\n  retainedMaxAge: 1h30m\n"
        ))
        .unwrap();
        assert_eq!(config.lifecycle.stop_grace.0, Duration::from_secs(2));
        assert_eq!(config.lifecycle.idle_timeout.0, Duration::ZERO);
        assert_eq!(
            config.lifecycle.retained_max_age.0,
            Duration::from_secs(5400)
        );
        assert_eq!(config.lifecycle.orphan_max_age.0, Duration::from_secs(3600));
        let err = parse(&format!("{base}lifecycle:\n  stopGrace: soon\n")).unwrap_err();
        assert!(err.contains("soon") && err.contains("line 5"), "{err}");
    }

    #[test]
    fn runtime_keys_of_the_other_kind_are_refused_naming_key_and_line() {
        let with = |runtime: &str| {
            Config::parse(&format!(
                "listen: \"127.0.0.1:10027\"\ninsecure: true\nruntime:\n{runtime}"
            ))
        };
        let mirrors = with("  kind: docker\n  mirrors:\n    docker.io:\n      hosts: []\n")
            .unwrap_err()
            .to_string();
        assert!(
            mirrors.contains("runtime.mirrors (line 5)") && mirrors.contains("daemon.json"),
            "{mirrors}"
        );
        let engine =
            with("  kind: containerd\n  engineContainerd: /run/containerd/containerd.sock\n")
                .unwrap_err()
                .to_string();
        assert!(
            engine.contains("runtime.engineContainerd (line 5)") && engine.contains("Docker only"),
            "{engine}"
        );
        // Docker's sessions use FIFOs too, through the engine's containerd.
        let docker = with(
            "  kind: docker\n  fifoDir: /run/kubectl-debug/fifo\n  engineContainerd: \"off\"\n",
        )
        .unwrap();
        assert_eq!(docker.runtime.engine_containerd.as_deref(), Some("off"));
    }

    #[test]
    fn a_bad_registry_auth_file_is_a_config_error_naming_file_and_key() {
        let dir = std::env::temp_dir().join(format!("kdbg-cfg-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let auth = dir.join("config.json");
        std::fs::write(&auth, "not json").unwrap();
        let config = dir.join("agent.yaml");
        std::fs::write(
            &config,
            format!(
                "listen: \"127.0.0.1:10027\"\nruntime:\n  kind: containerd\n  registryAuth: {}\ninsecure: true\n",
                auth.display()
            ),
        )
        .unwrap();
        let err = crate::chain(&Config::load(&config).unwrap_err());
        assert!(
            err.contains("runtime.registryAuth (line 4)")
                && err.contains(&auth.display().to_string())
                && err.contains("not a Docker config.json"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_values_are_named_with_their_line() {
        let err = parse(&GOOD.replace("0.0.0.0:10027", "nowhere")).unwrap_err();
        assert!(err.contains("line 2"), "{err}");
        let err = parse(&GOOD.replace("kind: docker", "kind: podman")).unwrap_err();
        assert!(err.contains("podman") && err.contains("line 4"), "{err}");
        let err = parse(&GOOD.replace("[\"bash\"]", "[]")).unwrap_err();
        assert!(
            err.contains("defaults.command") && err.contains("line 8"),
            "{err}"
        );
    }
}
