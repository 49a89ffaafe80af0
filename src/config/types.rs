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

/// A number of bytes: `1048576`, or text with a unit: `"256MB"`, `"512KB"`,
/// `"2GB"` (powers of 1024, as `du -h` shows them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(text: &str) -> Option<ByteSize> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: u64 = number.parse().ok()?;
        let factor: u64 = match unit.trim().to_ascii_uppercase().as_str() {
            "" | "B" => 1,
            "K" | "KB" | "KIB" => 1 << 10,
            "M" | "MB" | "MIB" => 1 << 20,
            "G" | "GB" | "GIB" => 1 << 30,
            _ => return None,
        };
        number.checked_mul(factor).map(ByteSize)
    }

    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum AsWritten {
            Number(u64),
            Text(String),
        }
        match AsWritten::deserialize(d)? {
            AsWritten::Number(n) => Ok(ByteSize(n)),
            AsWritten::Text(text) => ByteSize::parse(&text).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "'{text}' is not a size; write a number of bytes or one such as \"256MB\""
                ))
            }),
        }
    }
}

/// A size key kept as a plain number of bytes in the program, written either way
/// in the file (`10485760` or `"10MB"`): `#[serde(with = "super::types::bytes")]`.
pub mod bytes {
    use super::ByteSize;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn deserialize<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<T, D::Error> {
        let size = ByteSize::deserialize(d)?;
        T::try_from(size.bytes())
            .map_err(|_| serde::de::Error::custom(format!("{} bytes is too large", size.bytes())))
    }

    pub fn serialize<S: Serializer, T: Copy>(n: &T, s: S) -> Result<S::Ok, S::Error>
    where
        u64: TryFrom<T>,
    {
        ByteSize(u64::try_from(*n).unwrap_or(u64::MAX)).serialize(s)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let n = self.0;
        for (unit, factor) in [("GB", 1u64 << 30), ("MB", 1 << 20), ("KB", 1 << 10)] {
            if n >= factor && n.is_multiple_of(factor) {
                return s.serialize_str(&format!("{}{unit}", n / factor));
            }
        }
        s.serialize_u64(n)
    }
}

/// A value that must never be printed: `check`'s settings, logs and error messages
/// show `(hidden)` instead. Read it with `expose`, only where it is used.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

pub use crate::file_error::{HIDDEN, is_secret_key};

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(HIDDEN)
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(HIDDEN)
    }
}
