//! Who is calling, and whether the cluster lets them: checked on the agent for every endpoint
//! but `/healthz` and `/metrics`, never only in the client. A session's own checks (its
//! target, the node's policy) are in [`Agent::admit`].
//!
//! A request that names a node (`kubectl-debug node/NAME`: a session in the node's own
//! namespaces, a pull for one, the node's debug containers) must name this agent's node
//! ([`Agent::own_node`]), and needs `create nodes/proxy` on it, as the kubelet asks.
//!
//! Node-level power is decided in one place, [`Agent::require_node`], on what a container
//! actually joins: a new one's target as the runtime describes it and its profile
//! ([`Agent::admit_target`], [`Agent::admit`]), an existing one's own label, written by the
//! agent that made it, or its target ([`Agent::admit_container`]), a running session's
//! container (watch) and a recording's header. Every endpoint that touches a container, its
//! sessions or its recordings goes through them.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use kdbg_api::{DebugRequest, Endpoint, ImageConfigRequest, PodScope, PullRequest};
use kdbg_runtimes::{DebugContainer, Runtime, TargetInfo, TargetRef, label};
use tracing::info;

use crate::Agent;
use crate::admission::{self, Slot};
use crate::auth::{Access, Caller, CredentialRejected, Denied};
use crate::server::{Body, refuse, refuse_with};
use crate::session::Refusal;

/// The resource of ours that recordings and live views need `get` on (a subresource of
/// pods, so an ordinary Role grants it per namespace).
pub const RECORDINGS_SUBRESOURCE: &str = "debug-recordings";

impl Agent {
    /// The caller of `req` (whose connection's client certificate named `certificate`):
    /// reviewed by the cluster, or, without `auth`, unverified.
    pub(crate) async fn caller(
        &self,
        req: &Request<Incoming>,
        certificate: Option<&Result<Caller, CredentialRejected>>,
    ) -> Result<Caller, Response<Body>> {
        let Some(auth) = &self.auth else {
            return Ok(Caller::unverified(None));
        };
        auth.authenticate(req.headers(), certificate)
            .await
            .map_err(|denied| denial(&denied))
    }

    /// Whether `caller` may do `access` (always, without `auth`).
    pub(crate) async fn allow(&self, caller: &Caller, access: &Access) -> Result<(), Refusal> {
        let Some(auth) = &self.auth else {
            return Ok(());
        };
        auth.authorize(caller, access)
            .await
            .map_err(|denied| Refusal::new(denied.code(), denied.message()))
    }

    /// Authorises a request to any endpoint but a session's (whose checks need its target:
    /// [`Agent::admit`]). The request has been parsed: every endpoint's access is decided on
    /// its typed query.
    pub(crate) async fn authorize(
        &self,
        endpoint: &Endpoint,
        caller: &Caller,
    ) -> Result<(), Response<Body>> {
        if let Some(node) = endpoint.node() {
            self.own_node(node).map_err(refuse_with)?;
        }
        if self.auth.is_none() {
            return Ok(());
        }
        let recordings = |scope: &PodScope| match &scope.node {
            Some(node) => Access::node_debugging(node),
            None => Access::pods(
                "get",
                RECORDINGS_SUBRESOURCE,
                scope.namespace.as_deref().unwrap_or(""),
                scope.pod.as_deref().unwrap_or(""),
            ),
        };
        let access = match endpoint {
            Endpoint::Healthz | Endpoint::Metrics | Endpoint::Version | Endpoint::Debug(_) => {
                return Ok(());
            }
            // The node's own debug containers, for list and rm: what debugging it needs.
            Endpoint::Containers(PodScope {
                node: Some(node), ..
            })
            | Endpoint::RemoveContainer {
                scope: PodScope {
                    node: Some(node), ..
                },
                ..
            }
            | Endpoint::Pull(PullRequest {
                node: Some(node), ..
            }) => Access::node_debugging(node),
            Endpoint::Containers(scope) => {
                Access::pods("list", "", scope.namespace.as_deref().unwrap_or(""), "")
            }
            Endpoint::RemoveContainer { scope, .. } => match scope {
                PodScope {
                    namespace: Some(ns),
                    pod: Some(pod),
                    ..
                } => Access::pods("create", "exec", ns, pod),
                _ => return Err(pod_needed("removing a debug container")),
            },
            Endpoint::Pull(request) => match request {
                PullRequest {
                    pod_namespace: Some(ns),
                    pod_name: Some(pod),
                    ..
                } => Access::pods("create", "exec", ns, pod),
                _ => return Err(pod_needed("pulling an image")),
            },
            Endpoint::Recordings(scope) | Endpoint::Recording { scope, .. } => recordings(scope),
            Endpoint::Watch(request) => recordings(&request.scope),
            // What a debug session of the target needs: the image config is the target's
            // (its command line, which may hold secrets), so reading it is debugging it.
            Endpoint::ImageConfig(request) => match request {
                ImageConfigRequest {
                    pod_namespace: Some(ns),
                    pod_name: Some(pod),
                    ..
                } => Access::pods("create", "exec", ns, pod),
                _ => return Err(pod_needed("reading a target's image config")),
            },
        };
        self.allow(caller, &access).await.map_err(refuse_with)
    }

    /// Everything a session needs before anything is created: permission on its pod, a
    /// target that is that pod's and is not the node, an allowed image and profile, and room
    /// under `policy.maxSessions`. Fills in what the caller may not choose: the verified
    /// user and the profile. Returns the session's place, to hold while it runs.
    pub(crate) async fn admit(
        self: &Arc<Self>,
        caller: &Caller,
        request: &mut DebugRequest,
    ) -> Result<Slot, Refusal> {
        if caller.verified {
            request.user = Some(caller.user.clone());
        }
        if let Some(node) = &request.node {
            self.own_node(node)?;
            if self.auth.is_some() {
                // The node itself: what the kubelet asks for the same power.
                self.allow(caller, &Access::node_debugging(node)).await?;
                if let Some(name) = &request.container {
                    let scope = PodScope {
                        node: Some(node.clone()),
                        ..PodScope::default()
                    };
                    let found = crate::containers::find_in(self, name, &scope).await?;
                    self.admit_container(caller, &found).await?;
                }
            }
        } else if self.auth.is_some() {
            let (Some(ns), Some(pod)) = (&request.pod_namespace, &request.pod_name) else {
                return Err(Refusal::new(
                    400,
                    "query parameters podNamespace and podName are required: this agent checks the caller's permissions on the target's pod (kubectl-debug POD sends them; reach an agent with auth.mode: kubernetes through the pod verbs, not local --agent)",
                ));
            };
            self.allow(caller, &Access::pods("create", "exec", ns, pod))
                .await?;
            if let Some(target) = &request.target {
                self.admit_target(caller, ns, pod, target).await?;
            }
            if let Some(name) = &request.container {
                let scope = PodScope {
                    namespace: Some(ns.clone()),
                    pod: Some(pod.clone()),
                    node: None,
                };
                let found = crate::containers::find_in(self, name, &scope).await?;
                self.admit_container(caller, &found).await?;
            }
        }
        if request.container.is_none() {
            let image = request.image.as_deref().unwrap_or(&self.defaults.image);
            admission::check_image(&self.policy, image)?;
            let profile = admission::profile(&self.policy, request.profile)?;
            let why = admission::profile_node_level(profile);
            self.require_node(caller, &format!("profile {profile}"), why.as_deref())
                .await?;
            request.profile = Some(profile);
        }
        let target = match (request.joins(), &request.container) {
            (Some(target), _) => target.to_string(),
            (None, Some(name)) => format!("container {name}"),
            (None, None) => String::new(),
        };
        let user = request.user.clone().unwrap_or_else(|| "unknown".into());
        self.sessions
            .admit(&self.policy.max_sessions, &user, &target)
    }
}

impl Agent {
    /// Refuses a request for node `node` unless it is this agent's: an agent debugs only the
    /// node it runs on.
    pub(crate) fn own_node(&self, node: &str) -> Result<(), Refusal> {
        if node == self.node {
            return Ok(());
        }
        Err(Refusal::new(
            400,
            format!(
                "this kubectl-debug agent runs on node \"{}\", not on node \"{node}\": ask the agent of node \"{node}\" (kubectl-debug node/{node} finds it)",
                self.node
            ),
        ))
    }

    /// The one check of node-level power: when `why` says that `subject` gives the node
    /// itself, the caller needs `create nodes/proxy` on this node (what the kubelet asks for
    /// the same power). Without `auth`, everything is allowed.
    pub(crate) async fn require_node(
        &self,
        caller: &Caller,
        subject: &str,
        why: Option<&str>,
    ) -> Result<(), Refusal> {
        let Some(why) = why else {
            return Ok(());
        };
        let node = Access::node_debugging(&self.node);
        self.allow(caller, &node)
            .await
            .map_err(|_| admission::node_level_refusal(subject, why, &node))?;
        if self.auth.is_some() {
            info!(
                user = caller.user.as_str(),
                subject, why, "node-level access allowed"
            );
        }
        Ok(())
    }

    /// Admits `target` for a new debug container or a pull on behalf of pod `ns/pod`: it
    /// must be that pod's (the kubelet's labels, as the runtime gives them), and, if it
    /// shares the node's namespaces, the caller must be allowed the node.
    pub(crate) async fn admit_target(
        &self,
        caller: &Caller,
        ns: &str,
        pod: &str,
        target: &TargetRef,
    ) -> Result<TargetInfo, Refusal> {
        let info = self.runtime.check_target(target).await?;
        admission::check_pod(target, &info, ns, pod)?;
        let why = admission::node_level(&info);
        self.require_node(
            caller,
            &format!("target container {target}"),
            why.as_deref(),
        )
        .await?;
        Ok(info)
    }

    /// Admits a pull as a session would be admitted: the image against `policy.images`, and
    /// a named target as [`Agent::admit_target`] does (with `auth`; `authorize` has made
    /// sure the pod is named).
    pub(crate) async fn admit_pull(
        &self,
        caller: &Caller,
        request: &PullRequest,
    ) -> Result<(), Refusal> {
        let image = request.image.as_deref().unwrap_or(&self.defaults.image);
        admission::check_image(&self.policy, image)?;
        let Some(target) = &request.target else {
            return Ok(());
        };
        match (&request.pod_namespace, &request.pod_name) {
            (Some(ns), Some(pod)) if self.auth.is_some() => {
                self.admit_target(caller, ns, pod, target).await?;
            }
            _ if self.auth.is_some() => {
                return Err(Refusal::new(
                    400,
                    "query parameters podNamespace and podName are required for pulling an image: this agent checks the caller's permissions on the pod",
                ));
            }
            _ => {
                self.runtime.check_target(target).await?;
            }
        }
        Ok(())
    }

    /// Admits a read of a target's image config as a session's target is admitted: with
    /// `auth` (`authorize` has checked `create pods/exec` on the named pod), the target must
    /// be that pod's and, if it is the node, the caller allowed the node
    /// ([`Agent::admit_target`]); without, it must be a target the runtime can join.
    pub(crate) async fn admit_image_config(
        &self,
        caller: &Caller,
        request: &ImageConfigRequest,
    ) -> Result<(), Refusal> {
        match (&request.pod_namespace, &request.pod_name) {
            (Some(ns), Some(pod)) if self.auth.is_some() => {
                self.admit_target(caller, ns, pod, &request.target).await?;
            }
            _ if self.auth.is_some() => {
                return Err(Refusal::new(
                    400,
                    "query parameters podNamespace and podName are required for reading a target's image config: this agent checks the caller's permissions on the pod",
                ));
            }
            _ => {
                self.runtime.check_target(&request.target).await?;
            }
        }
        Ok(())
    }

    /// Admits an existing debug container for `attach`, `rm`, `list` and `watch`: if it gives
    /// the node itself (its own label, or, for one made before that label, its target), the
    /// caller must be allowed the node.
    pub(crate) async fn admit_container(
        &self,
        caller: &Caller,
        c: &DebugContainer,
    ) -> Result<(), Refusal> {
        let why = self.container_node_level(c).await;
        self.require_node(
            caller,
            &format!("debug container {:?}", c.name),
            why.as_deref(),
        )
        .await
    }

    /// Why existing debug container `c` gives the node itself, if it does.
    pub(crate) async fn container_node_level(&self, c: &DebugContainer) -> Option<String> {
        let target = match c.labels.get(label::NODE_LEVEL) {
            Some(_) => None,
            None => match c.labels.get(label::TARGET).map(|t| t.parse::<TargetRef>()) {
                Some(Ok(target)) => self.runtime.check_target(&target).await.ok(),
                _ => None,
            },
        };
        admission::debug_container_node_level(&c.labels, target.as_ref())
    }
}

/// The response for a caller the cluster did not let through.
fn denial(denied: &Denied) -> Response<Body> {
    let code = StatusCode::from_u16(denied.code()).unwrap_or(StatusCode::FORBIDDEN);
    refuse(code, denied.message())
}

fn pod_needed(what: &str) -> Response<Body> {
    refuse(
        StatusCode::BAD_REQUEST,
        &format!(
            "query parameters podNamespace and podName are required for {what}: this agent checks the caller's permissions on the pod"
        ),
    )
}
