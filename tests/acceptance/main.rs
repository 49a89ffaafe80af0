//! Black-box acceptance tests: the proxy on loopback ports, real SMTP clients, and a
//! recording backend server on another port.

mod cli;
mod delivery;
mod protocol;
mod recipients;
mod relay;
mod support;
