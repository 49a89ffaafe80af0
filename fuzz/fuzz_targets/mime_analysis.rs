//! Any message is read and analysed without a panic, within the limits.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailmoat::mime::{Content, Limits, structure};

fuzz_target!(
    init: {
        // mailmoat catches mail-parser's panics (a message it cannot read is
        // unscannable): the default hook, not libfuzzer's aborting one, so a
        // caught panic is no crash. An uncaught one still is.
        let _ = std::panic::take_hook();
    },
    |data: &[u8]| {
    let reading = structure::read(data);
    let _ = reading.ambiguities.len();
    let content = Content::analyze(data, &Limits::default());
    for attachment in &content.attachments {
        let _ = attachment.extensions().count();
    }
    let _ = mailmoat::mime::lenient::embedded(data);
});
