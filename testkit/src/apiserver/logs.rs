//! `GET .../pods/{name}/log`: a container's output (stdout and stderr, as they came), from
//! `docker logs` of the container the pod's status names, as the kubelet serves it: the
//! current container or with `previous=true` the one before, `follow`, `tailLines`,
//! `timestamps`, `sinceSeconds`, `limitBytes`; the kubelet's 400s for a container that has
//! not started.

use std::convert::Infallible;
use std::io::Read;
use std::process::{Command, Stdio};

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::Response;
use hyper::body::Frame;
use k8s_openapi::api::core::v1::Pod;

use super::Body;
use super::pods::bad_request;

/// Serves the log that URI query `query` asks of `pod`.
pub(crate) fn serve(pod: &Pod, query: &str) -> Response<Body> {
    match command(pod, query) {
        Ok((args, limit)) => stream(args, limit),
        Err(message) => bad_request(message).map(|b| b.boxed_unsync()),
    }
}

/// The `docker logs` arguments, and the byte limit, for the request; or the kubelet's refusal.
fn command(pod: &Pod, query: &str) -> Result<(Vec<String>, Option<usize>), String> {
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
    let Some(id) = id.strip_prefix("docker://") else {
        return Err(format!(
            "the stand-in reads the logs of Docker containers only, not {id}"
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
    let limit = param("limitBytes").and_then(|l| l.parse().ok());
    Ok((args, limit))
}

/// Streams `docker` with `args`'s stdout and stderr, interleaved as written, up to `limit`
/// bytes; a client that goes away ends it.
fn stream(args: Vec<String>, limit: Option<usize>) -> Response<Body> {
    let (sent, received) = tokio::sync::mpsc::channel::<Bytes>(16);
    std::thread::spawn(move || {
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
        let mut left = limit.unwrap_or(usize::MAX);
        let mut buf = vec![0u8; 32 * 1024];
        while left > 0 {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let n = n.min(left);
                    left -= n;
                    if sent
                        .blocking_send(Bytes::copy_from_slice(&buf[..n]))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        let _ = child.kill();
        let _ = child.wait();
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
