//! Values the administrator writes that need checking beyond their TOML type.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A domain name as the administrator wrote it, checked and lower-cased.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DomainName(pub String);

impl<'de> Deserialize<'de> for DomainName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match crate::address::Mailbox::parse(&format!("x@{text}")) {
            Ok(m) if m.domain_name().is_some() => {
                Ok(DomainName(m.domain_name().unwrap_or_default().to_string()))
            }
            _ => Err(serde::de::Error::custom(format!(
                "'{text}' is not a domain name; write one such as example.com"
            ))),
        }
    }
}

impl Serialize for DomainName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// A client network: CIDR, or a single address meaning just that host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network(pub IpNet);

impl Network {
    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.0.contains(ip)
    }
}

impl<'de> Deserialize<'de> for Network {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if let Ok(net) = text.parse::<IpNet>() {
            return Ok(Network(net));
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(Network(IpNet::from(ip)));
        }
        Err(serde::de::Error::custom(format!(
            "'{text}' is not a network; write an address or a CIDR network such as 10.0.0.0/8"
        )))
    }
}

impl Serialize for Network {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}
