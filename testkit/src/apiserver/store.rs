//! The stand-in's objects (namespaces, pods, config maps, secrets, service accounts, events),
//! each write given the next
//! resource version and each pod change told to watchers, as etcd and the watch cache do it
//! for the API server.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};

use k8s_openapi::api::core::v1::{
    ConfigMap, Event, Namespace, NamespaceStatus, Pod, Secret, ServiceAccount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use tokio::sync::broadcast;

/// A namespaced object's namespace and name.
pub(crate) type Key = (String, String);

/// The namespaces every cluster has, and the agent's.
const NAMESPACES: [&str; 5] = [
    "default",
    "kube-system",
    "kube-public",
    "kube-node-lease",
    super::AGENT_NAMESPACE,
];

/// How many deleted pods a watch can still be told about, and how many events are kept.
const TOMBSTONES: usize = 256;
const EVENTS: usize = 4096;

/// What a watch hears: a pod's new state and why (`ADDED`, `MODIFIED`, `DELETED`).
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub kind: &'static str,
    pub pod: Pod,
}

/// Everything the stand-in serves.
pub(crate) struct Store {
    pub pods: BTreeMap<Key, Pod>,
    pub namespaces: BTreeMap<String, Namespace>,
    pub config_maps: BTreeMap<Key, ConfigMap>,
    pub secrets: BTreeMap<Key, Secret>,
    pub service_accounts: BTreeMap<Key, ServiceAccount>,
    pub events: VecDeque<Event>,
    revision: u64,
    /// The revision at which each live pod (by uid) was created: a watch resuming from an
    /// older revision hears of it as `ADDED`.
    created: HashMap<String, u64>,
    tombstones: VecDeque<Pod>,
    changes: broadcast::Sender<Change>,
    /// The last octet (and more) of the next pod IP handed out.
    next_ip: u32,
}

impl Store {
    pub fn new() -> Store {
        let mut store = Store {
            pods: BTreeMap::new(),
            namespaces: BTreeMap::new(),
            config_maps: BTreeMap::new(),
            secrets: BTreeMap::new(),
            service_accounts: BTreeMap::new(),
            events: VecDeque::new(),
            revision: 1,
            created: HashMap::new(),
            tombstones: VecDeque::new(),
            changes: broadcast::channel(4096).0,
            next_ip: 10,
        };
        for name in NAMESPACES {
            let _ = store.add_namespace(Namespace {
                metadata: ObjectMeta {
                    name: Some(name.to_owned()),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            });
        }
        store
    }

    /// The current resource version, as lists report it.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The next resource version, for a write.
    pub fn bump(&mut self) -> String {
        self.revision += 1;
        self.revision.to_string()
    }

    /// Adds `namespace` (as the API server fills it in) and its `default` service account (as
    /// the service account controller makes it at once) and returns it as stored; `None` if
    /// it exists.
    pub fn add_namespace(&mut self, mut namespace: Namespace) -> Option<Namespace> {
        let name = namespace.metadata.name.clone().unwrap_or_default();
        if self.namespaces.contains_key(&name) {
            return None;
        }
        let meta = &mut namespace.metadata;
        meta.labels
            .get_or_insert_default()
            .insert("kubernetes.io/metadata.name".into(), name.clone());
        meta.uid = Some(uid());
        meta.creation_timestamp = Some(now());
        meta.resource_version = Some(self.bump());
        namespace.spec.get_or_insert_default().finalizers = Some(vec!["kubernetes".into()]);
        namespace.status = Some(NamespaceStatus {
            phase: Some("Active".into()),
            ..NamespaceStatus::default()
        });
        self.namespaces.insert(name.clone(), namespace.clone());
        self.put_service_account(ServiceAccount {
            metadata: ObjectMeta {
                name: Some("default".into()),
                namespace: Some(name),
                uid: Some(uid()),
                creation_timestamp: Some(now()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        });
        Some(namespace)
    }

    /// Adds namespace `name` if there is none.
    pub fn ensure_namespace(&mut self, name: &str) {
        if !self.namespaces.contains_key(name) {
            let _ = self.add_namespace(Namespace {
                metadata: ObjectMeta {
                    name: Some(name.to_owned()),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            });
        }
    }

    /// Stores `secret` (new or replacing one of the same name) at the next resource version,
    /// as given otherwise: validation and metadata are its writer's.
    pub fn put_secret(&mut self, mut secret: Secret) -> Secret {
        let key = meta_key(&secret.metadata);
        self.ensure_namespace(&key.0);
        secret.metadata.resource_version = Some(self.bump());
        self.secrets.insert(key, secret.clone());
        secret
    }

    /// Stores `account` (new or replacing one of the same name) at the next resource version.
    pub fn put_service_account(&mut self, mut account: ServiceAccount) -> ServiceAccount {
        let key = meta_key(&account.metadata);
        self.ensure_namespace(&key.0);
        account.metadata.resource_version = Some(self.bump());
        self.service_accounts.insert(key, account.clone());
        account
    }

    /// Stores `pod` (new or replacing one of the same name), at the next resource version.
    pub fn put_pod(&mut self, mut pod: Pod) -> Pod {
        let key = key_of(&pod);
        self.ensure_namespace(&key.0);
        let revision = self.bump();
        pod.metadata.resource_version = Some(revision.clone());
        let kind = match self.pods.insert(key, pod.clone()) {
            Some(old) if old.metadata.uid == pod.metadata.uid => "MODIFIED",
            _ => "ADDED",
        };
        if kind == "ADDED" {
            self.created
                .insert(pod.metadata.uid.clone().unwrap_or_default(), self.revision);
        }
        let _ = self.changes.send(Change {
            kind,
            pod: pod.clone(),
        });
        pod
    }

    /// Changes pod `key` if it is still the one whose uid is `uid`: `change` says whether it
    /// changed anything, and only then is there a new resource version.
    pub fn update_pod(&mut self, key: &Key, uid: &str, change: impl FnOnce(&mut Pod) -> bool) {
        let Some(pod) = self.pods.get_mut(key) else {
            return;
        };
        if pod.metadata.uid.as_deref() != Some(uid) || !change(pod) {
            return;
        }
        self.revision += 1;
        pod.metadata.resource_version = Some(self.revision.to_string());
        let _ = self.changes.send(Change {
            kind: "MODIFIED",
            pod: pod.clone(),
        });
    }

    /// Removes pod `key` (if `uid` is given, only if it is still that one).
    pub fn remove_pod(&mut self, key: &Key, uid: Option<&str>) -> Option<Pod> {
        let pod = self.pods.get(key)?;
        if uid.is_some_and(|uid| pod.metadata.uid.as_deref() != Some(uid)) {
            return None;
        }
        let mut pod = self.pods.remove(key)?;
        self.created
            .remove(pod.metadata.uid.as_deref().unwrap_or_default());
        pod.metadata.resource_version = Some(self.bump());
        if self.tombstones.len() == TOMBSTONES {
            self.tombstones.pop_front();
        }
        self.tombstones.push_back(pod.clone());
        let _ = self.changes.send(Change {
            kind: "DELETED",
            pod: pod.clone(),
        });
        Some(pod)
    }

    /// Keeps `event`, forgetting the oldest beyond a bound.
    pub fn keep_event(&mut self, event: Event) {
        if self.events.len() == EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    /// A receiver of every pod change from now on, and what changed after `since` (a
    /// resource version) as a watch resuming there must hear it first.
    pub fn watch_from(&self, since: u64) -> (broadcast::Receiver<Change>, Vec<Change>) {
        let newer = |pod: &Pod| revision_of(pod) > since;
        let mut missed: Vec<Change> = self
            .pods
            .values()
            .filter(|pod| newer(pod))
            .map(|pod| {
                let uid = pod.metadata.uid.as_deref().unwrap_or_default();
                let kind = match self.created.get(uid) {
                    Some(&created) if created <= since => "MODIFIED",
                    _ => "ADDED",
                };
                Change {
                    kind,
                    pod: pod.clone(),
                }
            })
            .collect();
        missed.extend(
            self.tombstones
                .iter()
                .filter(|pod| newer(pod))
                .map(|pod| Change {
                    kind: "DELETED",
                    pod: pod.clone(),
                }),
        );
        missed.sort_by_key(|c| revision_of(&c.pod));
        (self.changes.subscribe(), missed)
    }

    /// A pod IP nobody has had, from the cluster's pod network.
    pub fn next_pod_ip(&mut self) -> String {
        self.next_ip += 1;
        let n = self.next_ip;
        format!("10.244.{}.{}", (n >> 8) & 0xff, n & 0xff)
    }
}

/// The resource version of `pod`, as a number.
pub(crate) fn revision_of(pod: &Pod) -> u64 {
    let rv = pod.metadata.resource_version.as_deref().unwrap_or("0");
    rv.parse().unwrap_or(0)
}

/// The namespace and name of `pod`.
pub(crate) fn key_of(pod: &Pod) -> Key {
    meta_key(&pod.metadata)
}

/// The namespace (`default` if none) and name of an object of `meta`.
pub(crate) fn meta_key(meta: &ObjectMeta) -> Key {
    (
        meta.namespace.clone().unwrap_or_else(|| "default".into()),
        meta.name.clone().unwrap_or_default(),
    )
}

/// The current time, as object timestamps carry it.
pub(crate) fn now() -> Time {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = i64::try_from(since.as_secs()).unwrap_or_default();
    Time(Timestamp::new(seconds, 0).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// 64 random bits (std's per-instance hash keys are random).
pub(crate) fn random() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default(),
    );
    hasher.finish()
}

/// A fresh object uid, in the API server's UUID shape.
pub(crate) fn uid() -> String {
    let (a, b) = (random(), random());
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 52,
        b & 0xffff_ffff_ffff
    )
}
