//! mailmoat: an SMTP filtering front proxy. It accepts mail for the hosted domains on
//! behalf of a backend server, refuses what it must during the dialogue, keeps what it
//! accepts in a durable spool and forwards it.
//!
//! The way of a message, module by module: [`smtp`] (listener, session, DATA reader)
//! → [`pipeline`] (the named, ordered checks of each stage: [`policy`] and [`rules`])
//! → [`queue`] (spool, schedule, delivery, bounces) or [`archive`] (refused mail).
//! [`verdict`] holds the vocabulary they all share: stage, outcome, decision.

pub mod address;
pub mod archive;
pub mod config;
pub mod containers;
pub mod control;
pub mod directory;
pub mod dns;
pub mod file_error;
pub mod filetype;
pub mod local_time;
pub mod logging;
pub mod manual;
pub mod memory;
pub mod metrics;
pub mod mime;
pub mod pipeline;
pub mod policy;
pub mod queue;
pub mod reload;
pub mod reply;
pub mod rules;
pub mod scanners;
pub mod sender_auth;
pub mod server;
pub mod services;
pub mod shared_state;
pub mod smtp;
pub mod smtp_client;
pub mod store;
pub mod verdict;
pub mod web;
