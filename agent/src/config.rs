//! The agent's YAML configuration. Unknown keys and bad values are errors that name the key
//! and its line, found before anything starts.

use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;

/// The default port of the agent; the plugin's `--agent-port` default too.
pub const DEFAULT_PORT: u16 = 10027;
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
    pub defaults: Defaults,
}

/// `runtime:`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Which runtime.
    pub kind: RuntimeKindConfig,
    /// Its socket, e.g. `unix:///var/run/docker.sock`.
    pub endpoint: String,
}

/// `runtime.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKindConfig {
    /// Docker Engine.
    Docker,
    /// containerd.
    Containerd,
}

/// `defaults:`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// The debug image.
    pub image: String,
    /// The command.
    pub command: Vec<String>,
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
    /// The YAML does not fit the schema (message names the key and line).
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong, and where.
        message: String,
    },
}

impl Config {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses and checks YAML text.
    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
        let line_of = |key: &str| {
            text.lines()
                .position(|l| l.trim_start().starts_with(&format!("{key}:")))
                .map_or(String::new(), |i| format!(" (line {})", i + 1))
        };
        if config.runtime.endpoint.trim().is_empty() {
            return Err(format!(
                "runtime.endpoint{} is empty; give the runtime's socket, e.g. unix:///var/run/docker.sock",
                line_of("endpoint")
            ));
        }
        if config.defaults.image.trim().is_empty() {
            return Err(format!(
                "defaults.image{} is empty; give a tools image, e.g. nicolaka/netshoot:latest",
                line_of("image")
            ));
        }
        if config.defaults.command.is_empty() {
            return Err(format!(
                "defaults.command{} is empty; give a command, e.g. [\"bash\"]",
                line_of("command")
            ));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
listen: "0.0.0.0:10027"
runtime:
  kind: docker                            # docker | containerd
  endpoint: "unix:///var/run/docker.sock"
defaults:
  image: "nicolaka/netshoot:latest"
  command: ["bash"]
"#;

    #[test]
    fn the_documented_config_parses() {
        let config = Config::parse(GOOD).unwrap();
        assert_eq!(config.listen.port(), DEFAULT_PORT);
        assert_eq!(config.runtime.kind, RuntimeKindConfig::Docker);
        assert_eq!(config.defaults.command, ["bash"]);
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let bad = GOOD.replace("  image:", "  imagee:");
        let err = Config::parse(&bad).unwrap_err();
        assert!(err.contains("imagee"), "{err}");
        assert!(err.contains("line 7"), "{err}");
    }

    #[test]
    fn bad_values_are_named_with_their_line() {
        let err = Config::parse(&GOOD.replace("0.0.0.0:10027", "nowhere")).unwrap_err();
        assert!(err.contains("line 2"), "{err}");
        let err = Config::parse(&GOOD.replace("kind: docker", "kind: podman")).unwrap_err();
        assert!(err.contains("podman") && err.contains("line 4"), "{err}");
        let err = Config::parse(&GOOD.replace("[\"bash\"]", "[]")).unwrap_err();
        assert!(
            err.contains("defaults.command") && err.contains("line 8"),
            "{err}"
        );
    }
}
