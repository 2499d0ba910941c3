//! `GET /api/v1/image-config`: what a target container's image says to run (its config's
//! `Entrypoint`, `Cmd`, `WorkingDir`, `User`), for `--fork` to tell the user how to start the
//! original by hand. The target is admitted exactly as a debug session's is.

use hyper::{Response, StatusCode};
use kdbg_api::ImageConfigRequest;
use kdbg_runtimes::Runtime;
use tracing::info;

use crate::Agent;
use crate::auth::Caller;
use crate::server::{Body, json, refuse_with};

impl Agent {
    /// Admits the request ([`Agent::admit_image_config`]), then answers the target's image
    /// config as a [`kdbg_api::ImageConfig`]; a line in the audit log either way.
    pub(crate) async fn image_config(
        &self,
        request: ImageConfigRequest,
        peer: &str,
        caller: &Caller,
    ) -> Response<Body> {
        let user = caller.user.as_str();
        let pod = format!(
            "{}/{}",
            request.pod_namespace.as_deref().unwrap_or("-"),
            request.pod_name.as_deref().unwrap_or("-")
        );
        let target = request.target.to_string();
        let answer = match self.admit_image_config(caller, &request).await {
            Ok(()) => self
                .runtime
                .image_config(&request.target)
                .await
                .map_err(crate::session::Refusal::from),
            Err(refusal) => Err(refusal),
        };
        match answer {
            Ok(config) => {
                info!(target: "audit", event = "image config read", user, verified = caller.verified, pod = pod.as_str(), target = target.as_str(), image = config.image.as_str(), peer, decision = "allowed", "audit");
                json(StatusCode::OK, &config)
            }
            Err(refusal) => {
                info!(target: "audit", event = "image config refused", user, verified = caller.verified, pod = pod.as_str(), target = target.as_str(), peer, decision = refusal.decision(), code = refusal.code, reason = refusal.message.as_str(), "audit");
                refuse_with(refusal)
            }
        }
    }
}
