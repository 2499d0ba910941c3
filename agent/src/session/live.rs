//! The containers this agent has sessions in, with those sessions: what `list` shows as
//! running, what shutdown removes, and where `watch` finds a session's screen.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use kdbg_api::PodScope;

use crate::watch::Screen;

/// The containers this agent has sessions in, with those sessions.
#[derive(Debug, Clone, Default)]
pub struct Live(Arc<Mutex<HashMap<String, LiveContainer>>>);

#[derive(Debug)]
struct LiveContainer {
    name: String,
    retain: bool,
    namespace: Option<String>,
    pod: Option<String>,
    /// Why the container gives the node itself, if it does.
    node_level: Option<String>,
    /// Session ID -> its screen, for terminal sessions.
    sessions: BTreeMap<String, Option<Screen>>,
}

/// A container's place in the table: what [`Live::add`] needs.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    /// The container's ID.
    pub id: &'a str,
    /// Its name.
    pub name: &'a str,
    /// Whether it is retained.
    pub retain: bool,
    /// The pod it debugs, if any.
    pub namespace: Option<&'a str>,
    /// See `namespace`.
    pub pod: Option<&'a str>,
    /// Why the container gives the node itself, if it does ([`kdbg_runtimes::label::NODE_LEVEL`]).
    pub node_level: Option<&'a str>,
}

/// A session found to watch.
#[derive(Debug)]
pub struct Watched {
    /// The session's ID.
    pub session: String,
    /// Its screen.
    pub screen: Screen,
    /// Why its container gives the node itself, if it does: watching it needs the
    /// node-level permission.
    pub node_level: Option<String>,
}

/// Why [`Live::screen`] found no screen to watch.
#[derive(Debug, PartialEq, Eq)]
pub enum NoScreen {
    /// No running session or debug container of that name (in the scope).
    NotFound,
    /// The session has no terminal.
    NoTerminal,
    /// The container has several sessions: one must be named.
    Ambiguous(Vec<String>),
}

impl Live {
    /// Adds session `session` to container `entry.id`.
    pub fn add(&self, entry: &Entry<'_>, session: &str) {
        self.lock()
            .entry(entry.id.to_owned())
            .or_insert_with(|| LiveContainer {
                name: entry.name.to_owned(),
                retain: entry.retain,
                namespace: entry.namespace.map(str::to_owned),
                pod: entry.pod.map(str::to_owned),
                node_level: entry.node_level.map(str::to_owned),
                sessions: BTreeMap::new(),
            })
            .sessions
            .insert(session.to_owned(), None);
    }

    /// Gives session `session` of container `id` its screen.
    pub fn set_screen(&self, id: &str, session: &str, screen: Screen) {
        if let Some(slot) = self
            .lock()
            .get_mut(id)
            .and_then(|c| c.sessions.get_mut(session))
        {
            *slot = Some(screen);
        }
    }

    /// Ends a session; returns how many sessions its container still has.
    pub fn remove(&self, id: &str, session: &str) -> usize {
        let mut live = self.lock();
        let Some(container) = live.get_mut(id) else {
            return 0;
        };
        container.sessions.remove(session);
        let left = container.sessions.len();
        if left == 0 {
            live.remove(id);
        }
        left
    }

    /// The sessions attached to container `id`.
    pub fn sessions(&self, id: &str) -> Vec<String> {
        self.lock()
            .get(id)
            .map(|c| c.sessions.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// How many watchers the sessions of container `id` have.
    pub fn watchers(&self, id: &str) -> usize {
        self.lock().get(id).map_or(0, |c| {
            c.sessions.values().flatten().map(Screen::watchers).sum()
        })
    }

    /// The containers with sessions that are not retained.
    pub fn unretained(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, c)| !c.retain)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The screen of running session `wanted`, given by its ID or by its debug container's
    /// name (which must then have one terminal session), within `scope`.
    pub fn screen(&self, wanted: &str, scope: &PodScope) -> Result<Watched, NoScreen> {
        let live = self.lock();
        let containers = live
            .values()
            .filter(|c| scope.contains(c.namespace.as_deref(), c.pod.as_deref()));
        for container in containers {
            let watched = |(session, screen): (String, Screen)| Watched {
                session,
                screen,
                node_level: container.node_level.clone(),
            };
            if let Some(screen) = container.sessions.get(wanted) {
                let screen = screen.clone().ok_or(NoScreen::NoTerminal)?;
                return Ok(watched((wanted.to_owned(), screen)));
            }
            if container.name == wanted {
                let mut screens = container
                    .sessions
                    .iter()
                    .filter_map(|(id, s)| Some((id.clone(), s.clone()?)));
                return match (screens.next(), screens.next()) {
                    (Some(only), None) => Ok(watched(only)),
                    (None, _) => Err(NoScreen::NoTerminal),
                    (Some(_), Some(_)) => Err(NoScreen::Ambiguous(
                        container.sessions.keys().cloned().collect(),
                    )),
                };
            }
        }
        Err(NoScreen::NotFound)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, LiveContainer>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
