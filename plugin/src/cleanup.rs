//! The pods this command starts for itself (on-demand agents, copies of pods): deleted when it
//! ends, on SIGINT and SIGTERM, and, when it is killed outright (SIGKILL, the OOM killer, a
//! closed laptop lid is another matter), by its watchdog.
//!
//! The watchdog is this program again (`kubectl-debug __watchdog`, not a verb), started with
//! the first pod to remember, in a process group of its own so that the terminal's Ctrl-C
//! does not reach it, with no terminal and none of our output (it never holds a pipe of the
//! user's open). Its stdin is a pipe only this process writes to, one JSON [`Message`] per
//! line. The kernel closes the pipe when this process ends, however it ends: an end of file
//! without [`Message::Done`] means it died before cleaning up, and the watchdog deletes the
//! pods it was told of (each only if it is still the pod of that UID, so never a namesake),
//! with the same kubeconfig and context, then exits.
//!
//! Nothing on the node needs the power to delete pods for this: the user's own credentials,
//! which created them, delete them.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, Preconditions};
use serde::{Deserialize, Serialize};

/// The argument that makes this program a watchdog ([`watchdog`]).
pub const WATCHDOG: &str = "__watchdog";

/// What the watchdog is told, one JSON object per line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
enum Message {
    /// How to reach the cluster: the command's `--kubeconfig` and `--context`.
    Connect {
        kubeconfig: Option<PathBuf>,
        context: Option<String>,
    },
    /// A pod to delete if the command dies.
    Pod {
        namespace: String,
        name: String,
        uid: String,
    },
    /// A pod the command deleted (or kept) itself.
    Forget { namespace: String, name: String },
    /// The command cleaned up: nothing is left to do.
    Done,
}

/// A pod started for this command.
#[derive(Clone)]
struct Started {
    pods: Api<Pod>,
    namespace: String,
    name: String,
    /// What the pod is to the user, e.g. "the on-demand agent's pod".
    what: &'static str,
}

struct Registry {
    started: Vec<Started>,
    /// The kubeconfig and context, once the cluster is connected.
    connect: Option<Message>,
    watchdog: Option<(Child, ChildStdin)>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    started: Vec::new(),
    connect: None,
    watchdog: None,
});

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    REGISTRY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How a watchdog reaches the cluster: called when the cluster is connected.
pub fn connected(kubeconfig: Option<PathBuf>, context: Option<String>) {
    registry().connect = Some(Message::Connect {
        kubeconfig,
        context,
    });
}

/// Deletes pod `pod` (`what` it is to the user) when this process ends, however it ends.
pub fn remember(pods: Api<Pod>, pod: &Pod, what: &'static str) {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let mut registry = registry();
    registry.started.push(Started {
        pods,
        namespace: namespace.clone(),
        name: name.clone(),
        what,
    });
    let message = Message::Pod {
        namespace,
        name,
        uid,
    };
    if !tell(&mut registry, &message) {
        tracing::warn!(
            "no watchdog: if this command is killed with SIGKILL, delete its pods by hand"
        );
    }
}

/// Tells the watchdog `message`, starting it first if need be; `false` if it cannot be.
fn tell(registry: &mut Registry, message: &Message) -> bool {
    if registry.watchdog.is_none() {
        let Some(connect) = registry.connect.clone() else {
            return false;
        };
        match spawn() {
            Ok(mut watchdog) => {
                let said = send(&mut watchdog.1, &connect);
                registry.watchdog = Some(watchdog);
                if !said {
                    return false;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "starting the watchdog");
                return false;
            }
        }
    }
    registry
        .watchdog
        .as_mut()
        .is_some_and(|(_, stdin)| send(stdin, message))
}

fn send(stdin: &mut ChildStdin, message: &Message) -> bool {
    let Ok(mut line) = serde_json::to_vec(message) else {
        return false;
    };
    line.push(b'\n');
    stdin.write_all(&line).and_then(|()| stdin.flush()).is_ok()
}

fn spawn() -> std::io::Result<(Child, ChildStdin)> {
    use std::os::unix::process::CommandExt as _;
    let mut child = Command::new(std::env::current_exe()?)
        .arg(WATCHDOG)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()?;
    let stdin = child.stdin.take().ok_or(std::io::ErrorKind::BrokenPipe)?;
    Ok((child, stdin))
}

/// Deletes a remembered pod now (it failed to start, or its part is over).
pub async fn delete_now(pods: &Api<Pod>, namespace: &str, name: &str) {
    delete(pods, name).await;
    forget(namespace, name);
}

fn forget(namespace: &str, name: &str) {
    let mut registry = registry();
    registry.started.retain(|s| s.name != name);
    let message = Message::Forget {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    };
    if let Some((_, stdin)) = registry.watchdog.as_mut() {
        send(stdin, &message);
    }
}

async fn delete(pods: &Api<Pod>, name: &str) {
    match pods.delete(name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(e) => eprintln!(
            "warning: deleting pod {name} failed: {e}; delete it with kubectl delete pod {name}"
        ),
    }
}

/// Deletes every pod this process started and dismisses the watchdog. When `failed`, and one
/// of them was deleted by someone else meanwhile, says so: that is why the session broke.
pub async fn clean_up(failed: bool) -> Option<String> {
    let started = std::mem::take(&mut registry().started);
    let mut note = None;
    for s in started {
        if failed {
            let gone = match s.pods.get_opt(&s.name).await {
                Ok(None) => true,
                Ok(Some(p)) => p.metadata.deletion_timestamp.is_some(),
                Err(_) => false,
            };
            if gone {
                note = Some(format!(
                    "{} {}/{} was deleted during the session",
                    s.what, s.namespace, s.name
                ));
            }
        }
        delete(&s.pods, &s.name).await;
    }
    let mut registry = registry();
    if let Some((mut child, mut stdin)) = registry.watchdog.take() {
        send(&mut stdin, &Message::Done);
        drop(stdin);
        // It exits at once; reap it so that it is no zombie of ours meanwhile.
        let _ = child.wait();
    }
    note
}

/// The watchdog's whole life (`kubectl-debug __watchdog`): reads [`Message`]s from stdin
/// until `Done` or the end of file; at an end of file without `Done`, deletes the pods still
/// remembered. Exits 0 either way.
pub fn watchdog() -> std::process::ExitCode {
    let (connect, pods) = match read(std::io::stdin().lock()) {
        Watched::Done => return std::process::ExitCode::SUCCESS,
        Watched::Orphaned { connect, pods } => (connect, pods),
    };
    if pods.is_empty() {
        return std::process::ExitCode::SUCCESS;
    }
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return std::process::ExitCode::FAILURE;
    };
    runtime.block_on(async {
        let global = crate::cli::Global {
            kubeconfig: connect.0,
            context: connect.1,
            ..Default::default()
        };
        let Ok(cluster) = crate::cluster::Cluster::connect(&global).await else {
            return;
        };
        for (namespace, name, uid) in pods {
            let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &namespace);
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            // The API server may be briefly away: a few tries, a few seconds apart.
            for _ in 0..5 {
                match pods.delete(&name, &params).await {
                    Ok(_) => break,
                    // Gone, or another pod of that name now (409): not ours to delete.
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => break,
                    Err(_) => tokio::time::sleep(Duration::from_secs(2)).await,
                }
            }
        }
    });
    std::process::ExitCode::SUCCESS
}

/// What the watchdog read.
#[derive(Debug, PartialEq)]
enum Watched {
    /// The command cleaned up.
    Done,
    /// The command died: the cluster, and the pods (namespace, name, UID) still to delete.
    Orphaned {
        connect: (Option<PathBuf>, Option<String>),
        pods: Vec<(String, String, String)>,
    },
}

fn read(input: impl std::io::BufRead) -> Watched {
    let mut connect = (None, None);
    let mut pods: Vec<(String, String, String)> = Vec::new();
    for line in input.lines() {
        let Ok(line) = line else { break };
        match serde_json::from_str::<Message>(&line) {
            Ok(Message::Done) => return Watched::Done,
            Ok(Message::Connect {
                kubeconfig,
                context,
            }) => connect = (kubeconfig, context),
            Ok(Message::Pod {
                namespace,
                name,
                uid,
            }) => pods.push((namespace, name, uid)),
            Ok(Message::Forget { namespace, name }) => {
                pods.retain(|(ns, n, _)| !(*ns == namespace && *n == name));
            }
            Err(_) => {}
        }
    }
    Watched::Orphaned { connect, pods }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(messages: &[Message]) -> Vec<u8> {
        messages
            .iter()
            .flat_map(|m| {
                let mut line = serde_json::to_vec(m).unwrap();
                line.push(b'\n');
                line
            })
            .collect()
    }

    fn pod(name: &str) -> Message {
        Message::Pod {
            namespace: "shop".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
        }
    }

    #[test]
    fn an_end_without_done_leaves_the_pods_not_forgotten_to_delete() {
        let connect = Message::Connect {
            kubeconfig: Some("/k".into()),
            context: Some("c".into()),
        };
        let forget = Message::Forget {
            namespace: "shop".into(),
            name: "a".into(),
        };
        let input = lines(&[connect.clone(), pod("a"), pod("b"), forget]);
        assert_eq!(
            read(&input[..]),
            Watched::Orphaned {
                connect: (Some("/k".into()), Some("c".into())),
                pods: vec![("shop".into(), "b".into(), "uid-b".into())],
            }
        );
        let done = lines(&[connect, pod("a"), Message::Done]);
        assert_eq!(read(&done[..]), Watched::Done);
        // A line cut short by the kill is skipped, not taken for Done.
        let mut cut = lines(&[pod("a")]);
        cut.extend_from_slice(b"{\"kind\":\"do");
        assert!(matches!(read(&cut[..]), Watched::Orphaned { pods, .. } if pods.len() == 1));
    }
}
