//! The relay decision: is this recipient one the proxy receives mail for, and if not,
//! may this client send through it? Judged on where the mail would really go.

use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use crate::address::{Domain, Mailbox, Path};
use crate::config::{Config, Network, RelayConfig};
use crate::reply::Reply;
use crate::verdict::Decision;

/// Where an accepted recipient's mail goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A hosted domain: to the backend.
    Hosted(Mailbox),
    /// Any other domain, for a client allowed to relay.
    Outbound(Mailbox),
}

impl Destination {
    pub fn mailbox(&self) -> &Mailbox {
        match self {
            Destination::Hosted(m) | Destination::Outbound(m) => m,
        }
    }
}

/// Who may relay: `[relay] trusted_networks` and `never_relay_networks`, as a
/// reload leaves them (Postfix reloads `mynetworks` too). Sessions read them when
/// a client connects or logs in.
#[derive(Debug)]
pub struct RelayNetworks {
    current: RwLock<Arc<(Vec<Network>, Vec<Network>)>>,
}

impl RelayNetworks {
    pub fn new(relay: &RelayConfig) -> RelayNetworks {
        RelayNetworks {
            current: RwLock::new(Self::of(relay)),
        }
    }

    fn of(relay: &RelayConfig) -> Arc<(Vec<Network>, Vec<Network>)> {
        Arc::new((
            relay.trusted_networks.clone(),
            relay.never_relay_networks.clone(),
        ))
    }

    /// Takes the networks of a configuration read again; true when they changed.
    pub fn replace(&self, relay: &RelayConfig) -> bool {
        let new = Self::of(relay);
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        let changed = **current != *new;
        *current = new;
        changed
    }

    /// May this client send mail to domains the proxy does not host? The
    /// never-relay list beats everything; then trusted networks and
    /// authentication.
    pub fn may_relay(&self, ip: IpAddr, authenticated: bool) -> bool {
        let ip = canonical(ip);
        let networks = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let (trusted, never) = &*networks;
        if never.iter().any(|n| n.contains(&ip)) {
            return false;
        }
        authenticated || trusted.iter().any(|n| n.contains(&ip))
    }
}

/// An IPv4 client seen through an IPv6 socket (`::ffff:a.b.c.d`) is judged as IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

fn denied(address: &str, why: String) -> Decision {
    Decision::refuse(
        "relay",
        Reply::new(550, "5.7.1", format!("<{address}>: Relaying denied")),
        why,
    )
}

/// Decides where the recipient `raw` (the text between `<` and `>`) would go, or why
/// it is refused.
pub fn decide(config: &Config, raw: &str, may_relay: bool) -> Result<Destination, Decision> {
    let path = match Path::parse(raw) {
        Ok(path) => path,
        Err(e) if e.looks_routed && !may_relay => {
            return Err(denied(
                raw,
                format!("sender-specified routing: {}", e.reason),
            ));
        }
        Err(e) => {
            return Err(Decision::refuse(
                "syntax",
                Reply::new(
                    501,
                    "5.1.3",
                    format!("<{raw}>: Bad recipient address syntax"),
                ),
                e.reason,
            ));
        }
    };
    let mailbox = match path {
        Path::Null => {
            return Err(Decision::refuse(
                "syntax",
                Reply::new(501, "5.1.3", "<>: Bad recipient address syntax"),
                "null recipient",
            ));
        }
        // RFC 5321 4.5.1: <postmaster> without a domain must be accepted.
        Path::Postmaster => match config.relay.hosted_domains.first() {
            Some(domain) => {
                return Ok(Destination::Hosted(Mailbox {
                    local: "postmaster".into(),
                    local_unquoted: "postmaster".into(),
                    domain: Domain::Name(domain.0.clone()),
                    route: Vec::new(),
                }));
            }
            None => {
                return Err(Decision::refuse(
                    "recipients",
                    Reply::new(550, "5.1.1", "<postmaster>: no hosted domain"),
                    "relay.hosted_domains is empty",
                ));
            }
        },
        Path::Mailbox(mailbox) => mailbox,
    };
    let routing = mailbox.routing();
    if !routing.is_empty() && !may_relay {
        let kinds: Vec<_> = routing.iter().map(|r| r.describe()).collect();
        return Err(denied(
            raw,
            format!("sender-specified routing: {}", kinds.join(", ")),
        ));
    }
    let hosted = mailbox.domain_name().is_some_and(|d| config.is_hosted(d));
    match (hosted, may_relay) {
        (true, _) => Ok(Destination::Hosted(mailbox)),
        (false, true) => Ok(Destination::Outbound(mailbox)),
        (false, false) => {
            let why = match &mailbox.domain {
                Domain::Literal(_) => "address literal from a client that may not relay",
                Domain::Name(_) => "domain not hosted, client may not relay",
            };
            Err(denied(raw, why.into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::parse(
            "[relay]\nhosted_domains = [\"hosted.test\"]\ntrusted_networks = [\"10.0.0.0/8\"]\nnever_relay_networks = [\"10.9.0.0/16\"]\n",
            std::path::Path::new("t.toml"),
            std::path::Path::new("."),
        )
        .unwrap()
    }

    fn code(raw: &str, may_relay: bool) -> u16 {
        match decide(&config(), raw, may_relay) {
            Ok(_) => 250,
            Err(d) => d.reply.code,
        }
    }

    #[test]
    fn hosted_recipients_are_accepted_from_anyone() {
        assert_eq!(code("User@HOSTED.TEST.", false), 250);
        assert_eq!(code("postmaster", false), 250);
    }

    #[test]
    fn every_route_trick_is_denied_to_untrusted_clients() {
        for trick in [
            "user@ext.test",
            "user%ext.test@hosted.test",
            "\"user@ext.test\"@hosted.test",
            "\"user%ext.test\"@hosted.test",
            "@hosted.test:user@ext.test",
            "@ext.test:user@hosted.test",
            "@hosted.test,@ext.test:user@hosted.test",
            "user@ext.test@hosted.test",
            "ext.test!user@hosted.test",
            "user@[127.0.0.1]",
            "user@[IPv6:::1]",
            "user@ext.test.",
            "USER@EXT.TEST",
            "USER%EXT.TEST@HOSTED.TEST",
            "user@hosted.test.ext.test",
            "user@badhosted.test",
        ] {
            assert_eq!(code(trick, false), 550, "{trick}");
        }
    }

    #[test]
    fn a_reload_changes_who_may_relay_and_says_whether_it_did() {
        let config = config();
        let networks = RelayNetworks::new(&config.relay);
        let client: IpAddr = "10.1.2.3".parse().unwrap();
        assert!(networks.may_relay(client, false));
        assert!(!networks.replace(&config.relay), "the same networks");
        let mut narrower = config.relay.clone();
        narrower.trusted_networks = vec![Network("10.2.0.0/16".parse().unwrap())];
        assert!(networks.replace(&narrower));
        assert!(!networks.may_relay(client, false));
        assert!(networks.may_relay(client, true), "a login still relays");
        assert!(networks.may_relay("10.2.0.1".parse().unwrap(), false));
    }

    #[test]
    fn trusted_clients_may_relay_but_never_relay_beats_trusted() {
        let config = config();
        let networks = RelayNetworks::new(&config.relay);
        let may_relay = |ip: &str, login| networks.may_relay(ip.parse().unwrap(), login);
        assert!(may_relay("10.1.2.3", false));
        assert!(!may_relay("10.9.2.3", false));
        assert!(!may_relay("10.9.2.3", true));
        assert!(!may_relay("192.0.2.1", false));
        assert!(may_relay("::ffff:10.1.2.3", false));
        assert_eq!(code("user@ext.test", true), 250);
        assert!(matches!(
            decide(&config, "user@ext.test", true),
            Ok(Destination::Outbound(_))
        ));
    }

    #[test]
    fn bad_syntax_is_501_for_trusted_clients() {
        assert_eq!(code("user@ext.test@hosted.test", true), 501);
        assert_eq!(code("", false), 501);
    }
}
