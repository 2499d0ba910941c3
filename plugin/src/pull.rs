//! Image pull progress: the plugin asks the agent to make sure the debug image is present
//! before the session, and shows the progress on stderr: a bar redrawn in place on a terminal,
//! one line per step otherwise.

use std::io::{IsTerminal, Write};

use kdbg_api::{DebugRequest, PullPolicy, PullProgress, PullRequest};

use crate::client::AgentClient;

/// The pull a debug request needs first, if any (none with policy `Never`: the agent checks
/// the image is present when the session starts).
pub fn wanted(request: &DebugRequest) -> Option<PullRequest> {
    (request.pull_policy != PullPolicy::Never).then(|| PullRequest {
        target: request.target.clone(),
        image: request.image.clone(),
        policy: request.pull_policy,
        platform: request.platform.clone(),
        pod_namespace: request.pod_namespace.clone(),
        pod_name: request.pod_name.clone(),
        node: request.node.clone(),
        credential: None,
    })
}

/// Has the agent make sure the image is present, showing progress on stderr until it is.
/// A credential from the user's pull secrets that matches the image's registry goes with
/// the request (in its body), and the user is told which one.
pub async fn run(client: &AgentClient, request: &PullRequest) -> anyhow::Result<()> {
    let mut request = request.clone();
    if let (Some(secrets), Some(image)) = (client.pull_secrets(), &request.image) {
        request.credential = secrets.credential_for(image).await;
        if let Some(credential) = &request.credential {
            eprintln!("Pulling {image} with {}", credential.described());
        }
    }
    let mut shown = Display::new(std::io::stderr().is_terminal());
    let result = client.pull(&request, |line| shown.update(line)).await;
    shown.finish();
    result
}

/// What the user sees.
struct Display {
    terminal: bool,
    last: Option<(Option<String>, String)>,
    open_line: bool,
}

impl Display {
    fn new(terminal: bool) -> Display {
        Display {
            terminal,
            last: None,
            open_line: false,
        }
    }

    fn update(&mut self, line: &PullProgress) {
        let status = line.status.clone();
        let prefix = line
            .id
            .as_deref()
            .map(|id| format!("{id}: "))
            .unwrap_or_default();
        let key = (line.id.clone(), status.clone());
        let mut err = std::io::stderr().lock();
        if self.terminal {
            let bar = match (line.current, line.total) {
                (Some(current), Some(total)) if total > 0 => {
                    let filled = (current.min(total) * 30 / total) as usize;
                    format!(
                        " [{}{}] {:.1}/{:.1} MB",
                        "=".repeat(filled),
                        " ".repeat(30 - filled),
                        current as f64 / 1e6,
                        total as f64 / 1e6
                    )
                }
                _ => String::new(),
            };
            let same_line =
                self.open_line && self.last.as_ref().is_some_and(|(id, _)| *id == line.id);
            if same_line {
                let _ = write!(err, "\r\x1b[2K");
            } else if self.open_line {
                let _ = writeln!(err);
            }
            let _ = write!(err, "{prefix}{status}{bar}");
            let _ = err.flush();
            self.open_line = true;
        } else if self.last.as_ref() != Some(&key) {
            let _ = writeln!(err, "{prefix}{status}");
        }
        self.last = Some(key);
    }

    fn finish(&mut self) {
        if self.open_line {
            eprintln!();
            self.open_line = false;
        }
    }
}
