//! `GET .../pods/{name}/log`: a container's output (stdout and stderr, as they came), from
//! `docker logs` of the container the pod's status names, or on containerd from the file the
//! container's output goes to, as the kubelet serves it: the current container or with
//! `previous=true` the one before, `follow`, `tailLines`, `timestamps` and `sinceSeconds`
//! (Docker only: containerd's files have no times), `limitBytes`; the kubelet's 400s for a
//! container that has not started.

use std::convert::Infallible;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::Response;
use hyper::body::Frame;
use k8s_openapi::api::core::v1::Pod;

use super::kubelet::Kubelet;
use super::pods::bad_request;
use super::{Body, Shared};

/// Where a log is read from.
enum Source {
    /// `docker logs` with these arguments.
    Docker(Vec<String>),
    /// Containerd container `id`'s file: the last `tail` lines, then what comes while it
    /// runs if `follow`.
    File {
        id: String,
        path: PathBuf,
        tail: Option<usize>,
        follow: bool,
    },
}

/// Serves the log that URI query `query` asks of `pod`, which the stand-in's kubelet runs
/// (or a test registered).
pub(crate) fn serve(pod: &Pod, query: &str, shared: &Arc<Shared>) -> Response<Body> {
    match command(pod, query, &shared.kubelet) {
        Ok((Source::Docker(args), limit)) => stream(limit, move |sink| docker(args, sink)),
        Ok((source @ Source::File { .. }, limit)) => {
            let shared = shared.clone();
            stream(limit, move |sink| file(source, &shared.kubelet, sink))
        }
        Err(message) => bad_request(message).map(|b| b.boxed_unsync()),
    }
}

/// The log's source, and the byte limit, for the request; or the kubelet's refusal.
fn command(pod: &Pod, query: &str, kubelet: &Kubelet) -> Result<(Source, Option<usize>), String> {
    let param = |name: &str| {
        form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    let name = pod.metadata.name.clone().unwrap_or_default();
    let containers: Vec<String> = pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .map(|c| c.name.clone())
        .collect();
    let container = match param("container") {
        Some(c) if !c.is_empty() => c,
        _ if containers.len() == 1 => containers[0].clone(),
        _ => {
            return Err(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            ));
        }
    };
    let inits: Vec<String> = pod
        .spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten())
        .map(|c| c.name.clone())
        .collect();
    if !containers.contains(&container) && !inits.contains(&container) {
        return Err(format!("container {container} is not valid for pod {name}"));
    }
    let status = pod
        .status
        .iter()
        .flat_map(|s| {
            let init = s.init_container_statuses.iter().flatten();
            init.chain(s.container_statuses.iter().flatten())
        })
        .find(|s| s.name == container)
        .cloned()
        .unwrap_or_default();
    let state = status.state.unwrap_or_default();
    let last = status.last_state.and_then(|l| l.terminated);
    let last_id = last.as_ref().and_then(|t| t.container_id.clone());
    let terminated = |what: &str| format!("container {container:?} in pod {name:?} is {what}");
    let id = if param("previous").as_deref() == Some("true") {
        last_id.ok_or_else(|| {
            format!("previous terminated container {container:?} in pod {name:?} not found")
        })?
    } else if state.running.is_some() {
        status
            .container_id
            .ok_or_else(|| terminated("not running"))?
    } else if let Some(ended) = &state.terminated {
        ended
            .container_id
            .clone()
            .or(status.container_id)
            .or(last_id)
            .ok_or_else(|| terminated("terminated"))?
    } else if let Some(id) = last_id {
        id
    } else {
        let reason = state.waiting.and_then(|w| w.reason).unwrap_or_default();
        let why = match reason.as_str() {
            "ErrImagePull" => "image can't be pulled".to_owned(),
            "ImagePullBackOff" => "trying and failing to pull image".to_owned(),
            _ => reason,
        };
        return Err(terminated(&format!("waiting to start: {why}")));
    };
    let limit = param("limitBytes").and_then(|l| l.parse().ok());
    if let Some(id) = id.strip_prefix("containerd://") {
        let path = kubelet.log_file(id).ok_or_else(|| {
            format!("the stand-in's kubelet runs no containerd containers, not {id}")
        })?;
        if param("timestamps").as_deref() == Some("true") || param("sinceSeconds").is_some() {
            return Err(
                "the stand-in's containerd logs have no times: no timestamps or sinceSeconds"
                    .into(),
            );
        }
        let source = Source::File {
            id: id.to_owned(),
            path,
            tail: param("tailLines").and_then(|n| n.parse().ok()),
            follow: param("follow").as_deref() == Some("true"),
        };
        return Ok((source, limit));
    }
    let Some(id) = id.strip_prefix("docker://") else {
        return Err(format!(
            "the stand-in reads the logs of Docker and containerd containers only, not {id}"
        ));
    };
    let mut args = vec!["logs".to_owned()];
    if param("follow").as_deref() == Some("true") {
        args.push("--follow".into());
    }
    if param("timestamps").as_deref() == Some("true") {
        args.push("--timestamps".into());
    }
    if let Some(n) = param("tailLines") {
        args.extend(["--tail".into(), n]);
    }
    if let Some(s) = param("sinceSeconds") {
        args.extend(["--since".into(), format!("{s}s")]);
    }
    args.push(id.to_owned());
    Ok((Source::Docker(args), limit))
}

/// Where a log's bytes go: `false` once the client has gone or the limit is reached.
type Sink<'a> = &'a mut dyn FnMut(&[u8]) -> bool;

/// `docker` with `args`'s stdout and stderr, interleaved as written, into `sink`.
fn docker(args: Vec<String>, sink: Sink<'_>) {
    let Ok((mut reader, writer)) = std::io::pipe() else {
        return;
    };
    let Ok(other) = writer.try_clone() else {
        return;
    };
    let child = Command::new("/usr/bin/docker")
        .args(&args)
        .env("DOCKER_HOST", crate::docker_host())
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(other)
        .spawn();
    let Ok(mut child) = child else {
        return;
    };
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) if !sink(&buf[..n]) => break,
            Ok(_) => {}
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A containerd container's log file into `sink`: its last lines if asked, then, following,
/// what is written while the container runs.
fn file(source: Source, kubelet: &Kubelet, sink: Sink<'_>) {
    let Source::File {
        id,
        path,
        tail,
        follow,
    } = source
    else {
        return;
    };
    let Ok(mut log) = std::fs::File::open(&path) else {
        return;
    };
    let mut all = Vec::new();
    if log.read_to_end(&mut all).is_err() {
        return;
    }
    let from = tail.map_or(0, |n| {
        let ends = all.iter().enumerate().filter(|(_, b)| **b == b'\n');
        let starts: Vec<usize> = ends.map(|(i, _)| i + 1).collect();
        // Where each line starts; the last "line" is empty if the file ends with a newline.
        let complete = if all.last() == Some(&b'\n') { 1 } else { 0 };
        starts
            .len()
            .checked_sub(n + complete)
            .map_or(0, |i| starts[i])
    });
    if !sink(&all[from..]) || !follow {
        return;
    }
    let mut offset = all.len() as u64;
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        // Read to the end once more after it stopped: what it wrote last.
        let running = kubelet.running(&id);
        if log.seek(SeekFrom::Start(offset)).is_err() {
            return;
        }
        loop {
            match log.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    offset += n as u64;
                    if !sink(&buf[..n]) {
                        return;
                    }
                }
            }
        }
        if !running {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Streams what `source` writes into its sink, up to `limit` bytes; a client that goes away
/// ends it.
fn stream(limit: Option<usize>, source: impl FnOnce(Sink<'_>) + Send + 'static) -> Response<Body> {
    let (sent, received) = tokio::sync::mpsc::channel::<Bytes>(16);
    std::thread::spawn(move || {
        let mut left = limit.unwrap_or(usize::MAX);
        let mut sink = |bytes: &[u8]| {
            let n = bytes.len().min(left);
            left -= n;
            let sent = n == 0
                || sent
                    .blocking_send(Bytes::copy_from_slice(&bytes[..n]))
                    .is_ok();
            sent && left > 0
        };
        source(&mut sink);
    });
    let stream = futures_util::stream::unfold(received, |mut received| async move {
        let chunk = received.recv().await?;
        Some((Ok::<_, Infallible>(Frame::data(chunk)), received))
    });
    let mut response = Response::new(StreamBody::new(stream).boxed_unsync());
    response
        .headers_mut()
        .insert("content-type", "text/plain".parse().unwrap());
    response
}
