//! Events (`core/v1`), as the scheduler and the kubelet record them about pods: one per
//! distinct happening, a repeat bumping `count` and `lastTimestamp` as client-go's event
//! correlator does. Listed with field selectors, as `kubectl describe pod` and
//! `kubectl get events --field-selector involvedObject.name=...` ask.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::NODE;
use super::store::{Store, now, random};

/// Who reports an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reporter {
    Scheduler,
    Kubelet,
}

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Type {
    Normal,
    Warning,
}

/// One happening to a pod (or one of its containers, by name).
pub(crate) struct Happening<'a> {
    pub reporter: Reporter,
    pub type_: Type,
    pub reason: &'a str,
    pub message: String,
    pub container: Option<&'a str>,
}

impl Happening<'_> {
    /// The kubelet saw it.
    pub fn kubelet<'a>(
        type_: Type,
        reason: &'a str,
        container: Option<&'a str>,
        message: String,
    ) -> Happening<'a> {
        Happening {
            reporter: Reporter::Kubelet,
            type_,
            reason,
            message,
            container,
        }
    }
}

impl Store {
    /// Records `what` about `pod`: a new Event, or a repeat of one.
    pub fn record(&mut self, pod: &Pod, what: Happening<'_>) {
        let init = |c: &str| {
            let spec = pod
                .spec
                .iter()
                .flat_map(|s| s.init_containers.iter().flatten());
            spec.clone().any(|i| i.name == c)
        };
        let field_path = what.container.map(|c| {
            let list = if init(c) {
                "initContainers"
            } else {
                "containers"
            };
            format!("spec.{list}{{{c}}}")
        });
        let (component, host) = match what.reporter {
            Reporter::Scheduler => ("default-scheduler", None),
            Reporter::Kubelet => ("kubelet", Some(NODE.to_owned())),
        };
        let type_ = match what.type_ {
            Type::Normal => "Normal",
            Type::Warning => "Warning",
        };
        let object = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: pod.metadata.name.clone(),
            namespace: pod.metadata.namespace.clone(),
            uid: pod.metadata.uid.clone(),
            resource_version: pod.metadata.resource_version.clone(),
            field_path,
        };
        let revision = self.bump();
        let time = now();
        let repeat = self.events.iter_mut().find(|e| {
            e.involved_object.uid == object.uid
                && e.involved_object.field_path == object.field_path
                && e.reason.as_deref() == Some(what.reason)
                && e.message.as_deref() == Some(&what.message)
                && e.type_.as_deref() == Some(type_)
                && e.reporting_component.as_deref() == Some(component)
        });
        if let Some(event) = repeat {
            event.count = Some(event.count.unwrap_or(1) + 1);
            event.last_timestamp = Some(time);
            event.metadata.resource_version = Some(revision);
            return;
        }
        let name = pod.metadata.name.clone().unwrap_or_default();
        self.keep_event(Event {
            metadata: ObjectMeta {
                name: Some(format!("{name}.{:016x}", random())),
                namespace: pod.metadata.namespace.clone(),
                uid: Some(super::store::uid()),
                resource_version: Some(revision),
                creation_timestamp: Some(time.clone()),
                ..ObjectMeta::default()
            },
            involved_object: object,
            reason: Some(what.reason.to_owned()),
            message: Some(what.message),
            type_: Some(type_.to_owned()),
            source: Some(EventSource {
                component: Some(component.to_owned()),
                host: host.clone(),
            }),
            reporting_component: Some(component.to_owned()),
            reporting_instance: Some(host.unwrap_or_default()),
            first_timestamp: Some(time.clone()),
            last_timestamp: Some(time),
            count: Some(1),
            ..Event::default()
        });
    }
}

/// The events of `namespace` (all when `None`) that `query` selects.
pub(crate) fn selected<'a>(
    store: &'a Store,
    namespace: Option<&str>,
    query: &super::selector::Query,
) -> Vec<&'a Event> {
    store
        .events
        .iter()
        .filter(|e| namespace.is_none_or(|ns| e.metadata.namespace.as_deref() == Some(ns)))
        .filter(|e| query.event(e))
        .collect()
}
