//! A real OpenLDAP `slapd` for the directory's tests and benchmark: started on
//! loopback ports with a temporary `slapd.conf`, an mdb database and a schema
//! like Active Directory's (`proxyAddresses` case-insensitive and
//! multi-valued); ldap:// with StartTLS and ldaps:// with a self-signed
//! certificate. Self-contained: `benches/directory.rs` includes this file.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SUFFIX: &str = "dc=example,dc=test";
pub const ROOT_DN: &str = "cn=admin,dc=example,dc=test";
pub const ROOT_PASSWORD: &str = "root-secret";
/// The read-only service account mailmoat searches as.
pub const SERVICE_DN: &str = "cn=mailmoat,ou=services,dc=example,dc=test";
pub const SERVICE_PASSWORD: &str = "Service-Password-7f3a";

const SCHEMA: &str = "\
attributetype ( 1.3.6.1.4.1.99999.1.1 NAME 'proxyAddresses'
  EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 )
attributetype ( 1.3.6.1.4.1.99999.1.2 NAME 'sAMAccountName'
  EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
objectclass ( 1.3.6.1.4.1.99999.2.1 NAME 'adTestUser' SUP top AUXILIARY
  MAY ( proxyAddresses $ sAMAccountName $ mail ) )
";

/// A person with a primary address, an alias and a password.
fn person(
    cn: &str,
    ou: &str,
    account: &str,
    primary: &str,
    aliases: &[&str],
    password: &str,
) -> String {
    let mut ldif = format!(
        "dn: cn={cn},ou={ou},{SUFFIX}\nobjectClass: inetOrgPerson\nobjectClass: adTestUser\n\
         cn: {cn}\nsn: {cn}\nmail: {primary}\nsAMAccountName: {account}\n\
         proxyAddresses: SMTP:{primary}\nuserPassword: {password}\n"
    );
    for alias in aliases {
        ldif.push_str(&format!("proxyAddresses: smtp:{alias}\n"));
    }
    ldif + "\n"
}

fn directory_ldif() -> String {
    let mut ldif = format!(
        "dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n\n"
    );
    for ou in ["people", "branch", "services"] {
        ldif.push_str(&format!(
            "dn: ou={ou},{SUFFIX}\nobjectClass: organizationalUnit\nou: {ou}\n\n"
        ));
    }
    // Active Directory answers a search from the domain's root with
    // references to its application partitions beside the entries (and
    // alone when nothing matches).
    for partition in ["DomainDnsZones", "ForestDnsZones"] {
        ldif.push_str(&format!(
            "dn: ou={partition},{SUFFIX}\nobjectClass: referral\nobjectClass: extensibleObject\n\
             ou: {partition}\nref: ldap://127.0.0.1:9/ou={partition},{SUFFIX}\n\n"
        ));
    }
    ldif.push_str(&format!(
        "dn: {SERVICE_DN}\nobjectClass: person\ncn: mailmoat\nsn: mailmoat\nuserPassword: {SERVICE_PASSWORD}\n\n"
    ));
    ldif.push_str(&person(
        "Alice Smith",
        "people",
        "alice",
        "alice@example.test",
        &["a.smith@example.test"],
        "alice-directory-pw",
    ));
    ldif.push_str(&person(
        "Bob",
        "people",
        "bob",
        "bob@example.test",
        &[],
        "bob-pw",
    ));
    // A distribution list: an entry with an address, no password.
    ldif.push_str(&format!(
        "dn: cn=Sales,ou=people,{SUFFIX}\nobjectClass: groupOfNames\nobjectClass: adTestUser\n\
         cn: Sales\nmember: cn=Alice Smith,ou=people,{SUFFIX}\nmail: sales@example.test\n\
         proxyAddresses: SMTP:sales@example.test\n\n"
    ));
    // The second domain's people live under their own base; dave's entry is
    // outside it, so branch.test does not know him.
    ldif.push_str(&person(
        "Carol",
        "branch",
        "carol",
        "carol@branch.test",
        &[],
        "carol-pw",
    ));
    ldif.push_str(&person(
        "Dave",
        "people",
        "dave",
        "dave@branch.test",
        &[],
        "dave-pw",
    ));
    for n in 0..1000 {
        ldif.push_str(&person(
            &format!("User {n}"),
            "people",
            &format!("user{n}"),
            &format!("user{n}@example.test"),
            &[],
            "pw",
        ));
    }
    ldif
}

/// A slapd of the test's own: its folder, its port, its log of operations.
pub struct Slapd {
    dir: tempfile::TempDir,
    pub port: u16,
    /// ldaps:// (TLS from the start) with the certificate of `ca()`.
    pub tls_port: u16,
    child: Option<Child>,
    /// While slapd is stopped, its port is kept bound (not listening): a
    /// client is refused, and no other process can take the port before the
    /// restart.
    held: Option<tokio::net::TcpSocket>,
}

impl Slapd {
    pub async fn start() -> Slapd {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path();
        std::fs::create_dir(path.join("db")).unwrap();
        std::fs::write(path.join("adtest.schema"), SCHEMA).unwrap();
        let (certificate, key) = certificate();
        std::fs::write(path.join("cert.pem"), certificate).unwrap();
        std::fs::write(path.join("key.pem"), key).unwrap();
        std::fs::write(
            path.join("slapd.conf"),
            format!(
                "include /etc/ldap/schema/core.schema\n\
                 include /etc/ldap/schema/cosine.schema\n\
                 include /etc/ldap/schema/inetorgperson.schema\n\
                 include {schema}\n\
                 TLSCertificateFile {dir}/cert.pem\nTLSCertificateKeyFile {dir}/key.pem\n\
                 modulepath /usr/lib/ldap\nmoduleload back_mdb\n\
                 pidfile {pid}\n\
                 database mdb\nsuffix \"{SUFFIX}\"\nrootdn \"{ROOT_DN}\"\nrootpw {ROOT_PASSWORD}\n\
                 directory {db}\nmaxsize 104857600\nindex mail,proxyAddresses,sAMAccountName eq\n",
                schema = path.join("adtest.schema").display(),
                dir = path.display(),
                pid = path.join("slapd.pid").display(),
                db = path.join("db").display(),
            ),
        )
        .unwrap();
        std::fs::write(path.join("data.ldif"), directory_ldif()).unwrap();
        let added = Command::new("/usr/sbin/slapadd")
            .arg("-q")
            .arg("-f")
            .arg(path.join("slapd.conf"))
            .arg("-l")
            .arg(path.join("data.ldif"))
            .output()
            .unwrap();
        assert!(
            added.status.success(),
            "slapadd: {}",
            String::from_utf8_lossy(&added.stderr)
        );
        let port = free_port();
        let tls_port = free_port();
        let mut slapd = Slapd {
            dir,
            port,
            tls_port,
            child: None,
            held: None,
        };
        slapd.run().await;
        slapd
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("slapd.log")
    }

    /// Starts slapd in the foreground (`-d stats`: every operation logged) and
    /// waits until it answers a search.
    async fn run(&mut self) {
        self.held = None;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = Command::new("/usr/sbin/slapd")
            .arg("-f")
            .arg(self.dir.path().join("slapd.conf"))
            .arg("-h")
            .arg(format!(
                "{}/ ldaps://127.0.0.1:{}/",
                self.url(),
                self.tls_port
            ))
            .args(["-d", "stats"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start slapd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        let started_before = self.log().matches("slapd starting").count();
        // Ours answers: it said it started (its port bound), it still runs,
        // and a search gets an answer.
        while self.log().matches("slapd starting").count() == started_before
            || !self.running()
            || !self.answers()
        {
            assert!(
                Instant::now() < deadline,
                "slapd did not start: {}",
                self.log()
            );
            // A pause between polls for the cause (slapd answering a search);
            // this file is shared with the benchmark, so no test support here.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Our slapd is still running (one that could not bind its port has
    /// exited, whoever else answers on it).
    fn running(&mut self) -> bool {
        let exited = self.child.as_mut().map(|c| c.try_wait());
        assert!(
            matches!(exited, Some(Ok(None))),
            "slapd exited: {}",
            self.log()
        );
        true
    }

    fn answers(&self) -> bool {
        Command::new("ldapsearch")
            .args(["-x", "-H", &self.url(), "-b", SUFFIX, "-s", "base", "1.1"])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// The certificate slapd presents (self-signed: its own CA).
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Searches slapd has been asked whose filter holds `needle`.
    pub fn searches(&self, needle: &str) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains(" SRCH base=") && l.contains(needle))
            .count()
    }

    /// Stops slapd and waits until it has gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "TERM");
            let _ = child.wait();
            self.held = hold(self.port);
        }
    }

    pub async fn restart(&mut self) {
        self.stop();
        self.run().await;
    }

    /// Freezes slapd: connections stay open, nothing is answered.
    /// Waits until every thread has stopped (or runs again): a stop signal
    /// reaches the threads of a busy process a little later.
    pub async fn freeze(&self, frozen: bool) {
        let pid = self.pid();
        signal(pid, if frozen { "STOP" } else { "CONT" });
        let deadline = Instant::now() + Duration::from_secs(20);
        while all_threads_stopped(pid) != frozen {
            assert!(
                Instant::now() < deadline,
                "slapd's threads did not follow the signal"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub fn delete(&self, dn: &str) {
        let output = Command::new("ldapdelete")
            .args([
                "-x",
                "-H",
                &self.url(),
                "-D",
                ROOT_DN,
                "-w",
                ROOT_PASSWORD,
                dn,
            ])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The `[ldap]` table of a proxy using this directory.
    pub fn config(&self, extra: &str) -> String {
        format!(
            "[ldap]\nurl = \"{}\"\nbind_dn = \"{SERVICE_DN}\"\nbind_password = \"{SERVICE_PASSWORD}\"\n\
             base = \"{SUFFIX}\"\ntimeout = \"1s\"\npool_size = 2\n{extra}\n",
            self.url()
        )
    }
}

fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
}

impl Drop for Slapd {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            signal(child.id(), "CONT");
        }
        self.stop();
    }
}

/// Whether every thread of a process is stopped (state T in /proc).
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
            // "TID (comm) STATE …": the state follows the last ')'.
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
        })
    })
}

/// Binds a port without listening on it: connections to it are refused.
fn hold(port: u16) -> Option<tokio::net::TcpSocket> {
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket.set_reuseaddr(true).ok()?;
    socket.bind(([127, 0, 0, 1], port).into()).ok()?;
    Some(socket)
}

/// A loopback port nothing listens on.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A self-signed certificate for 127.0.0.1: (certificate PEM, key PEM).
fn certificate() -> (String, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    (cert.cert.pem(), cert.signing_key.serialize_pem())
}
