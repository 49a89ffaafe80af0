//! One mail transaction as the pipeline knows it, from MAIL to the end of DATA:
//! plain facts that the MAIL stage begins, the RCPT stage extends and the DATA
//! stage and `finish` consume. The session holds one and speaks SMTP; a trial
//! (`test-rules`) and a release from the archive make one the same way.
//!
//! Also here: the message a transaction carries once its data is read, and the
//! one way a [`Peer`] is made — for a connection, a trial or a release.

use std::net::IpAddr;

use super::{Pipeline, ShadowLog};
use crate::address::Path;
use crate::policy::relay;
use crate::sender_auth::SpfCheck;
use crate::verdict::Peer;

/// What MAIL began and RCPT added to.
pub struct Transaction {
    pub sender: Path,
    /// The sender's SPF check, made at MAIL (for the rules, DMARC and an ARC seal).
    pub spf: Option<SpfCheck>,
    /// Accepted recipients, as they are forwarded.
    pub recipients: Vec<String>,
    /// Archive items this message asks to release (`release+ID.SIG@hostname`).
    pub releases: Vec<String>,
    /// BODY=8BITMIME and SMTPUTF8 were given with MAIL.
    pub eight_bit: bool,
    pub smtputf8: bool,
    /// The shadow rules that matched on the way, logged when it ends.
    pub shadow: ShadowLog,
    /// Room on the spool held for the message: the declared size, then what has
    /// been read of it.
    pub room: crate::memory::Reservation,
}

/// What MAIL FROM declared beside the sender: the parameters mailmoat
/// announces (RFC 1870, 6152, 6531).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MailParams {
    /// The size the client declared (SIZE=), if it did.
    pub size: Option<usize>,
    /// BODY=8BITMIME.
    pub eight_bit: bool,
    pub smtputf8: bool,
}

impl Transaction {
    pub fn new(sender: Path, eight_bit: bool, smtputf8: bool) -> Transaction {
        Transaction {
            sender,
            spf: None,
            recipients: Vec::new(),
            releases: Vec::new(),
            eight_bit,
            smtputf8,
            shadow: ShadowLog::default(),
            room: crate::memory::Reservation::default(),
        }
    }

    /// The sender as it is forwarded; empty for the null sender.
    pub fn sender_text(&self) -> String {
        self.sender.to_string()
    }
}

/// A message whose data has been read: mailmoat's trace header, then the
/// message as the client sent it.
pub struct Message {
    /// The queue id the client is told.
    pub id: String,
    pub bytes: Vec<u8>,
    /// Octets of the trace header at the start of `bytes`.
    pub trace_len: usize,
    /// The room on the spool held for it while it was received; given back
    /// the moment the queue counts it as written.
    pub room: crate::memory::Reservation,
}

impl Message {
    /// The message as the client sent it, without our trace header.
    pub fn original(&self) -> &[u8] {
        &self.bytes[self.trace_len..]
    }

    pub fn trace(&self) -> &[u8] {
        &self.bytes[..self.trace_len]
    }
}

impl Pipeline {
    /// What the checks know of a client: its confirmed reverse name, whether it
    /// is trusted, allow-listed, may relay. `login`: the account it logged in
    /// with, if any.
    pub async fn peer(
        &self,
        ip: IpAddr,
        local_ip: IpAddr,
        tls: bool,
        login: Option<String>,
    ) -> Peer {
        let ip = relay::canonical(ip);
        Peer {
            ip,
            local_ip,
            name: self.reputation.client_name(ip).await,
            helo: None,
            trusted: self.relay_networks.may_relay(ip, false),
            allowed: self.reputation.allowed(ip),
            may_relay: self.relay_networks.may_relay(ip, login.is_some()),
            login,
            login_addresses: Vec::new(),
            tls,
        }
    }

    /// The client logged in: it may relay unless its network never may, and
    /// send as the account's name and addresses.
    pub fn logged_in(&self, peer: &mut Peer, account: crate::policy::auth::Account) {
        peer.may_relay = self.relay_networks.may_relay(peer.ip, true);
        peer.login = Some(account.name);
        peer.login_addresses = account.addresses;
    }
}
