//! The server side of SMTP: accepting connections, reading commands and data, and
//! the session state machine.

pub mod admission;
pub mod command;
pub mod connection;
pub mod data;
pub mod listener;
pub mod proxy_protocol;
pub mod session;
pub mod tls;
