//! The plugin's configuration file: defaults for flags, in YAML. Found at `--plugin-config
//! FILE`, else `$KUBECTL_DEBUG_CONFIG`, else `~/.kube/debug-config` (only that one may be
//! absent). A flag always wins over the file, and the file over the built-in default: every
//! boolean can be turned off on the command line (`--retain=false`).
//!
//! ```yaml
//! image: nicolaka/netshoot:latest
//! command: [bash]
//! agentNamespace: kubectl-debug
//! agentSelector: app.kubernetes.io/name=kubectl-debug-agent
//! agentPort: 10027
//! connect: port-forward      # or direct
//! agentCA: ~/.kube/kubectl-debug-ca.crt   # default: the kubectl-debug-agent-ca ConfigMap
//! pullPolicy: IfNotPresent   # Always | IfNotPresent | Never
//! imagePullSecrets: [regcred]  # --image-pull-secret, when none is given
//! retain: false
//! record: false
//! agentless: auto            # always | never
//! agentImage: registry.example.com/kubectl-debug-agent:0.1.0
//! agentImagePullPolicy: IfNotPresent
//! agentStartTimeout: 2m
//! agentResources: {requests: {cpu: 50m, memory: 64Mi}, limits: {memory: 512Mi}}
//! agentRuntimeSockets: {containerd: /run/containerd/containerd.sock}   # docker, containerd, k3s
//! agentExitWhenIdle: 60s     # an on-demand agent's life after its last session
//! ```

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Deserialize;

use crate::cli::{Cli, Connect, DebugOpts, Global, LocalVerb, RecordOpts, SessionOpts, Verb};

/// The environment variable naming the configuration file.
pub const ENV: &str = "KUBECTL_DEBUG_CONFIG";

/// What the file may say; unknown keys are errors.
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PluginConfig {
    /// `--image`.
    pub image: Option<String>,
    /// The command when none is given after `--`.
    pub command: Option<Vec<String>>,
    /// `--agent-namespace`.
    pub agent_namespace: Option<String>,
    /// `--agent-selector`.
    pub agent_selector: Option<String>,
    /// `--agent-port`.
    pub agent_port: Option<u16>,
    /// `--connect`.
    pub connect: Option<Connect>,
    /// `--agent-ca`.
    #[serde(rename = "agentCA")]
    pub agent_ca: Option<PathBuf>,
    /// `--pull-policy`.
    #[serde(default, deserialize_with = "pull_policy")]
    pub pull_policy: Option<kdbg_api::PullPolicy>,
    /// `--image-pull-secret`, when the command line gives none.
    pub image_pull_secrets: Option<Vec<String>>,
    /// `--retain`.
    pub retain: Option<bool>,
    /// `--record`.
    pub record: Option<bool>,
    /// `--agentless`.
    pub agentless: Option<crate::cli::Agentless>,
    /// `--agent-image`.
    pub agent_image: Option<String>,
    /// `--agent-image-pull-policy`.
    pub agent_image_pull_policy: Option<String>,
    /// `--agent-start-timeout`.
    pub agent_start_timeout: Option<kdbg_agent::duration::GoDuration>,
    /// The on-demand agent's resource requests and limits.
    pub agent_resources: Option<k8s_openapi::api::core::v1::ResourceRequirements>,
    /// Runtime sockets on nodes where they are not where deploy/ expects them, by runtime
    /// (`docker`, `containerd`, `k3s`).
    #[serde(default)]
    pub agent_runtime_sockets: std::collections::BTreeMap<String, String>,
    /// How long an on-demand agent waits after its last session before it exits.
    pub agent_exit_when_idle: Option<kdbg_agent::duration::GoDuration>,
}

impl PluginConfig {
    /// Reads the file `flag` names, else `$KUBECTL_DEBUG_CONFIG`'s, else
    /// `~/.kube/debug-config` if it exists; no file is an empty configuration.
    pub fn load(flag: Option<&Path>) -> anyhow::Result<PluginConfig> {
        let (path, required) = match (flag, std::env::var_os(ENV).filter(|v| !v.is_empty())) {
            (Some(path), _) => (path.to_path_buf(), "--plugin-config"),
            (None, Some(path)) => (PathBuf::from(path), ENV),
            (None, None) => match std::env::var_os("HOME") {
                Some(home) => (PathBuf::from(home).join(".kube").join("debug-config"), ""),
                None => return Ok(PluginConfig::default()),
            },
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && required.is_empty() => {
                return Ok(PluginConfig::default());
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "reading the plugin configuration {} (named by {required})",
                        path.display()
                    )
                });
            }
        };
        PluginConfig::parse(&text).with_context(|| {
            format!(
                "in the plugin configuration {}; fix it, or name another with --plugin-config",
                path.display()
            )
        })
    }

    /// Parses a configuration.
    pub fn parse(text: &str) -> anyhow::Result<PluginConfig> {
        if text.trim().is_empty() {
            return Ok(PluginConfig::default());
        }
        serde_saphyr::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// Fills what the command line left unset.
    pub fn apply(&self, cli: &mut Cli) {
        self.global(&mut cli.global);
        self.debug(&mut cli.debug);
        match &mut cli.verb {
            Some(Verb::List(args)) => self.global(&mut args.global),
            Some(Verb::Attach(args)) => {
                self.global(&mut args.global);
                self.session(&mut args.session);
            }
            Some(Verb::Rm(args)) => self.global(&mut args.global),
            Some(Verb::Cp(args)) => {
                self.global(&mut args.global);
                fill(&mut args.image, &self.image);
                fill(&mut args.pull_policy, &self.pull_policy);
                self.pull_secrets(&mut args.image_pull_secrets);
                fill(&mut args.retain, &self.retain);
            }
            Some(Verb::Recordings(args)) => match &mut args.verb {
                crate::cli::RecordingsVerb::List(args) => self.global(&mut args.global),
                crate::cli::RecordingsVerb::Get(args) => self.global(&mut args.global),
            },
            Some(Verb::Replay(args)) => self.global(&mut args.global),
            Some(Verb::Watch(args)) => self.global(&mut args.global),
            Some(Verb::Version(args)) => self.global(&mut args.global),
            Some(Verb::Local(local)) => {
                self.debug(&mut local.debug);
                if let Some(LocalVerb::Attach(args)) = &mut local.verb {
                    self.session(&mut args.session);
                }
            }
            Some(Verb::Completion(_) | Verb::ShellInit(_)) | None => {}
        }
    }

    fn global(&self, global: &mut Global) {
        fill(&mut global.agent_namespace, &self.agent_namespace);
        fill(&mut global.agent_selector, &self.agent_selector);
        fill(&mut global.agent_port, &self.agent_port);
        fill(&mut global.connect, &self.connect);
        fill(&mut global.agent_ca, &self.agent_ca);
        fill(&mut global.agentless, &self.agentless);
        fill(&mut global.agent_image, &self.agent_image);
        fill(
            &mut global.agent_image_pull_policy,
            &self.agent_image_pull_policy,
        );
        fill(
            &mut global.agent_start_timeout,
            &self.agent_start_timeout.map(|d| d.0),
        );
        fill(&mut global.agent_resources, &self.agent_resources);
        fill(
            &mut global.agent_exit_when_idle,
            &self.agent_exit_when_idle.map(|d| d.0),
        );
        if global.agent_runtime_sockets.is_empty() {
            global
                .agent_runtime_sockets
                .clone_from(&self.agent_runtime_sockets);
        }
    }

    fn pull_secrets(&self, flags: &mut Vec<String>) {
        if flags.is_empty()
            && let Some(names) = &self.image_pull_secrets
        {
            flags.clone_from(names);
        }
    }

    fn debug(&self, debug: &mut DebugOpts) {
        fill(&mut debug.image, &self.image);
        fill(&mut debug.pull_policy, &self.pull_policy);
        self.pull_secrets(&mut debug.image_pull_secrets);
        fill(&mut debug.retain, &self.retain);
        if debug.command.is_empty()
            && let Some(command) = &self.command
        {
            debug.command.clone_from(command);
        }
        self.record(&mut debug.record);
    }

    fn session(&self, session: &mut SessionOpts) {
        if session.command.is_empty()
            && let Some(command) = &self.command
        {
            session.command.clone_from(command);
        }
        self.record(&mut session.record);
    }

    fn record(&self, record: &mut RecordOpts) {
        fill(&mut record.record, &self.record);
    }
}

fn pull_policy<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<kdbg_api::PullPolicy>, D::Error> {
    let text = Option::<String>::deserialize(d)?;
    text.map(|t| t.parse().map_err(serde::de::Error::custom))
        .transpose()
}

fn fill<T: Clone>(flag: &mut Option<T>, file: &Option<T>) {
    if flag.is_none() {
        flag.clone_from(file);
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    const FILE: &str = "image: tools:1\ncommand: [sh, -l]\nagentNamespace: dbg\nagentSelector: app=agent\nagentPort: 4000\nconnect: direct\npullPolicy: Never\nretain: true\nrecord: true\n";

    fn parsed(line: &str) -> Cli {
        let args: Vec<std::ffi::OsString> = line.split(' ').map(Into::into).collect();
        let mut cli = Cli::try_parse_from(crate::cli::verb_first(args)).unwrap();
        PluginConfig::parse(FILE).unwrap().apply(&mut cli);
        cli
    }

    #[test]
    fn the_file_fills_what_the_command_line_leaves_unset() {
        let cli = parsed("kubectl-debug web-1");
        let (g, d) = (&cli.global, &cli.debug);
        assert_eq!(d.image.as_deref(), Some("tools:1"));
        assert_eq!(d.command, ["sh", "-l"]);
        assert_eq!(g.agent_namespace(), "dbg");
        assert_eq!(g.agent_selector(), "app=agent");
        assert_eq!(g.agent_port(), 4000);
        assert_eq!(g.connect(), Connect::Direct);
        assert_eq!(d.pull_policy, Some(kdbg_api::PullPolicy::Never));
        assert_eq!(d.retain, Some(true));
        assert_eq!(d.record.record, Some(true));
    }

    #[test]
    fn every_flag_beats_the_file_and_booleans_turn_off() {
        let cli = parsed(
            "kubectl-debug web-1 --image other:2 --agent-namespace ns2 --agent-selector a=b --agent-port 5000 --connect port-forward --pull-policy Always --retain=false --record=false -- top",
        );
        let (g, d) = (&cli.global, &cli.debug);
        assert_eq!(d.image.as_deref(), Some("other:2"));
        assert_eq!(d.command, ["top"]);
        assert_eq!(g.agent_namespace(), "ns2");
        assert_eq!(g.agent_selector(), "a=b");
        assert_eq!(g.agent_port(), 5000);
        assert_eq!(g.connect(), Connect::PortForward);
        assert_eq!(d.pull_policy, Some(kdbg_api::PullPolicy::Always));
        assert_eq!(d.retain, Some(false));
        assert_eq!(d.record.record, Some(false));
    }

    #[test]
    fn without_file_or_flags_the_built_in_defaults_hold() {
        let args: Vec<std::ffi::OsString> = ["kubectl-debug", "web-1"].map(Into::into).to_vec();
        let mut cli = Cli::try_parse_from(args).unwrap();
        PluginConfig::default().apply(&mut cli);
        assert_eq!(cli.global.agent_port(), kdbg_api::DEFAULT_PORT);
        assert_eq!(cli.global.connect(), Connect::PortForward);
        assert_eq!(cli.global.agent_namespace(), "kubectl-debug");
        assert_eq!(cli.debug.retain, None);
    }

    #[test]
    fn the_file_fills_the_verbs_too() {
        let cli = parsed("kubectl-debug -n x list");
        let Some(Verb::List(list)) = cli.verb else {
            panic!("list")
        };
        assert_eq!(list.global.agent_port(), 4000);
        assert_eq!(list.global.namespace.as_deref(), Some("x"));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors_naming_them() {
        let err = PluginConfig::parse("retian: true\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("retian"), "{err}");
        let err = PluginConfig::parse("connect: sideways\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sideways"), "{err}");
    }
}
