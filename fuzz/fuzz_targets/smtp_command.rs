//! A command line, whatever it holds: parsed or answered, never a panic; and a
//! path the parser hands on parses as an address or is refused.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailmoat::smtp::command::{self, Command};

fuzz_target!(|data: &[u8]| {
    let mut line = data.to_vec();
    line.extend_from_slice(b"\r\n");
    match command::parse(&line) {
        Ok(Command::Mail { path, .. }) | Ok(Command::Rcpt { path }) => {
            let _ = mailmoat::address::Path::parse(&path);
        }
        Ok(_) => {}
        Err(malformed) => assert!(malformed.reply.code >= 500, "{:?}", malformed.reply),
    }
});
