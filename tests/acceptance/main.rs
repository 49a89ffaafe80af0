//! Black-box acceptance tests: the proxy on loopback ports, real SMTP clients, and a
//! recording backend server on another port.

mod admin;
mod archive;
mod auth;
mod browser;
mod carriers;
mod cli;
mod containers;
mod defences;
mod delivery;
mod directory;
mod dns;
mod faults;
mod fixtures;
mod instances;
mod metrics;
mod mime;
mod next_hops;
mod parts;
mod pipeline;
mod protocol;
mod readme;
mod recipients;
mod relay;
mod rules;
mod scanning;
mod sender_auth;
mod shipped;
mod slapd;
mod support;
mod web;
