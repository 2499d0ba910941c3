//! `kubectl-debug watch POD SESSION|NAME`: another user's running terminal session, read-only,
//! from its current screen. The agent sends asciicast v3 lines (header, the screen, then live
//! output); nothing typed here is sent: the keyboard only stops watching.

use std::io::{IsTerminal, Write};

use anyhow::{Context as _, bail};
use futures_util::StreamExt;
use kdbg_api::view::ViewEvent;
use kdbg_api::{PodScope, WatchRequest};
use kdbg_relay::tungstenite::Message;
use tokio::io::AsyncReadExt;

use crate::cli::{Global, WatchArgs};
use crate::pod;
use crate::terminal;

/// Keys that stop watching: Ctrl-C, Ctrl-D, Ctrl-] and q.
const QUIT_KEYS: [u8; 4] = [0x03, 0x04, 0x1d, b'q'];

/// Runs `watch`.
pub async fn run(global: &Global, args: WatchArgs) -> anyhow::Result<()> {
    let pod = pod::pod_name(&args.pod);
    let cluster = crate::cluster::Cluster::connect(global).await?;
    let namespace = cluster.namespace.clone();
    let home = pod::node_of(cluster.client.clone(), &namespace, pod).await?;
    let agent = cluster.agent_on(&home.node, &home.ip, home.runtime).await?;
    let request = WatchRequest {
        session: args.session.clone(),
        scope: PodScope {
            namespace: Some(namespace),
            pod: Some(pod.to_owned()),
            node: None,
        },
    };
    let mut ws = agent.watch(&request).await?;
    let header = match ws.next().await {
        Some(Ok(Message::Text(line))) => line,
        Some(Ok(other)) => bail!("the agent sent {other:?} instead of the session's header"),
        Some(Err(e)) => return Err(e).context("reading the session's header"),
        None => bail!("the agent closed the live view before sending anything"),
    };
    let header = kdbg_recordings::Reader::new(header.as_bytes())
        .context("reading the session's header")?
        .header()
        .clone();
    let on_terminal = std::io::stdout().is_terminal() && terminal::stdin_is_terminal();
    let title = header.title.clone().unwrap_or_else(|| args.session.clone());
    eprintln!(
        "Watching {title} ({}x{}), read-only. {}",
        header.cols,
        header.rows,
        if on_terminal {
            "Press q or Ctrl-C to stop."
        } else {
            ""
        }
    );
    if on_terminal
        && let Some(size) = terminal::size()
        && (size.cols < header.cols || size.rows < header.rows)
    {
        eprintln!(
            "Warning: this terminal is {}x{}, smaller than the session's: the view may be garbled; enlarge it.",
            size.cols, size.rows
        );
    }
    let _raw = if on_terminal {
        Some(terminal::RawMode::enter().context("putting the terminal in raw mode")?)
    } else {
        None
    };
    let quit = async {
        if !on_terminal {
            return std::future::pending().await;
        }
        let mut stdin = tokio::io::stdin();
        let mut key = [0u8; 64];
        loop {
            match stdin.read(&mut key).await {
                Ok(0) | Err(_) => return,
                Ok(n) if key[..n].iter().any(|k| QUIT_KEYS.contains(k)) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::pin!(quit);
    // The first event resets the terminal and draws the session's screen.
    let mut out = std::io::stdout().lock();
    let mut ended = None;
    loop {
        let message = tokio::select! {
            () = &mut quit => break,
            message = ws.next() => message,
        };
        match message {
            Some(Ok(Message::Text(line))) => {
                match ViewEvent::parse(&line)
                    .map_err(|e| anyhow::anyhow!("reading the live view: {e}"))?
                {
                    ViewEvent::Output(data) => {
                        out.write_all(data.as_bytes())?;
                        out.flush()?;
                    }
                    ViewEvent::Exit(code) => {
                        ended = Some(format!("the session's command exited with code {code}"));
                    }
                    ViewEvent::Marker(why) => ended = Some(why),
                    ViewEvent::Other => {}
                }
            }
            Some(Ok(Message::Close(frame))) => {
                if ended.is_none() {
                    ended = frame.map(|f| f.reason.to_string());
                }
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e).context("the live view broke off"),
            None => break,
        }
    }
    drop(out);
    drop(_raw);
    let _ = ws.close(None).await;
    match ended {
        Some(why) => eprintln!("\r\nStopped watching: {why}."),
        None => eprintln!("\r\nStopped watching."),
    }
    Ok(())
}
