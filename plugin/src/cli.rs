//! The command line, as clap derive structs. Flags follow `kubectl exec` where they overlap.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use kdbg_api::DEFAULT_PORT;

mod local;

pub use local::{
    Local, LocalAttach, LocalList, LocalRm, LocalRuntime, LocalRuntimeKind, LocalVerb,
};

/// Debug a running pod or container with tools its image lacks: start a debug container that
/// shares its pid, network and ipc namespaces, and get a shell in it.
#[derive(Debug, Parser)]
#[command(
    name = "kubectl-debug",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = "Examples:\n  kubectl-debug web-1 --image nicolaka/netshoot\n  kubectl-debug -n prod web-1 -c app -- ss -tlnp\n  kubectl-debug web-1 --retain -- sh      # keep the debug container\n  kubectl-debug crashy-1 --fork -- sh     # a copy of a crash-looping pod, its container held still\n  kubectl-debug node/worker-1 -- sh       # the node itself, its files at /host\n  kubectl-debug list -A\n  kubectl-debug attach web-1 web-1-dbg-x7k2q\n  kubectl-debug rm web-1 --all\n  kubectl-debug cp web-1:/var/log/app ./app-logs   # and cp LOCAL POD:PATH\n  kubectl-debug web-1 --record-local web-1.cast   # keep a recording here\n  kubectl-debug recordings list -A\n  kubectl-debug replay SESSION\n  kubectl-debug watch web-1 web-1-dbg-x7k2q\n  kubectl-debug local docker://my-container --image busybox -- sh\n\nA pod named like a verb (list, attach, rm, cp, local, recordings, replay, watch, version, completion, shell-init, help) is written pod/NAME."
)]
pub struct Cli {
    /// Options of every verb.
    #[command(flatten)]
    pub common: Common,
    /// Options that choose the cluster and the agent.
    #[command(flatten)]
    pub global: Global,
    /// Another verb than debugging a pod.
    #[command(subcommand)]
    pub verb: Option<Verb>,
    /// The pod to debug, or node/NAME: the node itself (its namespaces, its files at /host).
    #[arg(value_name = "POD", required = true)]
    pub pod: Option<String>,
    /// The pod's container to join (default: the first).
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// What to run.
    #[command(flatten)]
    pub debug: DebugOpts,
}

/// The verbs, by name, from the clap model (so none can be forgotten), with `help`.
pub fn verbs() -> &'static [String] {
    &model().verbs
}

/// What [`verb_first`] needs of the command line, read once from the clap model.
struct Model {
    verbs: Vec<String>,
    /// The flags before a verb that take their value in the next argument (`-n NS`): all the
    /// root command's flags that take a value, but those that need `=` (`-v=6`).
    with_value: Vec<String>,
}

fn model() -> &'static Model {
    static MODEL: std::sync::OnceLock<Model> = std::sync::OnceLock::new();
    MODEL.get_or_init(|| {
        let command = <Cli as clap::CommandFactory>::command();
        let mut verbs: Vec<String> = command
            .get_subcommands()
            .map(|c| c.get_name().to_owned())
            .collect();
        verbs.push("help".into());
        let with_value = command
            .get_arguments()
            .filter(|a| {
                !a.is_positional() && a.get_action().takes_values() && !a.is_require_equals_set()
            })
            .flat_map(|a| {
                let long = a.get_long().map(|l| format!("--{l}"));
                let short = a.get_short().map(|s| format!("-{s}"));
                long.into_iter().chain(short)
            })
            .collect();
        Model { verbs, with_value }
    })
}

/// Moves a verb given after global flags to the front (`-n prod list` is `list -n prod`),
/// so global flags may come before the verb, as kubectl's do; clap reads global flags after
/// a verb already.
pub fn verb_first(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let Some(at) = first_word(&args, 1) else {
        return args;
    };
    let verb = args[at].to_string_lossy().into_owned();
    if !verbs().contains(&verb) {
        return args;
    }
    let mut moved = args;
    let verb = moved.remove(at);
    moved.insert(1, verb);
    // A verb of a verb (`recordings list`) comes right after it, before the flags.
    if moved[1] == "recordings"
        && let Some(sub) = first_word(&moved, 2)
        && sub > 2
    {
        let sub = moved.remove(sub);
        moved.insert(2, sub);
    }
    moved
}

/// The index of the first argument from `from` on that is neither a flag nor a flag's value;
/// none past `--`.
fn first_word(args: &[std::ffi::OsString], from: usize) -> Option<usize> {
    let mut i = from;
    while i < args.len() {
        let arg = args[i].to_string_lossy();
        if arg == "--" {
            return None;
        }
        if model().with_value.iter().any(|f| *f == arg) {
            i += 2;
            continue;
        }
        if arg.starts_with('-') {
            i += 1;
            continue;
        }
        return Some(i);
    }
    None
}

/// Flags of every verb.
#[derive(Debug, Args, Clone)]
pub struct Common {
    /// Log verbosity, like kubectl's: 0 shows only our own messages, 4 debug logs, 6 and
    /// more everything (`-v` alone is 4; `-v=6` or `--v=6` to choose).
    #[arg(
        short = 'v',
        long = "v",
        global = true,
        value_name = "N",
        default_value_t = 0,
        num_args = 0..=1,
        default_missing_value = "4",
        require_equals = true
    )]
    pub verbosity: u8,
    /// The plugin's configuration file (default: $KUBECTL_DEBUG_CONFIG, else
    /// ~/.kube/debug-config if it exists).
    #[arg(long, global = true, value_name = "FILE")]
    pub plugin_config: Option<PathBuf>,
}

/// How the plugin reaches a node's agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Connect {
    /// Through the API server: a port-forward to the node's agent pod (no port of the
    /// nodes needs to be reachable from here).
    PortForward,
    /// Straight to the node's IP and --agent-port.
    Direct,
}

/// Whether to start an agent on demand on the target's node (`--agentless`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Agentless {
    /// The node's DaemonSet agent if it has one, else an agent started on demand.
    Auto,
    /// An agent started on demand, even where a DaemonSet agent runs.
    Always,
    /// Only the node's DaemonSet agent.
    Never,
}

/// The flags of the verbs that talk to a cluster, like kubectl's global flags (accepted
/// before or after the verb).
#[derive(Debug, Args, Clone, Default)]
pub struct Global {
    /// The pod's namespace (default: the kubeconfig context's, else `default`).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// The kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long)]
    pub context: Option<String>,
    /// The port the node agents listen on (default 10027).
    #[arg(long, value_name = "PORT")]
    pub agent_port: Option<u16>,
    /// How to reach agents (default: port-forward).
    #[arg(long, value_enum, value_name = "MODE")]
    pub connect: Option<Connect>,
    /// The namespace of the agents' pods (default: kubectl-debug).
    #[arg(long, value_name = "NAMESPACE")]
    pub agent_namespace: Option<String>,
    /// The label selector of the agents' pods (default:
    /// app.kubernetes.io/name=kubectl-debug-agent).
    #[arg(long, value_name = "SELECTOR")]
    pub agent_selector: Option<String>,
    /// The CA (PEM) agents' certificates are verified against (default: the
    /// kubectl-debug-agent-ca ConfigMap of the agents' namespace, if there is one; none:
    /// plain HTTP, for agents with insecure: true).
    #[arg(long, value_name = "FILE")]
    pub agent_ca: Option<PathBuf>,
    /// Start an agent pod on the target's node when it has none (auto, the default), always,
    /// or never; `--agentless` alone is `always`. The pod is deleted when the command ends.
    #[arg(long, value_enum, value_name = "MODE", num_args = 0..=1, require_equals = true, default_missing_value = "always")]
    pub agentless: Option<Agentless>,
    /// The on-demand agent's image (default: kubectl-debug-agent:VERSION, the DaemonSet's).
    #[arg(long, value_name = "IMAGE")]
    pub agent_image: Option<String>,
    /// The on-demand agent's image pull policy (Always, IfNotPresent, Never; default: the
    /// DaemonSet's).
    #[arg(long, value_name = "POLICY")]
    pub agent_image_pull_policy: Option<String>,
    /// How long an on-demand agent may take to start (default: 2m).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub agent_start_timeout: Option<std::time::Duration>,
    /// The on-demand agent's resources (plugin config `agentResources` only).
    #[arg(skip)]
    pub agent_resources: Option<k8s_openapi::api::core::v1::ResourceRequirements>,
    /// Runtime sockets on nodes where they are not where deploy/ expects them (plugin config
    /// `agentRuntimeSockets` only).
    #[arg(skip)]
    pub agent_runtime_sockets: std::collections::BTreeMap<String, String>,
    /// How long an on-demand agent waits after its last session before it exits (plugin
    /// config `agentExitWhenIdle` only; default 60s).
    #[arg(skip)]
    pub agent_exit_when_idle: Option<std::time::Duration>,
}

/// A duration as kubectl writes them: `90s`, `2m`, `1m30s`.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    kdbg_agent::duration::GoDuration::parse(text)
        .map(|d| d.0)
        .map_err(|e| e.to_string())
}

/// The agents' namespace when neither a flag nor the configuration names one.
pub const AGENT_NAMESPACE: &str = "kubectl-debug";
/// The agents' label selector when neither a flag nor the configuration names one.
pub const AGENT_SELECTOR: &str = "app.kubernetes.io/name=kubectl-debug-agent";

impl Global {
    /// The agents' port.
    pub fn agent_port(&self) -> u16 {
        self.agent_port.unwrap_or(DEFAULT_PORT)
    }

    /// How agents are reached.
    pub fn connect(&self) -> Connect {
        self.connect.unwrap_or(Connect::PortForward)
    }

    /// The agents' namespace.
    pub fn agent_namespace(&self) -> &str {
        self.agent_namespace.as_deref().unwrap_or(AGENT_NAMESPACE)
    }

    /// The agents' label selector.
    pub fn agent_selector(&self) -> &str {
        self.agent_selector.as_deref().unwrap_or(AGENT_SELECTOR)
    }

    /// Whether agents are started on demand.
    pub fn agentless(&self) -> Agentless {
        self.agentless.unwrap_or(Agentless::Auto)
    }
}

/// The debug container and the session.
#[derive(Debug, Args, Clone)]
pub struct DebugOpts {
    /// The tools image (default: the agent's, nicolaka/netshoot:latest).
    #[arg(long)]
    pub image: Option<String>,
    /// A name for the debug container.
    #[arg(long)]
    pub name: Option<String>,
    /// Keep the debug container after the session (see `list`); `--retain=false` to
    /// override the configuration file.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub retain: Option<bool>,
    /// When to pull the image: Always, IfNotPresent (default) or Never.
    #[arg(long, value_name = "POLICY")]
    pub pull_policy: Option<kdbg_api::PullPolicy>,
    /// A secret of the pod's namespace with registry credentials for the image
    /// (kubernetes.io/dockerconfigjson), read with your rights; repeatable. The pod's and its
    /// service account's imagePullSecrets are used too.
    #[arg(long = "image-pull-secret", value_name = "NAME")]
    pub image_pull_secrets: Vec<String>,
    /// The image's platform to pull and run, os/arch[/variant] (e.g. linux/arm/v7; default:
    /// the node's). An image without it fails with the platforms it has.
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<kdbg_api::Platform>,
    /// What the debug container may do: general (SYS_PTRACE), netadmin (NET_ADMIN, NET_RAW),
    /// sysadmin (SYS_PTRACE, SYS_ADMIN, bpf and perf) or restricted (nothing more); default:
    /// the agent's (general unless its policy says otherwise; sysadmin needs node-level
    /// permission).
    #[arg(long, value_name = "PROFILE")]
    pub profile: Option<kdbg_api::Profile>,
    /// Run the command with the target container's root filesystem as `/` (chroot; nothing
    /// is written in it); the debug image's root stays reachable at $DEBUG_ROOT, its
    /// directories at the end of PATH (static tools run; dynamically linked ones need their
    /// libraries in the target). Without it the target's root is at /target ($TARGET_ROOT).
    #[arg(long)]
    pub chroot: bool,
    /// Pass stdin to the debug container (default with -t on a terminal).
    #[arg(short = 'i', long)]
    pub stdin: bool,
    /// Allocate a terminal (default when stdin is a terminal).
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Recording.
    #[command(flatten)]
    pub record: RecordOpts,
    /// Debugging a copy of the pod.
    #[command(flatten)]
    pub fork: ForkOpts,
    /// The command and its arguments (default: the agent's, bash).
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// `--fork` and its flags.
#[derive(Debug, Args, Clone, Default)]
pub struct ForkOpts {
    /// Debug a copy of the pod whose container holds still (for a pod that crashes or exits
    /// at once): labels and probes dropped, the container's command replaced by a hold that
    /// needs nothing from its image; the copy is deleted at the end unless --retain.
    #[arg(long)]
    pub fork: bool,
    /// Labels of the pod the copy keeps (comma-separated; by default none, so no Service or
    /// controller picks the copy up).
    #[arg(long, value_name = "KEYS", value_delimiter = ',', requires = "fork")]
    pub fork_keep_labels: Vec<String>,
    /// Swap a container's image in the copy (`*=IMAGE` for every container; repeatable).
    #[arg(long, value_name = "NAME=IMAGE", value_parser = crate::fork::set_image, requires = "fork")]
    pub set_image: Vec<(String, String)>,
    /// Where the copy runs: the pod's node (same, the default: its images are there) or
    /// wherever the scheduler puts it (any).
    #[arg(long, value_enum, value_name = "WHERE", requires = "fork")]
    pub fork_node: Option<ForkNode>,
}

/// `--fork-node`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ForkNode {
    /// The original's node.
    Same,
    /// Any node.
    Any,
}

/// `--record` and `--record-local`.
#[derive(Debug, Args, Clone, Default)]
pub struct RecordOpts {
    /// Ask the agent to record the session (when its recordings.mode is optional; with
    /// always it records anyway); `--record=false` to override the configuration file.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub record: Option<bool>,
    /// Also record the session here, in asciicast v2 (works in local mode and with agents
    /// that do not record).
    #[arg(long, value_name = "FILE")]
    pub record_local: Option<PathBuf>,
}

/// Verbs other than debugging a pod.
#[derive(Debug, Subcommand)]
pub enum Verb {
    /// List debug containers (Kubernetes does not see them): of a pod, of a namespace, or
    /// with -A of every namespace.
    List(ListArgs),
    /// Open a new session in a retained debug container (running or exited).
    Attach(AttachArgs),
    /// Remove debug containers of a pod.
    Rm(RmArgs),
    /// Copy files and directories between a pod's container and here, through a debug
    /// container (neither image needs tar): `cp POD:PATH LOCAL`, `cp LOCAL POD:PATH`, `-`
    /// for a tar stream on stdin or stdout; `node/NAME:PATH` for the node's own files.
    Cp(crate::cp::CpArgs),
    /// Debug a container on this machine, with no cluster: `local docker://NAME_OR_ID` or
    /// `local containerd://ID`; `local list`, `local attach`, `local rm` as above.
    Local(Box<Local>),
    /// Recorded sessions, kept by the agents: `recordings list`, `recordings get SESSION`.
    Recordings(RecordingsArgs),
    /// Play a recording in the terminal with its timing (a file, or a SESSION the agents
    /// keep); without a terminal, print its output at once.
    Replay(ReplayArgs),
    /// Watch another user's running terminal session, read-only, from its current screen.
    Watch(WatchArgs),
    /// The plugin's version, and the agents' of the nodes asked.
    Version(VersionArgs),
    /// Shell completion: `source <(kubectl-debug completion bash)`.
    Completion(ShellArgs),
    /// Completion and an opt-in `kubectl` shell function, so that `kubectl debug POD ...`
    /// reaches this tool: `source <(kubectl-debug shell-init bash)`.
    ShellInit(ShellArgs),
}

/// `version`.
#[derive(Debug, Args)]
pub struct VersionArgs {
    /// The cluster and its agents.
    #[command(flatten)]
    pub global: Global,
    /// Only the plugin's version, without asking any agent.
    #[arg(long)]
    pub client: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<Output>,
}

/// `completion` and `shell-init`.
#[derive(Debug, Args)]
pub struct ShellArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// A shell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    /// bash.
    Bash,
    /// zsh.
    Zsh,
    /// fish.
    Fish,
}

/// `recordings`.
#[derive(Debug, Args)]
pub struct RecordingsArgs {
    /// What to do.
    #[command(subcommand)]
    pub verb: RecordingsVerb,
}

/// `recordings list` and `recordings get`.
#[derive(Debug, Subcommand)]
pub enum RecordingsVerb {
    /// List recordings: of a pod, of a namespace, or with -A of every namespace.
    List(RecordingsList),
    /// Fetch a recording (asciicast) to stdout, or to a file with -o.
    Get(RecordingsGet),
}

/// `recordings list`.
#[derive(Debug, Args)]
pub struct RecordingsList {
    /// The cluster and its agents.
    #[command(flatten)]
    pub global: Global,
    /// Only this pod's recordings.
    #[arg(value_name = "POD")]
    pub pod: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long, conflicts_with = "pod")]
    pub all_namespaces: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<Output>,
}

/// `recordings get`.
#[derive(Debug, Args)]
pub struct RecordingsGet {
    /// The cluster and its agents.
    #[command(flatten)]
    pub global: Global,
    /// The session (SESSION from `recordings list`).
    #[arg(value_name = "SESSION")]
    pub session: String,
    /// Write it to this file instead of stdout.
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Look for it on every namespace's nodes (default: the namespace's).
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
}

/// `replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The cluster and its agents.
    #[command(flatten)]
    pub global: Global,
    /// A recording file (v2 or v3), or a SESSION the agents keep.
    #[arg(value_name = "FILE|SESSION")]
    pub recording: String,
    /// Play this many times faster.
    #[arg(long, default_value_t = 1.0, value_name = "X")]
    pub speed: f64,
    /// Shorten every pause to at most this many seconds (default: the recording's, if any).
    #[arg(long, value_name = "S")]
    pub idle_time_limit: Option<f64>,
    /// With a SESSION: look for it on every namespace's nodes.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
}

/// `watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The cluster and its agents.
    #[command(flatten)]
    pub global: Global,
    /// The pod the session debugs.
    #[arg(value_name = "POD")]
    pub pod: String,
    /// The session (from `list -o wide`), or its debug container's NAME.
    #[arg(value_name = "SESSION|NAME")]
    pub session: String,
}

/// `-o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// More columns (list: TARGET, USER, SESSION, WATCHERS; recordings list: FORMAT,
    /// STATUS).
    Wide,
    /// `{"items": [...]}`.
    Json,
    /// The same as YAML.
    Yaml,
}

/// `list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// The cluster and its agents.
    #[command(flatten)]
    pub global: Global,
    /// Only this pod's debug containers (node/NAME: the node's own).
    #[arg(value_name = "POD")]
    pub pod: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long, conflicts_with = "pod")]
    pub all_namespaces: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<Output>,
}

/// `attach`.
#[derive(Debug, Args)]
pub struct AttachArgs {
    /// The cluster and its agents.
    #[command(flatten)]
    pub global: Global,
    /// The pod the debug container belongs to (node/NAME: the node's).
    #[arg(value_name = "POD")]
    pub pod: String,
    /// The debug container (NAME from `list`).
    #[arg(value_name = "NAME")]
    pub name: String,
    /// How to run.
    #[command(flatten)]
    pub session: SessionOpts,
}

/// `-i`, `-t` and the command of a session in an existing debug container.
#[derive(Debug, Args, Clone)]
pub struct SessionOpts {
    /// Run the command with the target container's root filesystem as `/` (chroot; nothing
    /// is written in it); the debug image's root stays reachable at $DEBUG_ROOT, its
    /// directories at the end of PATH (static tools run; dynamically linked ones need their
    /// libraries in the target). Without it the target's root is at /target ($TARGET_ROOT).
    #[arg(long)]
    pub chroot: bool,
    /// Pass stdin to the command (default with -t on a terminal).
    #[arg(short = 'i', long)]
    pub stdin: bool,
    /// Allocate a terminal (default when stdin is a terminal).
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Recording.
    #[command(flatten)]
    pub record: RecordOpts,
    /// The command and its arguments (default: the agent's, bash).
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// `rm`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// The cluster and its agents.
    #[command(flatten)]
    pub global: Global,
    /// The pod the debug containers belong to (node/NAME: the node's).
    #[arg(value_name = "POD")]
    pub pod: String,
    /// The debug containers (NAMEs from `list`).
    #[arg(value_name = "NAME", required_unless_present = "all")]
    pub names: Vec<String>,
    /// Every debug container of the pod.
    #[arg(long, conflicts_with = "names")]
    pub all: bool,
    /// A name that is not there is not an error (like kubectl's).
    #[arg(long)]
    pub ignore_not_found: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<std::ffi::OsString> {
        line.split(' ').map(Into::into).collect()
    }

    #[test]
    fn a_verb_after_global_flags_comes_first() {
        assert_eq!(
            verb_first(args("kubectl-debug --kubeconfig k -n ns list web-1")),
            args("kubectl-debug list --kubeconfig k -n ns web-1")
        );
        assert_eq!(
            verb_first(args("kubectl-debug -v=6 --agent-port 1 rm web-1 x")),
            args("kubectl-debug rm -v=6 --agent-port 1 web-1 x")
        );
        assert_eq!(
            verb_first(args("kubectl-debug --kubeconfig k recordings -n x list -A")),
            args("kubectl-debug recordings list --kubeconfig k -n x -A")
        );
        // A pod is not a verb; a verb-looking pod name after the pod is the command's.
        for line in [
            "kubectl-debug -n ns web-1 -- list",
            "kubectl-debug web-1 list",
            "kubectl-debug list -A",
        ] {
            assert_eq!(verb_first(args(line)), args(line), "{line}");
        }
    }

    #[test]
    fn every_global_flag_may_come_before_every_verb() {
        use clap::Parser;
        let command = <Cli as clap::CommandFactory>::command();
        // Each global flag with a value as a user writes it: `--agentless` takes its
        // (optional) value only after `=`.
        let globals: Vec<String> = <Global as clap::Args>::augment_args(clap::Command::new("g"))
            .get_arguments()
            .filter_map(|a| {
                let flag = format!("--{}", a.get_long()?);
                Some(match flag.as_str() {
                    _ if a.is_require_equals_set() => format!("{flag}=always"),
                    "--connect" => format!("{flag} direct"),
                    _ => format!("{flag} 10"),
                })
            })
            .collect();
        assert!(globals.contains(&"--agent-ca 10".to_owned()), "{globals:?}");
        assert!(
            globals.contains(&"--agentless=always".to_owned()),
            "{globals:?}"
        );
        for verb in command.get_subcommands().map(|c| c.get_name()) {
            for flag in &globals {
                let line = format!("kubectl-debug {flag} {verb}");
                let moved = verb_first(args(&line));
                assert_eq!(moved[1], verb, "{line}");
                // And clap takes it as that verb, not as a pod named like it.
                if let Ok(cli) = Cli::try_parse_from(moved) {
                    assert!(cli.pod.is_none(), "{line}: a pod {:?}", cli.pod);
                }
            }
        }
    }

    #[test]
    fn the_help_names_every_verb_a_pod_must_not_be_called() {
        let help = <Cli as clap::CommandFactory>::command()
            .get_after_help()
            .map(ToString::to_string)
            .unwrap_or_default();
        let named = help.rsplit_once("A pod named like a verb (").unwrap().1;
        for verb in verbs() {
            assert!(
                named.contains(verb.as_str()),
                "{verb} missing from: {named}"
            );
        }
    }

    #[test]
    fn every_verb_parses_after_global_flags() {
        use clap::Parser;
        for line in [
            "kubectl-debug --kubeconfig k list -A",
            "kubectl-debug --context c attach web-1 dbg -- sh",
            "kubectl-debug -n ns rm web-1 --all",
            "kubectl-debug -n ns web-1 --retain -- sh",
            "kubectl-debug -n ns recordings list -A -o wide",
            "kubectl-debug recordings get abc -o x.cast",
            "kubectl-debug -n ns watch web-1 web-1-dbg-x",
            "kubectl-debug replay x.cast --speed 2 --idle-time-limit 1",
            "kubectl-debug web-1 --record --record-local x.cast -- sh",
        ] {
            let parsed = Cli::try_parse_from(verb_first(args(line)));
            assert!(parsed.is_ok(), "{line}: {}", parsed.unwrap_err());
        }
    }
}
