//! Envelope-time checks: who may relay, and which recipients exist.

pub mod auth;
pub mod checks;
pub mod greylist;
pub mod limits;
pub mod recipients;
pub mod relay;
