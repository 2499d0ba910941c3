//! Who is calling, and whether the cluster lets them: checked on the agent for every endpoint
//! but `/healthz` and `/metrics`, never only in the client. A session's own checks (its
//! target, the node's policy) are in [`Agent::admit`].

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use kdbg_api::{DebugRequest, PodScope, PullRequest, WatchRequest, path};
use kdbg_runtimes::Runtime;
use tracing::info;

use super::{Agent, Body, refuse, refuse_with};
use crate::admission::{self, Slot};
use crate::auth::{Access, Caller, Denied};
use crate::session::Refusal;

/// The resource of ours that recordings and live views need `get` on (a subresource of
/// pods, so an ordinary Role grants it per namespace).
pub const RECORDINGS_SUBRESOURCE: &str = "debug-recordings";

impl Agent {
    /// The caller of `req` (whose connection's client certificate named `certificate`):
    /// reviewed by the cluster, or, without `auth`, unverified.
    pub(super) async fn caller(
        &self,
        req: &Request<Incoming>,
        certificate: Option<&Result<Caller, String>>,
    ) -> Result<Caller, Response<Body>> {
        let Some(auth) = &self.auth else {
            return Ok(Caller::unverified(None));
        };
        auth.authenticate(req.headers(), certificate)
            .await
            .map_err(|denied| denial(&denied))
    }

    /// Whether `caller` may do `access` (always, without `auth`).
    pub(super) async fn allow(&self, caller: &Caller, access: &Access) -> Result<(), Refusal> {
        let Some(auth) = &self.auth else {
            return Ok(());
        };
        auth.authorize(caller, access)
            .await
            .map_err(|denied| Refusal::new(denied.code(), denied.message()))
    }

    /// Authorises a request to any endpoint but a session's (whose checks need its target:
    /// [`Agent::admit`]). A query that does not parse is let through to its handler, which
    /// refuses it with a 400.
    pub(super) async fn authorize(
        &self,
        method: &Method,
        wanted: &str,
        query: &str,
        caller: &Caller,
    ) -> Result<(), Response<Body>> {
        if self.auth.is_none() {
            return Ok(());
        }
        let recordings = |scope: &PodScope| {
            Access::pods(
                "get",
                RECORDINGS_SUBRESOURCE,
                scope.namespace.as_deref().unwrap_or(""),
                scope.pod.as_deref().unwrap_or(""),
            )
        };
        let access = match (method, wanted) {
            (&Method::GET, path::CONTAINERS) => PodScope::from_query(query)
                .ok()
                .map(|s| Access::pods("list", "", s.namespace.as_deref().unwrap_or(""), "")),
            (&Method::DELETE, _) => match PodScope::from_query(query) {
                Ok(PodScope {
                    namespace: Some(ns),
                    pod: Some(pod),
                }) => Some(Access::pods("create", "exec", &ns, &pod)),
                Ok(_) => return Err(pod_needed("removing a debug container")),
                Err(_) => None,
            },
            (&Method::GET, path::PULL) => match PullRequest::from_query(query) {
                Ok(PullRequest {
                    pod_namespace: Some(ns),
                    pod_name: Some(pod),
                    ..
                }) => Some(Access::pods("create", "exec", &ns, &pod)),
                Ok(_) => return Err(pod_needed("pulling an image")),
                Err(_) => None,
            },
            (&Method::GET, path::RECORDINGS) => {
                PodScope::from_query(query).ok().map(|s| recordings(&s))
            }
            (&Method::GET, path::WATCH) => WatchRequest::from_query(query)
                .ok()
                .map(|w| recordings(&w.scope)),
            (&Method::GET, other) if path::recording_session(other).is_some() => {
                PodScope::from_query(query).ok().map(|s| recordings(&s))
            }
            _ => None,
        };
        match access {
            Some(access) => self.allow(caller, &access).await.map_err(refuse_with),
            None => Ok(()),
        }
    }

    /// Everything a session needs before anything is created: permission on its pod, a
    /// target that is that pod's and is not the node, an allowed image and profile, and room
    /// under `policy.maxSessions`. Fills in what the caller may not choose: the verified
    /// user and the profile. Returns the session's place, to hold while it runs.
    pub(super) async fn admit(
        self: &Arc<Self>,
        caller: &Caller,
        request: &mut DebugRequest,
    ) -> Result<Slot, Refusal> {
        if caller.verified {
            request.user = Some(caller.user.clone());
        }
        if self.auth.is_some() {
            let (Some(ns), Some(pod)) = (&request.pod_namespace, &request.pod_name) else {
                return Err(Refusal::new(
                    400,
                    "query parameters podNamespace and podName are required: this agent checks the caller's permissions on the target's pod (kubectl-debug POD sends them; reach an agent with auth.mode: kubernetes through the pod verbs, not local --agent)",
                ));
            };
            self.allow(caller, &Access::pods("create", "exec", ns, pod))
                .await?;
            if let Some(target) = &request.target {
                let info = self.runtime.check_target(target).await?;
                admission::check_pod(target, &info, ns, pod)?;
                if let Some(why) = admission::node_level(&info) {
                    let node = Access::node_debugging(&self.node);
                    self.allow(caller, &node)
                        .await
                        .map_err(|_| admission::node_level_refusal(target, &why, &node))?;
                    info!(user = %caller.user, %target, why, "node-level target allowed");
                }
            }
        }
        if request.container.is_none() {
            let image = request.image.as_deref().unwrap_or(&self.defaults.image);
            admission::check_image(&self.policy, image)?;
            request.profile = Some(admission::profile(&self.policy, request.profile)?);
        }
        let target = match (&request.target, &request.container) {
            (Some(target), _) => target.to_string(),
            (None, Some(name)) => format!("container {name}"),
            (None, None) => String::new(),
        };
        let user = request.user.clone().unwrap_or_else(|| "unknown".into());
        self.sessions
            .admit(&self.policy.max_sessions, &user, &target)
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
