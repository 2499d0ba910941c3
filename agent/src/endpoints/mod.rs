//! What each of the agent's endpoints does, once [`crate::server`] has parsed the request
//! into a [`kdbg_api::Endpoint`], and [`guard`] has said the caller may:
//!
//! - [`debug`]: a debug session;
//! - [`pull`]: an image made present;
//! - [`containers`]: the node's debug containers, listed and removed;
//! - [`image_config`]: what a target's image says to run;
//! - [`views`]: recordings and live views.

mod containers;
mod debug;
pub mod guard;
mod image_config;
mod pull;
pub mod views;

pub use guard::RECORDINGS_SUBRESOURCE;
