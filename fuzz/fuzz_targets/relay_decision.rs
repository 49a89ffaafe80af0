//! Never an open relay: for a client that may not relay, no recipient text is
//! ever accepted for a domain the proxy does not host, and what is accepted for a
//! hosted domain carries no routing.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mailmoat::config::Config;
use mailmoat::policy::relay::{Destination, decide};

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        Config::parse(
            "[relay]\nhosted_domains = [\"hosted.test\"]\nhosted_subdomains = true\n",
            std::path::Path::new("fuzz.toml"),
            std::path::Path::new("."),
        )
        .expect("a valid configuration")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    match decide(config(), raw, false) {
        Ok(Destination::Outbound(mailbox)) => panic!("relayed {raw:?} to {mailbox}"),
        Ok(Destination::Hosted(mailbox)) => {
            let domain = mailbox.domain_name().expect("a hosted name");
            assert!(config().is_hosted(domain), "{raw:?} -> {domain}");
            assert!(mailbox.routing().is_empty(), "{raw:?} routes");
        }
        Err(_) => {}
    }
});
