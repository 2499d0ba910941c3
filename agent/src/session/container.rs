//! A session's debug container: a new one created (named, labelled, counted against the
//! retained limits) or a retained one found again (`attach`).

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use kdbg_api::DebugRequest;
use kdbg_runtimes::{ContainerState, DebugSpec, Error, Runtime, Target, TargetInfo, label};

use super::Refusal;
use crate::Agent;

/// Attempts at a free generated name.
const NAME_ATTEMPTS: usize = 3;

/// The labels of a new debug container.
pub(super) fn labels(
    agent: &Agent,
    request: &DebugRequest,
    target: &Target,
    image: &str,
    session: &str,
    node_level: Option<&str>,
) -> BTreeMap<String, String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let mut labels = BTreeMap::from([
        (label::SESSION.to_owned(), session.to_owned()),
        (label::TARGET.to_owned(), target.to_string()),
        (label::CREATED_AT.to_owned(), now.to_string()),
        (label::RETAIN.to_owned(), request.retain.to_string()),
        (label::USER.to_owned(), user_of(request).to_owned()),
        (label::OWNER.to_owned(), agent.owner.clone()),
        (label::IMAGE.to_owned(), image.to_owned()),
    ]);
    if let Some(ns) = &request.pod_namespace {
        labels.insert(label::POD_NAMESPACE.to_owned(), ns.clone());
    }
    if let Some(pod) = &request.pod_name {
        labels.insert(label::POD_NAME.to_owned(), pod.clone());
    }
    if let Some(why) = node_level {
        labels.insert(label::NODE_LEVEL.to_owned(), why.to_owned());
    }
    if let Target::Node(node) = target {
        labels.insert(label::NODE.to_owned(), node.clone());
    }
    labels
}

pub(super) fn user_of(request: &DebugRequest) -> &str {
    request.user.as_deref().unwrap_or("unknown")
}

/// A generated container name: `<pod>-dbg-<5 random>`, `node-<node>-dbg-<5 random>` for the
/// node itself, or `dbg-<target>-<5 random>` without a pod; within the runtimes' limits.
pub(super) fn generated_name(request: &DebugRequest, target: &Target) -> String {
    use rand::Rng as _;
    let mut rng = rand::rng();
    let suffix: String = (0..5)
        .map(|_| {
            let c = rng.random_range(0..36u8);
            char::from(if c < 10 { b'0' + c } else { b'a' + c - 10 })
        })
        .collect();
    let stem = match (&request.pod_name, target) {
        (Some(pod), _) => format!("{}-dbg", pod.chars().take(50).collect::<String>()),
        (None, Target::Node(node)) => {
            format!("node-{}-dbg", node.chars().take(45).collect::<String>())
        }
        (None, Target::Container(target)) => {
            format!("dbg-{}", target.id.chars().take(12).collect::<String>())
        }
    };
    // Letters and digits, single dashes between them: what every runtime accepts.
    let mut clean = String::with_capacity(stem.len());
    for c in stem.chars() {
        if c.is_ascii_alphanumeric() {
            clean.push(c.to_ascii_lowercase());
        } else if !clean.ends_with('-') {
            clean.push('-');
        }
    }
    let stem = clean;
    format!("{}-{suffix}", stem.trim_matches('-'))
}

/// A session's debug container, new or found.
pub(super) struct Found {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) retain: bool,
    pub(super) target: Target,
    pub(super) image: String,
    pub(super) warnings: Vec<String>,
    /// What the runtime says of the target (its labels), when it could be asked: what the
    /// recording and the audit line name, never the client's word.
    pub(super) verified: Option<TargetInfo>,
    /// Why the container gives the node itself, if it does ([`label::NODE_LEVEL`]).
    pub(super) node_level: Option<String>,
}

/// Creates and starts a new debug container for `request`.
pub(super) async fn create(
    agent: &Agent,
    request: &DebugRequest,
    target: Target,
    session: &str,
) -> Result<Found, Refusal> {
    let runtime = &agent.runtime;
    let verified = match &target {
        Target::Container(container) => Some(runtime.check_target(container).await?),
        Target::Node(_) => None,
    };
    let image = request
        .image
        .clone()
        .unwrap_or_else(|| agent.defaults.image.clone());
    let profile = request.profile.unwrap_or_default();
    // What the container will join, as the runtime says, and what its profile grants: kept
    // in its labels, so every later use of it is checked against it.
    let node_level = match &verified {
        Some(verified) => crate::admission::node_level(verified),
        None => Some(crate::admission::NODE_ITSELF.to_owned()),
    }
    .or_else(|| crate::admission::profile_node_level(profile));
    runtime
        .ensure_image(
            &image,
            request.pull_policy,
            None,
            kdbg_runtimes::PullOptions {
                credential: None,
                platform: request.platform.as_ref(),
            },
        )
        .await?;
    let mut spec = DebugSpec {
        target: target.clone(),
        image: image.clone(),
        name: String::new(),
        labels: labels(
            agent,
            request,
            &target,
            &image,
            session,
            node_level.as_deref(),
        ),
        init: agent.init.clone(),
        profile,
        platform: request.platform.clone(),
    };
    // A retained container is counted against the node's limits and created under one lock.
    let _retaining = if request.retain {
        let held = agent.retaining.lock().await;
        check_retained(agent, user_of(request)).await?;
        Some(held)
    } else {
        None
    };
    let mut attempt = 0;
    let created = loop {
        attempt += 1;
        spec.name = match &request.name {
            Some(name) => name.clone(),
            None => generated_name(request, &target),
        };
        match runtime.create(&spec).await {
            Ok(created) => break created,
            // A generated name that was taken: another one.
            Err(Error::NameTaken { .. }) if request.name.is_none() && attempt < NAME_ATTEMPTS => {}
            Err(e) => return Err(e.into()),
        }
    };
    if let Err(e) = runtime.start(&created.id).await {
        let _ = runtime.remove(&created.id).await;
        return Err(e.into());
    }
    Ok(Found {
        id: created.id,
        name: spec.name,
        retain: request.retain,
        target,
        image,
        warnings: created.warnings,
        verified,
        node_level,
    })
}

/// Refuses one more retained container for `user` past `policy.maxRetainedPerUser`, or on
/// the node past `policy.maxRetainedPerNode`: retained containers are kept for days by
/// default, so without a limit one user could fill a node with them.
pub(super) async fn check_retained(agent: &Agent, user: &str) -> Result<(), Refusal> {
    let retained: Vec<_> = agent
        .runtime
        .list()
        .await?
        .into_iter()
        .filter(|c| c.labels.get(label::RETAIN).map(String::as_str) == Some("true"))
        .collect();
    let of_user = retained
        .iter()
        .filter(|c| c.labels.get(label::USER).map(String::as_str) == Some(user))
        .count();
    let policy = &agent.policy;
    let full = if of_user >= policy.max_retained_per_user {
        format!(
            "user \"{user}\" has {of_user} retained debug containers on node {}, the limit (policy.maxRetainedPerUser: {})",
            agent.node, policy.max_retained_per_user
        )
    } else if retained.len() >= policy.max_retained_per_node {
        format!(
            "node {} has {} retained debug containers, the limit (policy.maxRetainedPerNode: {})",
            agent.node,
            retained.len(),
            policy.max_retained_per_node
        )
    } else {
        return Ok(());
    };
    Err(Refusal::new(
        429,
        format!(
            "Too many retained containers: {full}; remove those you no longer need with kubectl-debug rm (kubectl-debug list shows them), or debug without --retain"
        ),
    ))
}

/// Finds retained debug container `name` for an `attach` and makes sure it runs.
pub(super) async fn reopen(
    agent: &Agent,
    request: &DebugRequest,
    name: &str,
) -> Result<Found, Refusal> {
    let runtime = &agent.runtime;
    let found = crate::containers::find(agent, name).await?;
    let labels = &found.labels;
    let in_pod = |key: &str, asked: &Option<String>| {
        asked
            .as_deref()
            .is_none_or(|asked| labels.get(key).map(String::as_str) == Some(asked))
    };
    if let Some(node) = &request.node {
        if !in_pod(label::NODE, &Some(node.clone())) {
            return Err(Refusal::new(
                404,
                format!(
                    "debug container {name:?} not found for node {node}; kubectl-debug list node/{node} shows the node's"
                ),
            ));
        }
    } else if !in_pod(label::POD_NAMESPACE, &request.pod_namespace)
        || !in_pod(label::POD_NAME, &request.pod_name)
    {
        return Err(Refusal::new(
            404,
            format!(
                "debug container {name:?} not found for pod {}/{}; kubectl-debug list shows the pod's",
                request.pod_namespace.as_deref().unwrap_or("-"),
                request.pod_name.as_deref().unwrap_or("-")
            ),
        ));
    }
    if labels.get(label::RETAIN).map(String::as_str) != Some("true") {
        return Err(Refusal::new(
            409,
            format!(
                "debug container {name:?} is not retained: only retained containers (--retain) can be attached to"
            ),
        ));
    }
    let target: Target = labels
        .get(label::TARGET)
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| {
            Refusal::new(500, format!("debug container {name:?} has no target label"))
        })?;
    if request
        .target
        .as_ref()
        .is_some_and(|t| target.container() != Some(t))
    {
        return Err(Refusal::new(
            400,
            format!(
                "debug container {name:?} joins {target}, not {}",
                request
                    .target
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default()
            ),
        ));
    }
    let verified = match &target {
        Target::Container(container) => runtime.check_target(container).await.map(Some),
        // The node is always there.
        Target::Node(_) => Ok(None),
    };
    if found.state != ContainerState::Running {
        if let Err(e) = &verified {
            return Err(Refusal::new(
                409,
                format!(
                    "debug container {name:?} is orphaned: {}; remove it with kubectl-debug rm",
                    crate::chain(e)
                ),
            ));
        }
        runtime.start(&found.id).await?;
    }
    let verified = verified.ok().flatten();
    let node_level = crate::admission::debug_container_node_level(labels, verified.as_ref());
    Ok(Found {
        image: labels
            .get(label::IMAGE)
            .cloned()
            .unwrap_or_else(|| found.image.clone()),
        id: found.id,
        name: name.to_owned(),
        retain: true,
        target,
        warnings: Vec::new(),
        verified,
        node_level,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_suit_every_runtime_and_differ() {
        let mut request = DebugRequest::from_query("target=docker://abc&stdout=1").unwrap();
        request.pod_name = Some("web.v2--x_".repeat(10));
        let target = request.joins().unwrap();
        let names: Vec<String> = (0..50).map(|_| generated_name(&request, &target)).collect();
        for name in &names {
            assert!(name.len() <= 63, "{name}");
            let parts: Vec<&str> = name.split('-').collect();
            assert!(
                parts
                    .iter()
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric())),
                "{name}"
            );
        }
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
        request.pod_name = None;
        assert!(generated_name(&request, &target).starts_with("dbg-abc-"));
        let node = Target::Node("worker-1.example".into());
        assert!(generated_name(&request, &node).starts_with("node-worker-1-example-dbg-"));
    }
}
