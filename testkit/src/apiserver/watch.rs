//! `GET ...pods?watch=true`: a stream of `WatchEvent`s (`{"type": ..., "object": ...}`, one
//! JSON document each) as the API server sends them to informers, `kubectl wait` and
//! `kubectl delete`'s wait: from the list's resource version on (or, from version 0 or
//! with `sendInitialEvents`, every selected pod as `ADDED` first), a pod leaving the selection
//! being `DELETED` to the watcher, until `timeoutSeconds`.

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::Response;
use hyper::body::Frame;
use tokio::sync::broadcast;

use super::selector::{POD_FIELDS, Query};
use super::store::{Change, revision_of};
use super::{Body, Shared};

/// What a watch keeps between events.
struct Watch {
    changes: broadcast::Receiver<Change>,
    pending: VecDeque<Bytes>,
    namespace: Option<String>,
    query: Query,
    /// The pods the watcher has been told of and not told are gone.
    visible: HashSet<String>,
    /// Each pod as a one-row table (`kubectl get -w`), with the URI query.
    table: Option<String>,
    until: tokio::time::Instant,
}

impl Watch {
    /// Queues what the watcher hears of `change`.
    fn hear(&mut self, change: Change) {
        let pod = &change.pod;
        if self
            .namespace
            .as_ref()
            .is_some_and(|ns| pod.metadata.namespace.as_ref() != Some(ns))
        {
            return;
        }
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let seen = self.visible.contains(&uid);
        let selected = change.kind != "DELETED" && self.query.pod(pod);
        let kind = match (seen, selected) {
            (true, true) => "MODIFIED",
            (false, true) => "ADDED",
            (true, false) => "DELETED",
            (false, false) if change.kind == "DELETED" && self.query.pod(pod) => "DELETED",
            (false, false) => return,
        };
        if selected {
            self.visible.insert(uid);
        } else {
            self.visible.remove(&uid);
        }
        let object = match &self.table {
            Some(query) => super::table::pods(std::slice::from_ref(pod), revision_of(pod), query),
            None => serde_json::to_value(pod).unwrap_or_default(),
        };
        self.pending.push_back(event(kind, &object));
    }
}

fn event(kind: &str, object: &serde_json::Value) -> Bytes {
    let mut line = serde_json::to_vec(&serde_json::json!({"type": kind, "object": object}))
        .expect("JSON serialises");
    line.push(b'\n');
    Bytes::from(line)
}

/// Serves a watch of the pods of `namespace` (all when `None`) per the URI query `query`.
pub(crate) fn pods(
    shared: &Arc<Shared>,
    namespace: Option<String>,
    query: &str,
    table: bool,
) -> Response<Body> {
    let selection = match Query::parse(query, POD_FIELDS) {
        Ok(selection) => selection,
        Err(e) => return super::pods::bad_request(e).map(|b| b.boxed_unsync()),
    };
    let param = |name: &str| {
        form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    let since: u64 = param("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let initial = param("sendInitialEvents").as_deref() == Some("true");
    let bookmarks = param("allowWatchBookmarks").as_deref() == Some("true");
    let timeout = param("timeoutSeconds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1800);
    let store = shared.store.lock().unwrap();
    let (changes, missed) = if initial || since == 0 {
        let (changes, _) = store.watch_from(u64::MAX);
        let all = store.pods.values().map(|pod| Change {
            kind: "ADDED",
            pod: pod.clone(),
        });
        (changes, all.collect())
    } else {
        store.watch_from(since)
    };
    let mut watch = Watch {
        changes,
        pending: VecDeque::new(),
        namespace,
        query: selection,
        visible: HashSet::new(),
        table: table.then(|| query.to_owned()),
        until: tokio::time::Instant::now() + Duration::from_secs(timeout),
    };
    if !(initial || since == 0) {
        // Resuming: the watcher knows the selected pods that existed at `since`.
        watch.visible = store
            .pods
            .values()
            .filter(|p| revision_of(p) <= since && watch.query.pod(p))
            .filter_map(|p| p.metadata.uid.clone())
            .collect();
    }
    for change in missed {
        watch.hear(change);
    }
    if initial && bookmarks {
        let bookmark = serde_json::json!({
            "kind": "Pod", "apiVersion": "v1",
            "metadata": {
                "resourceVersion": store.revision().to_string(),
                "annotations": {"k8s.io/initial-events-end": "true"}
            }
        });
        watch.pending.push_back(event("BOOKMARK", &bookmark));
    }
    drop(store);
    let stream = futures_util::stream::unfold(watch, |mut watch| async move {
        loop {
            if let Some(next) = watch.pending.pop_front() {
                return Some((Ok::<_, Infallible>(Frame::data(next)), watch));
            }
            let heard = tokio::select! {
                heard = watch.changes.recv() => heard,
                () = tokio::time::sleep_until(watch.until) => return None,
            };
            // Lagging behind (or the stand-in going away) ends the watch: the watcher lists
            // again, as informers do when a watch ends.
            watch.hear(heard.ok()?);
        }
    });
    let mut response = Response::new(StreamBody::new(stream).boxed_unsync());
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    response
}

/// Whether `query` asks for a watch.
pub(crate) fn asked(query: &str) -> bool {
    form_urlencoded::parse(query.as_bytes()).any(|(k, v)| k == "watch" && (v == "true" || v == "1"))
}
