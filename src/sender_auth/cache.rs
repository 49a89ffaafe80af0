//! DNS answers for SPF, DKIM, DMARC and ARC, kept as long as their TTL says
//! (mail-auth gives each answer's expiry), so a busy sender's records are asked
//! for once, not per message.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;
use std::time::Instant;

use mail_auth::{MX, RecordSet, ResolverCache, Txt};

/// Entries kept per record type; past it the oldest half is dropped, so a flood
/// of distinct domains costs bounded memory.
const MAX_ENTRIES: usize = 50_000;

pub struct TtlCache<K, V> {
    entries: Mutex<HashMap<K, (V, Instant)>>,
}

impl<K, V> Default for TtlCache<K, V> {
    fn default() -> Self {
        TtlCache {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq, V: Clone> ResolverCache<K, V> for TtlCache<K, V> {
    fn get<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries.get(name) {
            Some((value, until)) if *until > Instant::now() => Some(value.clone()),
            Some(_) => {
                entries.remove(name);
                None
            }
            None => None,
        }
    }

    fn remove<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.remove(name).map(|(value, _)| value)
    }

    fn insert(&self, key: K, value: V, valid_until: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_ENTRIES {
            let now = Instant::now();
            entries.retain(|_, (_, until)| *until > now);
            if entries.len() >= MAX_ENTRIES {
                let mut expiries: Vec<Instant> =
                    entries.values().map(|(_, until)| *until).collect();
                expiries.sort_unstable();
                let cut = expiries[expiries.len() / 2];
                entries.retain(|_, (_, until)| *until > cut);
            }
        }
        entries.insert(key, (value, valid_until));
    }
}

/// One cache per kind of record mail-auth looks up.
#[derive(Default)]
pub struct Caches {
    pub txt: TtlCache<Box<str>, Txt>,
    pub mx: TtlCache<Box<str>, RecordSet<MX>>,
    pub ptr: TtlCache<IpAddr, RecordSet<Box<str>>>,
    pub ipv4: TtlCache<Box<str>, RecordSet<Ipv4Addr>>,
    pub ipv6: TtlCache<Box<str>, RecordSet<Ipv6Addr>>,
}

/// mail-auth's parameters with our caches.
pub type Cached<'a, P> = mail_auth::Parameters<
    'a,
    P,
    TtlCache<Box<str>, Txt>,
    TtlCache<Box<str>, RecordSet<MX>>,
    TtlCache<Box<str>, RecordSet<Ipv4Addr>>,
    TtlCache<Box<str>, RecordSet<Ipv6Addr>>,
    TtlCache<IpAddr, RecordSet<Box<str>>>,
>;

impl Caches {
    /// `params` with every cache attached.
    pub fn with<P>(&self, params: P) -> Cached<'_, P> {
        mail_auth::Parameters::new(params)
            .with_txt_cache(&self.txt)
            .with_mx_cache(&self.mx)
            .with_ptr_cache(&self.ptr)
            .with_ipv4_cache(&self.ipv4)
            .with_ipv6_cache(&self.ipv6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn answers_expire_with_their_ttl_and_the_cache_stays_bounded() {
        let cache: TtlCache<Box<str>, u32> = TtlCache::default();
        let now = Instant::now();
        cache.insert("live".into(), 1, now + Duration::from_secs(60));
        cache.insert("dead".into(), 2, now);
        assert_eq!(cache.get("live"), Some(1));
        assert_eq!(cache.get("dead"), None);
        for n in 0..(MAX_ENTRIES as u32 + 10) {
            cache.insert(
                n.to_string().into(),
                n,
                now + Duration::from_secs(u64::from(n) + 100),
            );
        }
        let kept = cache.entries.lock().unwrap().len();
        assert!(kept <= MAX_ENTRIES, "{kept}");
        assert_eq!(
            cache.get(&*(MAX_ENTRIES as u32 + 9).to_string()),
            Some(MAX_ENTRIES as u32 + 9)
        );
    }
}
