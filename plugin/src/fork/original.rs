//! What the original container of a `--fork` ran, said once the copy's agent is reached: the
//! pod's command when it sets one; else what the image says, read from its config by the
//! agent ([`kdbg_api::path::IMAGE_CONFIG`]), combined as the kubelet combines them: the
//! command is the pod's `command`, else the image's entrypoint; its arguments the pod's
//! `args`, else (when the pod sets no command) the image's cmd; the directory the pod's
//! `workingDir`, else the image's.

use k8s_openapi::api::core::v1::{Container, Pod};
use kdbg_api::{ImageConfig, ImageConfigRequest};

use crate::client::{AgentClient, Refused};
use crate::pod::PodTarget;

/// Container `name` of `pod`'s spec.
fn container<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    pod.spec
        .iter()
        .flat_map(|s| &s.containers)
        .find(|c| c.name == name)
}

/// Words as a shell reads them back: quoted only when they need it.
pub(super) fn quoted(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            if !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
            {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What container `container` of `original` ran, with what the agent said of its image:
/// `image` is its config, or why it could not be read (`None`: not asked, which is right
/// only when the pod sets a command).
pub fn original_command_with(
    original: &Pod,
    container: &str,
    image: Option<Result<&ImageConfig, &str>>,
) -> String {
    let Some(c) = self::container(original, container) else {
        return String::new();
    };
    let command = match (&c.command, &c.args, image) {
        (Some(command), args, _) => {
            let mut all = command.clone();
            all.extend(args.iter().flatten().cloned());
            quoted(&all)
        }
        (None, args, Some(Ok(image))) => from_image(args.as_deref(), image),
        (None, Some(args), why) => format!(
            "the image's entrypoint with arguments {}{}",
            quoted(args),
            unread(why)
        ),
        (None, None, Some(Err(why))) => format!(
            "the image's entrypoint (the pod does not set a command; the agent could not read the image's config: {why})"
        ),
        (None, None, _) => "the image's entrypoint (the pod does not set a command)".into(),
    };
    let image_dir = match image {
        Some(Ok(image)) => image.working_dir.as_deref(),
        _ => None,
    };
    let dir = c
        .working_dir
        .as_deref()
        .filter(|d| !d.is_empty())
        .or(image_dir)
        .map(|d| format!(", in {d}"))
        .unwrap_or_default();
    format!("{command}{dir}")
}

/// ` (the agent could not read it: WHY)`, or nothing when it was not asked.
fn unread(why: Option<Result<&ImageConfig, &str>>) -> String {
    match why {
        Some(Err(why)) => format!(" (the agent could not read the image's config: {why})"),
        _ => String::new(),
    }
}

/// The command line of a container whose pod sets no command, from its image's config.
fn from_image(args: Option<&[String]>, image: &ImageConfig) -> String {
    let entrypoint = image.entrypoint.clone().unwrap_or_default();
    let (rest, source) = match (args, &image.cmd) {
        (Some(args), _) => (args.to_vec(), "the pod's args".to_owned()),
        (None, Some(cmd)) => (cmd.clone(), format!("cmd {}", quoted(cmd))),
        (None, None) => (Vec::new(), String::new()),
    };
    let mut all = entrypoint.clone();
    all.extend(rest.iter().cloned());
    let name = &image.image;
    if all.is_empty() {
        return format!(
            "nothing: image {name} sets neither entrypoint nor cmd, and the pod sets no command"
        );
    }
    let origin = match (entrypoint.is_empty(), source.is_empty()) {
        (false, false) => format!(
            "the image's entrypoint {} and {source}",
            quoted(&entrypoint)
        ),
        (false, true) => format!("the image's entrypoint {}", quoted(&entrypoint)),
        // No entrypoint: the pod's args or the image's cmd are the command.
        (true, _) => format!("{source}; the image has no entrypoint"),
    };
    format!("{} ({origin}; image {name})", quoted(&all))
}

/// The line `--fork` says on stderr of what the original container ran.
pub fn original_line(
    original: &Pod,
    container: &str,
    image: Option<Result<&ImageConfig, &str>>,
) -> String {
    format!(
        "The original container {container} ran: {}. Its files are at /target in the debug container (the hold's root, /proc/1/root); start it by hand there, or in them with --chroot.",
        original_command_with(original, container, image)
    )
}

/// Says on stderr what container `container` of `original` ran ([`original_said`]).
pub async fn say_original(agent: &AgentClient, original: &Pod, container: &str, copy: &PodTarget) {
    eprintln!("{}", original_said(agent, original, container, copy).await);
}

/// The line that says what container `container` of `original` ran, `copy` being its copy's
/// container: when the pod sets no command, `agent` (the copy's node's) is asked what the
/// copy's image says; if it cannot say, the line says why.
pub async fn original_said(
    agent: &AgentClient,
    original: &Pod,
    container: &str,
    copy: &PodTarget,
) -> String {
    let needs_image = self::container(original, container).is_some_and(|c| c.command.is_none());
    if !needs_image {
        return original_line(original, container, None);
    }
    let request = ImageConfigRequest {
        target: copy.target.clone(),
        pod_namespace: Some(copy.namespace.clone()),
        pod_name: Some(copy.pod.clone()),
    };
    match agent.image_config(&request).await {
        Ok(image) => original_line(original, container, Some(Ok(&image))),
        Err(e) => {
            let why = if Refused::no_endpoint(&e) {
                format!(
                    "the kubectl-debug agent on node {} is older than reading image configs; upgrade it",
                    copy.node
                )
            } else {
                kdbg_api::error_chain(e.as_ref())
            };
            original_line(original, container, Some(Err(&why)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(containers: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"containers": containers}
        }))
        .unwrap()
    }

    fn image(entrypoint: &[&str], cmd: &[&str], dir: &str) -> ImageConfig {
        let words = |w: &[&str]| Some(w.iter().map(|s| (*s).to_owned()).collect());
        ImageConfig::new(
            "web:1",
            words(entrypoint),
            words(cmd),
            Some(dir.into()),
            None,
        )
    }

    #[test]
    fn the_image_says_what_the_pod_does_not() {
        let bare = pod(serde_json::json!([{"name": "app", "image": "web:1"}]));
        let config = image(&["/app", "--serve"], &["--port", "80"], "/srv");
        assert_eq!(
            original_command_with(&bare, "app", Some(Ok(&config))),
            "/app --serve --port 80 (the image's entrypoint /app --serve and cmd --port 80; image web:1), in /srv"
        );
        // The pod's args replace the image's cmd; its workingDir the image's.
        let args = pod(
            serde_json::json!([{"name": "app", "image": "web:1", "args": ["--debug", "a b"], "workingDir": "/data"}]),
        );
        assert_eq!(
            original_command_with(&args, "app", Some(Ok(&config))),
            "/app --serve --debug 'a b' (the image's entrypoint /app --serve and the pod's args; image web:1), in /data"
        );
        // No entrypoint: the cmd is the command.
        let shell = image(&[], &["/bin/sh"], "");
        assert_eq!(
            original_command_with(&bare, "app", Some(Ok(&shell))),
            "/bin/sh (cmd /bin/sh; the image has no entrypoint; image web:1)"
        );
        let only = image(&["/app"], &[], "");
        assert_eq!(
            original_command_with(&bare, "app", Some(Ok(&only))),
            "/app (the image's entrypoint /app; image web:1)"
        );
        let empty = image(&[], &[], "");
        assert!(
            original_command_with(&bare, "app", Some(Ok(&empty)))
                .starts_with("nothing: image web:1 sets neither entrypoint nor cmd")
        );
        // The pod's command wins over the image, which is then not needed.
        let set = pod(
            serde_json::json!([{"name": "app", "image": "web:1", "command": ["/server"], "args": ["-v"]}]),
        );
        assert_eq!(
            original_command_with(&set, "app", Some(Ok(&config))),
            "/server -v, in /srv"
        );
        assert_eq!(original_command_with(&set, "app", None), "/server -v");
    }

    #[test]
    fn without_the_image_config_it_says_why() {
        let bare = pod(serde_json::json!([{"name": "app", "image": "web:1"}]));
        assert_eq!(
            original_command_with(&bare, "app", None),
            "the image's entrypoint (the pod does not set a command)"
        );
        assert_eq!(
            original_command_with(&bare, "app", Some(Err("the agent is older"))),
            "the image's entrypoint (the pod does not set a command; the agent could not read the image's config: the agent is older)"
        );
        let args = pod(serde_json::json!([{"name": "app", "image": "web:1", "args": ["x"]}]));
        assert_eq!(
            original_command_with(&args, "app", Some(Err("refused"))),
            "the image's entrypoint with arguments x (the agent could not read the image's config: refused)"
        );
        let line = original_line(&bare, "app", None);
        assert!(
            line.starts_with("The original container app ran: the image's entrypoint"),
            "{line}"
        );
    }

    /// An agent that answers every request with `status` and `body`, once per connection;
    /// what it was asked goes to the returned list.
    async fn canned(
        status: &'static str,
        body: String,
    ) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = asked.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&request)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                seen.lock().unwrap().push(line);
                let answer = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            }
        });
        (address, asked)
    }

    fn client(address: String) -> AgentClient {
        AgentClient::new(crate::client::Transport::Tcp {
            address,
            node: Some("n1".into()),
        })
    }

    fn copy() -> PodTarget {
        PodTarget {
            namespace: "shop".into(),
            pod: "web-debug-ab12c".into(),
            container: "app".into(),
            target: "containerd://0f1e".parse().unwrap(),
            node: "n1".into(),
            host_ip: "127.0.0.1".into(),
            image_pull_secrets: Vec::new(),
            service_account: None,
        }
    }

    #[tokio::test]
    async fn the_copys_agent_is_asked_only_when_the_pod_sets_no_command() {
        let config = image(&["/app"], &["serve"], "/srv");
        let (address, asked) = canned("200 OK", serde_json::to_string(&config).unwrap()).await;
        let agent = client(address);
        let bare = pod(serde_json::json!([{"name": "app", "image": "web:1"}]));
        let said = original_said(&agent, &bare, "app", &copy()).await;
        assert_eq!(
            said,
            "The original container app ran: /app serve (the image's entrypoint /app and cmd serve; image web:1), in /srv. Its files are at /target in the debug container (the hold's root, /proc/1/root); start it by hand there, or in them with --chroot."
        );
        assert_eq!(
            *asked.lock().unwrap(),
            [
                "GET /api/v1/image-config?target=containerd%3A%2F%2F0f1e&podNamespace=shop&podName=web-debug-ab12c HTTP/1.1"
            ]
        );
        let set =
            pod(serde_json::json!([{"name": "app", "image": "web:1", "command": ["/server"]}]));
        let said = original_said(&agent, &set, "app", &copy()).await;
        assert!(said.contains("ran: /server."), "{said}");
        assert_eq!(asked.lock().unwrap().len(), 1, "not asked again");
    }

    #[tokio::test]
    async fn an_older_agent_or_a_refusal_leaves_the_pods_words_and_says_why() {
        let bare = pod(serde_json::json!([{"name": "app", "image": "web:1"}]));
        let older = kdbg_api::Status::http_error(
            404,
            "NotFound",
            "no endpoint GET /api/v1/image-config; the agent serves GET /healthz",
        );
        let (address, _) = canned("404 Not Found", serde_json::to_string(&older).unwrap()).await;
        let said = original_said(&client(address), &bare, "app", &copy()).await;
        assert!(
            said.contains("ran: the image's entrypoint (the pod does not set a command; the agent could not read the image's config: the kubectl-debug agent on node n1 is older than reading image configs; upgrade it)."),
            "{said}"
        );
        let forbidden = kdbg_api::Status::http_error(
            403,
            "Forbidden",
            "Forbidden: user \"bob\" may not create pods/exec of pod \"web-debug-ab12c\" in namespace \"shop\"",
        );
        let (address, _) =
            canned("403 Forbidden", serde_json::to_string(&forbidden).unwrap()).await;
        let said = original_said(&client(address), &bare, "app", &copy()).await;
        assert!(
            said.contains("could not read the image's config: Forbidden: user \"bob\" may not create pods/exec"),
            "{said}"
        );
    }
}
