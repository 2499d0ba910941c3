//! The stand-in's authentication and authorization APIs, as agents call them: `TokenReview`
//! (`authentication.k8s.io/v1`) answered from a table of test users' tokens, and
//! `SubjectAccessReview` (`authorization.k8s.io/v1`) answered from a table of grants, as an
//! RBAC authorizer would. Only the agent's own service-account token may create reviews, as
//! the `system:auth-delegator` role allows in a cluster.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewStatus, UserInfo};
use k8s_openapi::api::authorization::v1::{SubjectAccessReview, SubjectAccessReviewStatus};
use kdbg_relay::status::Status;

use super::json;

/// The token of the agent's service account in the kubeconfig it is given.
pub const AGENT_TOKEN: &str = "kubectl-debug-agent-sa-token";

/// Who holds which token, and what each user may do.
#[derive(Debug, Default)]
pub struct Table {
    tokens: HashMap<String, Token>,
    grants: Vec<Grant>,
    /// How many reviews were asked, of each kind: caching shows in these.
    pub token_reviews: usize,
    /// See `token_reviews`.
    pub access_reviews: usize,
}

#[derive(Debug, Clone)]
struct Token {
    user: String,
    groups: Vec<String>,
    expired: bool,
}

/// `verb` on `resource` (`pods/exec`: resource and subresource) in `namespace` (empty: all),
/// of `name` (empty: any).
#[derive(Debug, Clone)]
struct Grant {
    user: String,
    verb: String,
    resource: String,
    namespace: String,
    name: String,
}

impl Grant {
    /// Whether it lets `user` do `verb` on `resource` of `namespace`'s `name`; `*` for a verb
    /// or resource is any, as in RBAC (`cluster-admin`'s rule).
    fn allows(&self, user: &str, verb: &str, resource: &str, namespace: &str, name: &str) -> bool {
        self.user == user
            && (self.verb == "*" || self.verb == verb)
            && (self.resource == "*" || self.resource == resource)
            && (self.namespace.is_empty() || self.namespace == namespace)
            && (self.name.is_empty() || self.name == name)
    }
}

/// The table, shared with the server's thread.
pub type Shared = Arc<Mutex<Table>>;

impl Table {
    /// `token` names `user` in `groups`.
    pub fn user(&mut self, token: &str, user: &str, groups: &[&str]) {
        self.tokens.insert(
            token.to_owned(),
            Token {
                user: user.to_owned(),
                groups: groups.iter().map(|g| (*g).to_owned()).collect(),
                expired: false,
            },
        );
    }

    /// `token` has expired.
    pub fn expire(&mut self, token: &str) {
        if let Some(t) = self.tokens.get_mut(token) {
            t.expired = true;
        }
    }

    /// `user` may `verb` `resource` (`pods/exec`) in `namespace` ("" for every namespace and
    /// cluster-scoped objects) on `name` ("" for any).
    pub fn grant(&mut self, user: &str, verb: &str, resource: &str, namespace: &str, name: &str) {
        self.grants.push(Grant {
            user: user.to_owned(),
            verb: verb.to_owned(),
            resource: resource.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        });
    }
}

/// Whether `req` is a review this module answers.
pub fn is_review(req: &Request<hyper::body::Incoming>) -> bool {
    req.method() == hyper::Method::POST
        && matches!(
            req.uri().path(),
            "/apis/authentication.k8s.io/v1/tokenreviews"
                | "/apis/authorization.k8s.io/v1/subjectaccessreviews"
        )
}

/// Answers a review.
pub async fn review(req: Request<hyper::body::Incoming>, table: Shared) -> Response<Full<Bytes>> {
    let caller = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    if caller.as_deref() != Some(AGENT_TOKEN) {
        return json(
            StatusCode::FORBIDDEN,
            &Status::http_error(
                403,
                "Forbidden",
                "only the kubectl-debug agent's service account may create reviews here",
            ),
        );
    }
    let path = req.uri().path().to_owned();
    let Ok(body) = req.into_body().collect().await else {
        return json(
            StatusCode::BAD_REQUEST,
            &Status::http_error(400, "BadRequest", "unreadable body"),
        );
    };
    let body = body.to_bytes();
    let mut table = table.lock().unwrap();
    if path.ends_with("/tokenreviews") {
        let Ok(mut review) = serde_json::from_slice::<TokenReview>(&body) else {
            return json(
                StatusCode::BAD_REQUEST,
                &Status::http_error(400, "BadRequest", "not a TokenReview"),
            );
        };
        table.token_reviews += 1;
        let token = review.spec.token.clone().unwrap_or_default();
        review.status = Some(match table.tokens.get(&token) {
            Some(t) if !t.expired => TokenReviewStatus {
                authenticated: Some(true),
                user: Some(UserInfo {
                    username: Some(t.user.clone()),
                    uid: Some(format!("uid-{}", t.user)),
                    groups: Some(t.groups.clone()),
                    extra: None,
                }),
                ..TokenReviewStatus::default()
            },
            Some(_) => TokenReviewStatus {
                authenticated: Some(false),
                error: Some("token has expired".into()),
                ..TokenReviewStatus::default()
            },
            None => TokenReviewStatus {
                authenticated: Some(false),
                error: Some("invalid bearer token".into()),
                ..TokenReviewStatus::default()
            },
        });
        return json(StatusCode::CREATED, &review);
    }
    let Ok(mut review) = serde_json::from_slice::<SubjectAccessReview>(&body) else {
        return json(
            StatusCode::BAD_REQUEST,
            &Status::http_error(400, "BadRequest", "not a SubjectAccessReview"),
        );
    };
    table.access_reviews += 1;
    let spec = &review.spec;
    let attrs = spec.resource_attributes.clone().unwrap_or_default();
    let resource = match attrs.subresource.as_deref() {
        Some(sub) => format!("{}/{sub}", attrs.resource.as_deref().unwrap_or("")),
        None => attrs.resource.clone().unwrap_or_default(),
    };
    let user = spec.user.clone().unwrap_or_default();
    let namespace = attrs.namespace.clone().unwrap_or_default();
    let name = attrs.name.clone().unwrap_or_default();
    let verb = attrs.verb.clone().unwrap_or_default();
    let allowed = table
        .grants
        .iter()
        .any(|g| g.allows(&user, &verb, &resource, &namespace, &name));
    review.status = Some(SubjectAccessReviewStatus {
        allowed,
        reason: Some(if allowed {
            "granted by the stand-in's table".into()
        } else {
            "no grant in the stand-in's table".into()
        }),
        ..SubjectAccessReviewStatus::default()
    });
    json(StatusCode::CREATED, &review)
}

/// The API server's refusal, if it refuses, of `verb` on `resource` of the core group (`pods`,
/// `secrets`, `serviceaccounts`; `name`: one object, or empty) in `namespace` by the caller of
/// `req`, having authenticated and authorised it. A token of the table authenticates its
/// user, whose grants decide; an expired one is refused with `401`. Any other token (or none:
/// kubectl sends none over plain HTTP) is the cluster's administrator (the kubeconfig's
/// `tester`), as the stand-in has always treated it.
pub(crate) fn authorize(
    table: &Shared,
    req: &Request<hyper::body::Incoming>,
    verb: &str,
    resource: &str,
    namespace: &str,
    name: &str,
) -> Option<Response<Full<Bytes>>> {
    let token = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let table = table.lock().unwrap();
    let known = token.and_then(|t| table.tokens.get(t))?;
    if known.expired {
        return Some(json(
            StatusCode::UNAUTHORIZED,
            &Status::http_error(401, "Unauthorized", "Unauthorized"),
        ));
    }
    let allowed = table
        .grants
        .iter()
        .any(|g| g.allows(&known.user, verb, resource, namespace, name));
    if allowed {
        return None;
    }
    let subject = if name.is_empty() {
        resource.to_owned()
    } else {
        format!("{resource} \"{name}\"")
    };
    let scope = if namespace.is_empty() {
        "at the cluster scope".to_owned()
    } else {
        format!("in the namespace \"{namespace}\"")
    };
    let mut status = Status::http_error(
        403,
        "Forbidden",
        format!(
            "{subject} is forbidden: User \"{}\" cannot {verb} resource \"{resource}\" in API group \"\" {scope}",
            known.user
        ),
    );
    status.details = Some(kdbg_relay::status::StatusDetails {
        name: (!name.is_empty()).then(|| name.to_owned()),
        kind: Some(resource.into()),
        causes: Vec::new(),
    });
    Some(json(StatusCode::FORBIDDEN, &status))
}
