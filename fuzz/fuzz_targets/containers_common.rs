//! What every container target does: open the bytes as the given kind, list the
//! entries, open each within a budget, ask what was unseen or ambiguous. Any
//! input must end without a panic, in bounded time and memory.
use mailmoat::containers::{self, Budget};
use mailmoat::filetype::FileType;

pub fn exercise(kind: FileType, data: &[u8]) {
    let mut budget = Budget::new(8 << 20);
    let Ok(mut container) = containers::open(kind, data, Some("file.tar.gz"), &mut budget) else {
        return;
    };
    let count = container.entries().len().min(256);
    for index in 0..count {
        if let Ok(bytes) = container.open(index, &mut budget) {
            let _ = mailmoat::filetype::identify(&bytes);
        }
    }
    let _ = container.unseen();
    let _ = container.ambiguities();
    let _ = container.holds_macros();
}
