//! `kubectl-debug POD --fork`: debug a copy of a pod whose container will not stay up
//! (`CrashLoopBackOff`, an entrypoint that exits at once, a probe that gets it killed).
//!
//! The copy is the pod with its labels dropped (but those asked for with
//! `--fork-keep-labels`, so no Service, controller or NetworkPolicy picks it up), controller
//! annotations, owner references, status and identity cleared, every probe removed,
//! `restartPolicy: Never`, and the target container's command replaced by a hold that needs
//! nothing from its image: `kdbg-init hold`, a static binary of ours that an init container
//! copies from the agent's image into an `emptyDir` the target mounts read-only. So it works
//! on distroless and scratch images. A normal debug session then joins the copy's container
//! (its files, env, volumes and service account are the original's), and the copy is deleted
//! when the command ends (also on SIGINT and SIGTERM), unless `--retain`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, Pod, PodSpec, SeccompProfile, SecurityContext,
    Volume, VolumeMount,
};
use kube::Api;
use kube::api::PostParams;

/// Where the hold binary is in the copy's target container.
pub const HOLD_DIR: &str = "/.kubectl-debug-hold";
/// The copy's volume and init container that bring the hold binary.
pub const HOLD_VOLUME: &str = "kubectl-debug-hold";
/// The label every copy carries (its value `true`), so copies can be listed and cleaned.
pub const COPY_LABEL: &str = "debug.kubectl-debug.io/copy";
/// The annotation naming the pod a copy is of.
pub const COPY_OF_ANNOTATION: &str = "debug.kubectl-debug.io/copy-of";

/// Annotation prefixes of controllers and tools, which a copy does not keep.
const CONTROLLER_ANNOTATIONS: [&str; 5] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/",
    "controller.kubernetes.io/",
    "kubernetes.io/config.",
    "pod-template-hash",
];

/// What `--fork` and its flags ask for.
#[derive(Debug, Clone, Default)]
pub struct Fork {
    /// Labels of the original the copy keeps.
    pub keep_labels: Vec<String>,
    /// `NAME=IMAGE` (or `*=IMAGE`): images swapped in the copy.
    pub set_images: Vec<(String, String)>,
    /// Whether the copy goes to the original's node (where its images are).
    pub same_node: bool,
}

/// `--set-image NAME=IMAGE`, checked.
pub fn set_image(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, image)) if !name.is_empty() && !image.is_empty() => {
            Ok((name.to_owned(), image.to_owned()))
        }
        _ => Err(format!(
            "--set-image {text:?} is not NAME=IMAGE (a container's name, or * for every container)"
        )),
    }
}

/// `<pod, cut to fit>-debug-<suffix>`, 63 characters at most.
pub fn copy_name(pod: &str, suffix: &str) -> String {
    let room = 63 - "-debug-".len() - suffix.len();
    let stem: String = pod.chars().take(room).collect();
    format!("{}-debug-{suffix}", stem.trim_end_matches(['-', '.']))
}

/// The copy of `original` whose container `container` holds still; `hold_image` is the
/// agent's image, which brings the hold binary.
pub fn copy(
    original: &Pod,
    container: &str,
    fork: &Fork,
    name: &str,
    hold_image: &str,
) -> anyhow::Result<Pod> {
    let mut spec: PodSpec = original
        .spec
        .clone()
        .ok_or_else(|| anyhow!("the pod has no spec"))?;
    if !spec.containers.iter().any(|c| c.name == container) {
        bail!("container \"{container}\" not found in the pod");
    }
    if !fork.same_node {
        spec.node_name = None;
    }
    spec.restart_policy = Some("Never".into());
    spec.ephemeral_containers = None;
    for (wanted, image) in &fork.set_images {
        let mut found = false;
        for c in spec
            .containers
            .iter_mut()
            .chain(spec.init_containers.iter_mut().flatten())
        {
            if wanted == "*" || &c.name == wanted {
                c.image = Some(image.clone());
                found = true;
            }
        }
        if !found {
            bail!("--set-image {wanted}=...: the pod has no container \"{wanted}\"");
        }
    }
    for c in spec.containers.iter_mut() {
        c.liveness_probe = None;
        c.readiness_probe = None;
        c.startup_probe = None;
        if c.name == container {
            c.command = Some(vec![format!("{HOLD_DIR}/kdbg-init"), "hold".into()]);
            c.args = None;
            c.volume_mounts
                .get_or_insert_with(Vec::new)
                .push(VolumeMount {
                    name: HOLD_VOLUME.into(),
                    mount_path: HOLD_DIR.into(),
                    read_only: Some(true),
                    ..Default::default()
                });
        }
    }
    spec.volumes.get_or_insert_with(Vec::new).push(Volume {
        name: HOLD_VOLUME.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    });
    let hold = Container {
        name: HOLD_VOLUME.into(),
        image: Some(hold_image.to_owned()),
        args: Some(vec!["--install-init".into(), HOLD_DIR.into()]),
        volume_mounts: Some(vec![VolumeMount {
            name: HOLD_VOLUME.into(),
            mount_path: HOLD_DIR.into(),
            ..Default::default()
        }]),
        // It copies one file: the Pod Security Standards' "restricted" admits it anywhere.
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(65534),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    // First: the original's init containers run after it, as they would have.
    let mut init = vec![hold];
    init.extend(spec.init_containers.take().unwrap_or_default());
    spec.init_containers = Some(init);
    let meta = &original.metadata;
    let mut labels: BTreeMap<String, String> = meta
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| fork.keep_labels.contains(k))
        .collect();
    labels.insert(COPY_LABEL.into(), "true".into());
    let mut annotations: BTreeMap<String, String> = meta
        .annotations
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| !CONTROLLER_ANNOTATIONS.iter().any(|p| k.starts_with(p)))
        .collect();
    annotations.insert(
        COPY_OF_ANNOTATION.into(),
        meta.name.clone().unwrap_or_default(),
    );
    Ok(Pod {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_owned()),
            namespace: meta.namespace.clone(),
            labels: Some(labels),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    })
}

/// The pod `pod` is a copy of, if `--fork` made it.
pub fn copy_of(pod: &Pod) -> Option<String> {
    let meta = &pod.metadata;
    let labelled = meta
        .labels
        .as_ref()
        .and_then(|l| l.get(COPY_LABEL))
        .is_some_and(|v| v == "true");
    labelled
        .then(|| meta.annotations.as_ref()?.get(COPY_OF_ANNOTATION).cloned())
        .flatten()
}

mod original;

pub use original::{original_command_with, original_line, original_said, say_original};

/// How many names [`create`] tries before it gives up.
const NAME_TRIES: usize = 5;

/// Creates the copy of pod `pod` that `make` makes for a name, named `<pod>-debug-<suffix>`
/// with the next of `suffixes`: a name another pod has already is passed over for the next.
pub async fn create(
    pods: &Api<Pod>,
    pod: &str,
    suffixes: impl Iterator<Item = String>,
    make: impl Fn(&str) -> anyhow::Result<Pod>,
) -> anyhow::Result<Pod> {
    let namespace = pods_namespace(pods);
    let mut taken = Vec::new();
    for suffix in suffixes.take(NAME_TRIES) {
        let name = copy_name(pod, &suffix);
        let spec = make(&name)?;
        match pods.create(&PostParams::default(), &spec).await {
            Ok(created) => return Ok(created),
            Err(kube::Error::Api(s)) if s.code == 409 && s.reason == "AlreadyExists" => {
                taken.push(name);
            }
            Err(kube::Error::Api(s)) if s.code == 403 && !s.message.contains("PodSecurity") => {
                bail!(
                    "you may not create the copy of pod {pod}: --fork needs create, get and delete on pods in namespace {namespace} (ask for a RoleBinding to the ClusterRole kubectl-debug-fork of deploy/base; {})",
                    s.message
                )
            }
            Err(kube::Error::Api(s)) if s.message.contains("PodSecurity") => bail!(
                "namespace {namespace}'s Pod Security admission refused the copy of pod {pod}: {}; the copy keeps the pod's security settings, which the namespace's pod-security.kubernetes.io/enforce label no longer admits (the pod was admitted before it was set)",
                s.message
            ),
            Err(kube::Error::Api(s)) => bail!(
                "the API server refused the copy of pod {pod} in namespace {namespace}: {}",
                s.message
            ),
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "creating a copy of pod {pod} in namespace {namespace}"
                )));
            }
        }
    }
    bail!(
        "no free name for the copy of pod {pod} in namespace {namespace}: {} are taken (delete old copies with kubectl-debug rm COPY --all)",
        taken.join(", ")
    )
}

/// The namespace of `pods`, for messages.
fn pods_namespace(pods: &Api<Pod>) -> String {
    pods.resource_url()
        .split('/')
        .skip_while(|part| *part != "namespaces")
        .nth(1)
        .unwrap_or("default")
        .to_owned()
}

/// Creates the copy and waits until its container holds still; the copy is deleted when the
/// command ends unless `retain`. Returns the copy's name.
#[allow(clippy::too_many_arguments)]
pub async fn start(
    client: kube::Client,
    original: &Pod,
    container: &str,
    fork: &Fork,
    hold_image: &str,
    retain: bool,
    limit: Duration,
) -> anyhow::Result<String> {
    let namespace = original
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let pod = original.metadata.name.clone().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let suffixes = std::iter::repeat_with(crate::ondemand::suffix);
    let created = create(&pods, &pod, suffixes, |name| {
        copy(original, container, fork, name, hold_image)
    })
    .await?;
    let name = created.metadata.name.clone().unwrap_or_default();
    if !retain {
        crate::cleanup::remember(pods.clone(), &created, "the copy");
    }
    eprintln!(
        "debugging a copy of pod {pod}: {namespace}/{name} (its container {container} holds still)"
    );
    let started = Instant::now();
    loop {
        let copy = pods
            .get_opt(&name)
            .await
            .with_context(|| format!("reading the copy {namespace}/{name}"))?
            .ok_or_else(|| anyhow!("the copy {namespace}/{name} was deleted while it started"))?;
        let status = copy.status.clone().unwrap_or_default();
        let phase = status.phase.clone().unwrap_or_else(|| "Pending".into());
        let statuses = status
            .init_container_statuses
            .iter()
            .flatten()
            .chain(status.container_statuses.iter().flatten());
        for s in statuses {
            let waiting = s.state.as_ref().and_then(|st| st.waiting.as_ref());
            let reason = waiting.and_then(|w| w.reason.clone()).unwrap_or_default();
            if matches!(
                reason.as_str(),
                "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName" | "ErrImageNeverPull"
            ) {
                // The kubelet's message says why (not found, unauthorised...); its last
                // event often only repeats the reason.
                let said = match waiting.and_then(|w| w.message.clone()) {
                    Some(message) => Some(message),
                    None => crate::ondemand::warning_event(&client, &namespace, &name).await,
                };
                crate::cleanup::delete_now(&pods, &namespace, &name).await;
                bail!(
                    "the copy's container {} could not get its image {} ({reason}{}); the copy was deleted{}",
                    s.name,
                    s.image,
                    said.map(|s| format!(": {s}")).unwrap_or_default(),
                    if s.name == HOLD_VOLUME {
                        "; name an agent image the nodes can pull with --agent-image"
                    } else {
                        "; --set-image NAME=IMAGE names another"
                    }
                );
            }
        }
        let held = status
            .container_statuses
            .iter()
            .flatten()
            .find(|s| s.name == container)
            .is_some_and(|s| s.state.as_ref().is_some_and(|st| st.running.is_some()));
        if held {
            return Ok(name);
        }
        if phase == "Failed" || phase == "Succeeded" {
            let said = crate::ondemand::warning_event(&client, &namespace, &name).await;
            crate::cleanup::delete_now(&pods, &namespace, &name).await;
            bail!(
                "the copy of pod {pod} ended before its container held still: {phase}{}; the copy was deleted",
                said.map(|s| format!(" ({s})")).unwrap_or_default()
            );
        }
        if started.elapsed() >= limit {
            let said = crate::ondemand::warning_event(&client, &namespace, &name).await;
            crate::cleanup::delete_now(&pods, &namespace, &name).await;
            bail!(
                "the copy of pod {pod} did not start within {limit:?} (--agent-start-timeout): it was {phase}{}; the copy was deleted",
                said.map(|s| format!(" ({s})")).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A started copy of a pod (`--fork`): the container to join, and the original it is of.
#[derive(Debug, Clone)]
pub struct Forked {
    /// The copy's container to join.
    pub copy: crate::pod::PodTarget,
    /// The original pod.
    pub original: Pod,
}

impl Forked {
    /// Says on stderr what the original container ran, asking `agent` (the copy's node's)
    /// for its image's config when the pod sets no command ([`say_original`]).
    pub async fn say_original(&self, agent: &crate::client::AgentClient) {
        say_original(agent, &self.original, &self.copy.container, &self.copy).await;
    }
}

/// For `kubectl-debug POD --fork`: the original pod, its copy started, and the copy's
/// container to join. What the original ran is said once the copy's agent is reached
/// ([`Forked::say_original`]), which reads the image's config when the pod sets no command.
pub async fn resolve(
    cluster: &crate::cluster::Cluster,
    global: &crate::cli::Global,
    pod: &str,
    container: Option<&str>,
    opts: &crate::cli::DebugOpts,
) -> anyhow::Result<Forked> {
    let namespace = &cluster.namespace;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), namespace);
    let original = pods
        .get_opt(pod)
        .await
        .with_context(|| format!("getting pod \"{pod}\" in namespace \"{namespace}\""))?
        .ok_or_else(|| anyhow!("pods \"{pod}\" not found in namespace \"{namespace}\""))?;
    let chosen = crate::pod::choose(&original, pod, container)?;
    let fork = Fork {
        keep_labels: opts.fork.fork_keep_labels.clone(),
        set_images: opts.fork.set_image.clone(),
        same_node: opts.fork.fork_node != Some(crate::cli::ForkNode::Any),
    };
    let copy = start(
        cluster.client.clone(),
        &original,
        &chosen,
        &fork,
        &crate::ondemand::agent_image(global.agent_image.as_deref()),
        opts.retain == Some(true),
        global
            .agent_start_timeout
            .unwrap_or(Duration::from_secs(120)),
    )
    .await?;
    let copy = crate::pod::resolve(cluster.client.clone(), namespace, &copy, Some(&chosen)).await?;
    Ok(Forked { copy, original })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crashing() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "web-7d4b9c-x2x8q", "namespace": "shop", "uid": "u1",
                "resourceVersion": "9",
                "labels": {"app": "web", "pod-template-hash": "7d4b9c", "tier": "front"},
                "annotations": {"kubectl.kubernetes.io/default-container": "app", "deployment.kubernetes.io/revision": "3"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d4b9c", "uid": "r1"}]
            },
            "spec": {
                "nodeName": "n1",
                "initContainers": [{"name": "migrate", "image": "web:1", "command": ["migrate"]}],
                "containers": [
                    {"name": "app", "image": "web:1", "command": ["/server"], "args": ["--port", "80"], "workingDir": "/srv",
                     "livenessProbe": {"httpGet": {"path": "/", "port": 80}}, "readinessProbe": {"httpGet": {"path": "/", "port": 80}}},
                    {"name": "sidecar", "image": "proxy:1", "startupProbe": {"exec": {"command": ["true"]}}}
                ]
            },
            "status": {"phase": "Running"}
        }))
        .unwrap()
    }

    #[test]
    fn the_copy_holds_its_container_still_and_is_nobodys() {
        let fork = Fork {
            keep_labels: vec!["tier".into()],
            set_images: vec![("sidecar".into(), "proxy:debug".into())],
            same_node: true,
        };
        let copy = copy(&crashing(), "app", &fork, "web-debug-abcde", "agent:1").unwrap();
        let meta = &copy.metadata;
        assert_eq!(meta.name.as_deref(), Some("web-debug-abcde"));
        assert_eq!(meta.namespace.as_deref(), Some("shop"));
        assert!(meta.uid.is_none() && meta.resource_version.is_none());
        assert!(meta.owner_references.is_none(), "no controller adopts it");
        let labels = meta.labels.clone().unwrap();
        assert_eq!(labels.get("tier").map(String::as_str), Some("front"));
        assert!(!labels.contains_key("app"), "no Service selects it");
        assert_eq!(labels[COPY_LABEL], "true");
        let annotations = meta.annotations.clone().unwrap();
        assert!(!annotations.contains_key("deployment.kubernetes.io/revision"));
        assert_eq!(annotations[COPY_OF_ANNOTATION], "web-7d4b9c-x2x8q");
        let spec = copy.spec.unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("n1"));
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        let init = spec.init_containers.unwrap();
        assert_eq!(init[0].name, HOLD_VOLUME);
        assert_eq!(init[0].image.as_deref(), Some("agent:1"));
        assert_eq!(
            init[1].name, "migrate",
            "the original's init containers still run"
        );
        let app = &spec.containers[0];
        assert_eq!(
            app.command.clone().unwrap(),
            ["/.kubectl-debug-hold/kdbg-init", "hold"]
        );
        assert!(app.args.is_none());
        assert!(app.liveness_probe.is_none() && app.readiness_probe.is_none());
        let mount = app
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.name == HOLD_VOLUME)
            .unwrap();
        assert_eq!(mount.read_only, Some(true));
        let sidecar = &spec.containers[1];
        assert!(sidecar.startup_probe.is_none());
        assert_eq!(sidecar.image.as_deref(), Some("proxy:debug"));
        assert!(
            sidecar.command.is_none(),
            "other containers run as in the original"
        );
    }

    #[test]
    fn names_images_and_commands() {
        let name = copy_name(&"a".repeat(80), "ab12c");
        assert_eq!(name.len(), 63);
        assert!(name.ends_with("-debug-ab12c"));
        assert_eq!(copy_name("web", "ab12c"), "web-debug-ab12c");
        assert!(set_image("app").is_err() && set_image("=x").is_err());
        assert_eq!(
            set_image("*=busybox").unwrap(),
            ("*".into(), "busybox".into())
        );
        let fork = Fork {
            set_images: vec![("nope".into(), "x".into())],
            ..Fork::default()
        };
        let err = copy(&crashing(), "app", &fork, "c", "a")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no container \"nope\""), "{err}");
        assert_eq!(
            original_command_with(&crashing(), "app", None),
            "/server --port 80, in /srv"
        );
        assert_eq!(
            original_command_with(&crashing(), "sidecar", None),
            "the image's entrypoint (the pod does not set a command)"
        );
        let any = Fork::default();
        assert!(
            copy(&crashing(), "app", &any, "c", "a")
                .unwrap()
                .spec
                .unwrap()
                .node_name
                .is_none()
        );
    }
}
