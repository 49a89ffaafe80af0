//! 7z, with sevenz-rust2 (pure Rust; LZMA, LZMA2, PPMd, bzip2, deflate and the
//! branch filters). Solid archives decompress from the start of each block, so
//! the whole archive is decompressed once, within the budget, when it is opened;
//! a dictionary or model larger than the engine allows is refused before any of
//! it is allocated. Encrypted archives (AES, without the key) are unseen.

use std::borrow::Cow;
use std::io::{Cursor, Read};

use super::{Budget, Container, Entry, Fields};

pub struct SevenZip {
    entries: Vec<Entry>,
    contents: Vec<Result<Vec<u8>, String>>,
    unseen: Vec<String>,
    ambiguities: Vec<String>,
}

impl SevenZip {
    pub fn read(bytes: &[u8], budget: &mut Budget) -> Result<SevenZip, String> {
        let mut archive = SevenZip {
            entries: Vec::new(),
            contents: Vec::new(),
            unseen: Vec::new(),
            ambiguities: Vec::new(),
        };
        // The end: the start header's next-header offset and size, after the
        // 32-byte signature header.
        if let (Some(offset), Some(size)) = (bytes.le64(12), bytes.le64(20)) {
            let end = 32u64.saturating_add(offset).saturating_add(size);
            if (end as usize) < bytes.len() && bytes[end as usize..].iter().any(|&b| b != 0) {
                archive
                    .ambiguities
                    .push("data after the end of the archive".into());
            }
        }
        let memory_kb = super::DECODER_MEMORY / 1024;
        let mut reader = match sevenz_rust2::ArchiveReader::new_with_memory_limit(
            Cursor::new(bytes),
            sevenz_rust2::Password::empty(),
            memory_kb,
        ) {
            Ok(reader) => reader,
            Err(e) => return Err(describe(&e)),
        };
        reader.set_thread_count(1);
        for entry in &reader.archive().files {
            if entry.is_directory || entry.is_anti_item {
                continue;
            }
            let mut listed = Entry::named(entry.name.clone());
            listed.size = Some(entry.size);
            archive.entries.push(listed);
        }
        // Decompressed once, in order, within the budget.
        let spent = budget.spent();
        let mut contents: Vec<Result<Vec<u8>, String>> = Vec::new();
        let result = reader.for_each_entries(|entry, data| {
            if entry.is_directory || entry.is_anti_item {
                return Ok(true);
            }
            let mut out = Vec::new();
            data.take(budget.left() as u64 + 1).read_to_end(&mut out)?;
            if budget.take(out.len()).is_err() {
                contents.push(Err(spent.clone()));
                return Ok(false);
            }
            contents.push(Ok(out));
            Ok(true)
        });
        if let Err(e) = result {
            let why = describe(&e);
            // What was read before the failure is judged; the rest is unseen. A
            // checksum is verified at an entry's end: that entry is damaged.
            let within = contents.len() <= archive.entries.len();
            if let Some(last) = contents.last_mut()
                && last.is_ok()
                && within
                && matches!(e, sevenz_rust2::Error::ChecksumVerificationFailed)
            {
                *last = Err(why.clone());
            } else if contents.len() < archive.entries.len() {
                contents.push(Err(why));
            }
        }
        while contents.len() < archive.entries.len() {
            contents.push(Err("not reached: an earlier entry could not be read".into()));
        }
        archive.contents = contents;
        Ok(archive)
    }
}

impl<'a> Container<'a> for SevenZip {
    fn entries(&self) -> &[Entry] {
        &self.entries
    }

    fn open(&mut self, index: usize, _: &mut Budget) -> Result<Cow<'a, [u8]>, String> {
        match std::mem::replace(&mut self.contents[index], Err("opened twice".into())) {
            Ok(bytes) => Ok(Cow::Owned(bytes)),
            Err(why) => Err(why),
        }
    }

    fn unseen(&self) -> Vec<String> {
        self.unseen.clone()
    }

    fn ambiguities(&self) -> Vec<String> {
        self.ambiguities.clone()
    }
}

fn describe(e: &sevenz_rust2::Error) -> String {
    use sevenz_rust2::Error::*;
    match e {
        PasswordRequired | MaybeBadPassword(_) => "encrypted".into(),
        // Built without AES: an encrypted archive names its cipher as a method.
        UnsupportedCompressionMethod(method) if method.contains("AES") => "encrypted".into(),
        UnsupportedCompressionMethod(method) => {
            format!("compressed with {method}, which the engine does not read")
        }
        MaxMemLimited { actaul_kb, .. } => super::too_much_memory(format!("{actaul_kb} KiB")),
        ChecksumVerificationFailed => "damaged (its checksum does not match)".into(),
        other => format!("damaged ({other})"),
    }
}
