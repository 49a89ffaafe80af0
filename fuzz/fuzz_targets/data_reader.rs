//! The DATA reader reads the same message however the bytes are cut into reads,
//! and ends only where the whole input says it ends.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mailmoat::config::BareLineEndings;
use mailmoat::smtp::data::{DataOutcome, DataReader};

fn read(input: &[u8], cuts: &[usize], mode: BareLineEndings) -> (Option<usize>, String) {
    let mut reader = DataReader::new(200, 4000, mode, b"Received: x\r\n".to_vec());
    let mut at = 0;
    let mut end = None;
    let mut pieces: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    pieces.sort_unstable();
    pieces.push(input.len());
    for cut in pieces {
        if cut < at {
            continue;
        }
        if let Some(used) = reader.feed(&input[at..cut]) {
            end = Some(at + used);
            break;
        }
        at = cut;
    }
    let outcome = match reader.finish() {
        DataOutcome::Message(m) => format!("message {m:?}"),
        DataOutcome::Refused(reply, v, _) => format!("refused {reply} {v:?}"),
    };
    (end, outcome)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let (cuts, input) = data.split_at(4);
    let cuts: Vec<usize> = cuts.iter().map(|&c| c as usize * 7).collect();
    for mode in [BareLineEndings::Reject, BareLineEndings::Normalize] {
        let whole = read(input, &[], mode);
        let pieces = read(input, &cuts, mode);
        assert_eq!(whole, pieces, "{mode:?}");
        if let Some(end) = whole.0 {
            assert!(input[..end].ends_with(b"\r\n.\r\n") || input[..end] == *b".\r\n");
        }
    }
});
