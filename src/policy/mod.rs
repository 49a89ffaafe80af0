//! Envelope-time checks: who may relay, and which recipients exist.

pub mod auth;
pub mod greylist;
pub mod lists;
pub mod mailbomb;
pub mod recipients;
pub mod relay;
pub mod reputation;
