//! `GET /api/v1/containers` and `DELETE /api/v1/containers/{name}`: the node's debug
//! containers, listed and removed.

use hyper::{Response, StatusCode};
use kdbg_api::{ContainerList, PodScope};
use tracing::debug;

use crate::auth::Caller;
use crate::server::{Body, json, refuse_with};
use crate::{Agent, containers, session};

impl Agent {
    /// The debug containers in a scope. Those that give the node itself are listed only to
    /// callers allowed the node: a list of one pod's is refused with the reason, a wider one
    /// leaves them out.
    pub(crate) async fn containers(&self, scope: &PodScope, caller: &Caller) -> Response<Body> {
        let found = match containers::find_all(self, scope).await {
            Ok(found) => found,
            Err(e) => return refuse_with(session::Refusal::from(e)),
        };
        let mut shown = Vec::with_capacity(found.len());
        for c in found {
            match self.admit_container(caller, &c).await {
                Ok(()) => shown.push(c),
                Err(refusal) if scope.is_one() => return refuse_with(refusal),
                Err(_) => debug!(
                    container = c.name.as_str(),
                    "left out of a list: node-level"
                ),
            }
        }
        json(
            StatusCode::OK,
            &ContainerList {
                items: containers::items(self, &shown).await,
            },
        )
    }

    /// Removes one debug container of the scope's pod.
    pub(crate) async fn remove(
        &self,
        name: &str,
        scope: &PodScope,
        caller: &Caller,
    ) -> Response<Body> {
        let found = match containers::find_in(self, name, scope).await {
            Ok(found) => found,
            Err(e) => return refuse_with(session::Refusal::from(e)),
        };
        if let Err(refusal) = self.admit_container(caller, &found).await {
            return refuse_with(refusal);
        }
        match containers::remove(self, &found).await {
            Ok(item) => json(StatusCode::OK, &item),
            Err(e) => refuse_with(session::Refusal::from(e)),
        }
    }
}
