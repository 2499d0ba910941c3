//! `completion` and `shell-init`: completion scripts for bash, zsh and fish (clap's, for verbs
//! and flags, plus pod names from the cluster), and an opt-in `kubectl` shell function that
//! sends `kubectl debug ...` to this tool, except the built-in's own forms.

use clap::CommandFactory;

use crate::cli::{Cli, Shell};

/// The flags only the built-in `kubectl debug` has: a command with one of them, or a
/// `node/NAME` target, goes to kubectl.
pub const BUILT_IN_ONLY: [&str; 12] = [
    "--copy-to",
    "--profile",
    "--ephemeral",
    "--share-processes",
    "--same-node",
    "--set-image",
    "--replace",
    "--target",
    "--attach",
    "--env",
    "--custom",
    "--keep-annotations",
];

/// The completion script for `shell`.
pub fn completion(shell: Shell) -> String {
    let mut command = Cli::command();
    let mut out = Vec::new();
    let generator = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    // clap_complete's bash script mixes up a name with a dash (`kubectl-debug`) with a verb
    // (`kubectl debug`): it is generated for `kubectl_debug`, and registered for our name
    // below.
    let name = match shell {
        Shell::Bash => "kubectl_debug",
        Shell::Zsh | Shell::Fish => "kubectl-debug",
    };
    clap_complete::generate(generator, &mut command, name, &mut out);
    let mut script = String::from_utf8_lossy(&out).into_owned();
    script.push_str(match shell {
        Shell::Bash => BASH_PODS,
        Shell::Zsh => ZSH_PODS,
        Shell::Fish => FISH_PODS,
    });
    script
}

/// Pod names for bash: where clap offers no flag, the pods of the namespace given with -n
/// (or the context's), as `kubectl get pods` lists them.
const BASH_PODS: &str = r#"
# Pod names from the cluster, where a pod is expected.
_kubectl_debug_pods() {
    local ns=() i
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${COMP_WORDS[i]}" in
            -n|--namespace) ns=(-n "${COMP_WORDS[i+1]}") ;;
        esac
    done
    kubectl get pods "${ns[@]}" -o custom-columns=:metadata.name --no-headers 2>/dev/null
}
_kubectl_debug_with_pods() {
    _kubectl_debug "$@"
    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"
    if [[ "$cur" != -* && "$prev" != -* ]]; then
        case "${COMP_WORDS[1]}" in
            local|completion|shell-init|replay|help) ;;
            *) COMPREPLY+=($(compgen -W "$(_kubectl_debug_pods)" -- "$cur")) ;;
        esac
    fi
}
complete -F _kubectl_debug_with_pods -o bashdefault -o default kubectl-debug
"#;

const ZSH_PODS: &str = r#"
# Pod names from the cluster, where a pod is expected.
_kubectl_debug_pods() {
    local -a pods
    pods=(${(f)"$(kubectl get pods -o custom-columns=:metadata.name --no-headers 2>/dev/null)"})
    compadd -a pods
}
_kubectl_debug_with_pods() {
    _kubectl-debug "$@"
    [[ "$PREFIX" != -* ]] && _kubectl_debug_pods
}
compdef _kubectl_debug_with_pods kubectl-debug
"#;

const FISH_PODS: &str = r#"
# Pod names from the cluster, where a pod is expected.
complete -c kubectl-debug -n 'not string match -q -- "-*" (commandline -ct)' -f -a '(kubectl get pods -o custom-columns=:metadata.name --no-headers 2>/dev/null)'
"#;

/// `shell-init`: the completions, then the `kubectl` function.
pub fn init(shell: Shell) -> String {
    let built_in = BUILT_IN_ONLY.join("|");
    let function = match shell {
        Shell::Bash | Shell::Zsh => format!(
            r#"
# kubectl-debug: `kubectl debug ...` reaches kubectl-debug, except the built-in's own forms
# (node/NAME, {list}); `command kubectl debug ...` always reaches the built-in.
kubectl() {{
    if [ "$1" = debug ]; then
        local arg
        for arg in "$@"; do
            case "$arg" in
                node/*|nodes/*) command kubectl "$@"; return ;;
            esac
            case "${{arg%%=*}}" in
                {built_in}) command kubectl "$@"; return ;;
            esac
        done
        shift
        case "$1" in
            -h|--help|help|"")
                kubectl-debug --help
                echo
                echo "(This is kubectl-debug, through shell-init's kubectl function. The built-in: command kubectl debug --help)"
                return ;;
        esac
        kubectl-debug "$@"
        return
    fi
    command kubectl "$@"
}}
"#,
            list = BUILT_IN_ONLY.join(", "),
        ),
        Shell::Fish => format!(
            r#"
# kubectl-debug: `kubectl debug ...` reaches kubectl-debug, except the built-in's own forms;
# `command kubectl debug ...` always reaches the built-in.
function kubectl --wraps kubectl
    if test "$argv[1]" = debug
        for arg in $argv
            if string match -q -r -- '^nodes?/' $arg; or string match -q -r -- '^({built})(=.*)?$' $arg
                command kubectl $argv
                return
            end
        end
        set -e argv[1]
        if test (count $argv) -eq 0; or contains -- $argv[1] -h --help help
            kubectl-debug --help
            echo
            echo "(This is kubectl-debug, through shell-init's kubectl function. The built-in: command kubectl debug --help)"
            return
        end
        kubectl-debug $argv
        return
    end
    command kubectl $argv
end
"#,
            built = built_in.replace('-', "\\-"),
        ),
    };
    completion(shell) + &function
}
