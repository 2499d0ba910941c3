//! Label and field selectors as the API server parses them (`k8s.io/apimachinery/pkg/labels`
//! and `pkg/fields`): `key=value`, `key==value`, `key!=value`, `key in (a,b)`,
//! `key notin (a,b)`, `key` and `!key` for labels; `=`, `==` and `!=` for fields, each over the
//! fields the resource supports.

use k8s_openapi::api::core::v1::{Event, Pod};

/// The fields a pod selector may name (`pkg/registry/core/pod/strategy.go`, `ToSelectableFields`).
pub(crate) const POD_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
];

/// The fields an event selector may name.
pub(crate) const EVENT_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Eq,
    NotEq,
    In,
    NotIn,
    Exists,
    NotExists,
}

#[derive(Debug, Clone)]
struct Requirement {
    key: String,
    op: Op,
    values: Vec<String>,
}

/// A parsed selector: every requirement must hold.
#[derive(Debug, Clone, Default)]
pub(crate) struct Selector(Vec<Requirement>);

impl Selector {
    /// Parses a label selector.
    pub fn labels(text: &str) -> Result<Selector, String> {
        let mut requirements = Vec::new();
        for term in split_terms(text) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            let requirement = if let Some(key) = term.strip_prefix('!') {
                Requirement {
                    key: key.trim().to_owned(),
                    op: Op::NotExists,
                    values: Vec::new(),
                }
            } else if let Some(open) = term.find('(') {
                let mut head = term[..open].split_whitespace();
                let (Some(key), Some(op), None) = (head.next(), head.next(), head.next()) else {
                    return Err(format!("unable to parse requirement: {term:?}"));
                };
                let op = match op {
                    "in" => Op::In,
                    "notin" => Op::NotIn,
                    _ => return Err(format!("unable to parse requirement: {term:?}")),
                };
                let Some(inside) = term[open + 1..].strip_suffix(')') else {
                    return Err(format!(
                        "unable to parse requirement: {term:?}: expected ')'"
                    ));
                };
                Requirement {
                    key: key.to_owned(),
                    op,
                    values: inside.split(',').map(|v| v.trim().to_owned()).collect(),
                }
            } else {
                comparison(term)?.unwrap_or(Requirement {
                    key: term.to_owned(),
                    op: Op::Exists,
                    values: Vec::new(),
                })
            };
            if requirement.key.is_empty() || requirement.key.contains(char::is_whitespace) {
                return Err(format!("unable to parse requirement: {term:?}"));
            }
            requirements.push(requirement);
        }
        Ok(Selector(requirements))
    }

    /// Parses a field selector over `supported` fields.
    pub fn fields(text: &str, supported: &[&str]) -> Result<Selector, String> {
        let mut requirements = Vec::new();
        for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let Some(requirement) = comparison(term)? else {
                return Err(format!(
                    "invalid selector: '{text}'; can't understand '{term}'"
                ));
            };
            if !supported.contains(&requirement.key.as_str()) {
                return Err(format!("field label not supported: {}", requirement.key));
            }
            requirements.push(requirement);
        }
        Ok(Selector(requirements))
    }

    /// Whether the object whose values `get` gives meets every requirement.
    pub fn matches(&self, get: impl Fn(&str) -> Option<String>) -> bool {
        self.0.iter().all(|r| {
            let value = get(&r.key);
            match r.op {
                Op::Eq => value.as_deref() == Some(&r.values[0]),
                Op::NotEq => value.as_deref() != Some(&r.values[0]),
                Op::In => value.is_some_and(|v| r.values.contains(&v)),
                Op::NotIn => value.is_none_or(|v| !r.values.contains(&v)),
                Op::Exists => value.is_some(),
                Op::NotExists => value.is_none(),
            }
        })
    }
}

/// `key=value`, `key==value` or `key!=value`, if `term` is one.
fn comparison(term: &str) -> Result<Option<Requirement>, String> {
    let (key, op, value) = if let Some((k, v)) = term.split_once("!=") {
        (k, Op::NotEq, v)
    } else if let Some((k, v)) = term.split_once("==") {
        (k, Op::Eq, v)
    } else if let Some((k, v)) = term.split_once('=') {
        (k, Op::Eq, v)
    } else {
        return Ok(None);
    };
    if value.contains(['=', '!']) {
        return Err(format!("unable to parse requirement: {term:?}"));
    }
    Ok(Some(Requirement {
        key: key.trim().to_owned(),
        op,
        values: vec![value.trim().to_owned()],
    }))
}

/// The comma-separated terms of a label selector, commas inside `( )` not splitting.
fn split_terms(text: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&text[start..]);
    terms
}

/// A request's `labelSelector` and `fieldSelector`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Query {
    labels: Selector,
    fields: Selector,
}

impl Query {
    /// The selectors of URI query `query`, over `fields`.
    pub fn parse(query: &str, fields: &[&str]) -> Result<Query, String> {
        let mut parsed = Query::default();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*key {
                "labelSelector" => parsed.labels = Selector::labels(&value)?,
                "fieldSelector" => parsed.fields = Selector::fields(&value, fields)?,
                _ => {}
            }
        }
        Ok(parsed)
    }

    /// Whether `pod` is selected.
    pub fn pod(&self, pod: &Pod) -> bool {
        let labels = pod.metadata.labels.as_ref();
        self.labels
            .matches(|k| labels.and_then(|l| l.get(k)).cloned())
            && self.fields.matches(|k| pod_field(pod, k))
    }

    /// Whether `event` is selected.
    pub fn event(&self, event: &Event) -> bool {
        let labels = event.metadata.labels.as_ref();
        self.labels
            .matches(|k| labels.and_then(|l| l.get(k)).cloned())
            && self.fields.matches(|k| event_field(event, k))
    }
}

/// Field `key` of `pod`, as field selectors see it (an absent field is empty).
fn pod_field(pod: &Pod, key: &str) -> Option<String> {
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let text = |v: Option<&String>| Some(v.cloned().unwrap_or_default());
    match key {
        "metadata.name" => text(pod.metadata.name.as_ref()),
        "metadata.namespace" => text(pod.metadata.namespace.as_ref()),
        "spec.nodeName" => text(spec.and_then(|s| s.node_name.as_ref())),
        "spec.restartPolicy" => text(spec.and_then(|s| s.restart_policy.as_ref())),
        "spec.schedulerName" => text(spec.and_then(|s| s.scheduler_name.as_ref())),
        "spec.serviceAccountName" => text(spec.and_then(|s| s.service_account_name.as_ref())),
        "spec.hostNetwork" => Some(
            spec.and_then(|s| s.host_network)
                .unwrap_or(false)
                .to_string(),
        ),
        "status.phase" => text(status.and_then(|s| s.phase.as_ref())),
        "status.podIP" => text(status.and_then(|s| s.pod_ip.as_ref())),
        "status.nominatedNodeName" => text(status.and_then(|s| s.nominated_node_name.as_ref())),
        _ => None,
    }
}

/// Field `key` of `event`.
fn event_field(event: &Event, key: &str) -> Option<String> {
    let object = &event.involved_object;
    let text = |v: Option<&String>| Some(v.cloned().unwrap_or_default());
    match key {
        "metadata.name" => text(event.metadata.name.as_ref()),
        "metadata.namespace" => text(event.metadata.namespace.as_ref()),
        "involvedObject.kind" => text(object.kind.as_ref()),
        "involvedObject.namespace" => text(object.namespace.as_ref()),
        "involvedObject.name" => text(object.name.as_ref()),
        "involvedObject.uid" => text(object.uid.as_ref()),
        "involvedObject.apiVersion" => text(object.api_version.as_ref()),
        "involvedObject.resourceVersion" => text(object.resource_version.as_ref()),
        "involvedObject.fieldPath" => text(object.field_path.as_ref()),
        "reason" => text(event.reason.as_ref()),
        "reportingComponent" => text(event.reporting_component.as_ref()),
        "source" => text(event.source.as_ref().and_then(|s| s.component.as_ref())),
        "type" => text(event.type_.as_ref()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn label_selectors_mean_what_kubectl_means() {
        let web = labels(&[("app", "web"), ("tier", "front")]);
        let db = labels(&[("app", "db")]);
        let cases = [
            ("app=web", true, false),
            ("app==web,tier=front", true, false),
            ("app!=web", false, true),
            ("app in (web, db)", true, true),
            ("app notin (web),tier", false, false),
            ("!tier", false, true),
            ("tier", true, false),
            ("tier notin (back)", true, true),
            ("", true, true),
        ];
        for (text, on_web, on_db) in cases {
            let s = Selector::labels(text).unwrap();
            assert_eq!((s.matches(&web), s.matches(&db)), (on_web, on_db), "{text}");
        }
        assert!(Selector::labels("app in web").is_err());
        assert!(Selector::labels("a b").is_err());
    }

    #[test]
    fn field_selectors_name_supported_fields_only() {
        let s = Selector::fields("status.phase!=Running,spec.nodeName=n", POD_FIELDS).unwrap();
        assert!(s.matches(labels(&[
            ("status.phase", "Pending"),
            ("spec.nodeName", "n")
        ])));
        assert!(!s.matches(labels(&[
            ("status.phase", "Running"),
            ("spec.nodeName", "n")
        ])));
        assert_eq!(
            Selector::fields("spec.image=x", POD_FIELDS).unwrap_err(),
            "field label not supported: spec.image"
        );
    }
}
