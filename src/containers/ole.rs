//! OLE compound files (cfb): Office 97-2003 documents, Windows Installer
//! packages, Outlook `.msg` items. Every stream is an entry; what matters in them:
//! a VBA project (macros), a packaged file (`\x01Ole10Native`: an embedded object
//! carrying any file, with its name), an Outlook item's attachments (their data
//! stream named after the file name streams beside it), and encryption (an
//! encrypted Office document cannot be looked into).

use std::borrow::Cow;
use std::io::{Cursor, Read};

use super::{Budget, Container, Entry, Fields};

pub struct Ole {
    entries: Vec<Entry>,
    contents: Vec<Option<Vec<u8>>>,
    unseen: Vec<String>,
    macros: bool,
}

impl Ole {
    pub fn read(bytes: &[u8], budget: &mut Budget) -> Result<Ole, String> {
        let mut file =
            cfb::CompoundFile::open(Cursor::new(bytes)).map_err(|e| format!("damaged ({e})"))?;
        let mut ole = Ole {
            entries: Vec::new(),
            contents: Vec::new(),
            unseen: Vec::new(),
            macros: false,
        };
        let listed: Vec<(std::path::PathBuf, String, bool)> = file
            .walk()
            .map(|e| (e.path().to_path_buf(), e.name().to_string(), e.is_stream()))
            .collect();
        for (path, name, stream) in &listed {
            let upper = name.to_ascii_uppercase();
            if upper == "_VBA_PROJECT"
                || (upper == "DIR" && path.parent().is_some_and(|p| p.ends_with("VBA")))
            {
                ole.macros = true;
            }
            if name == "EncryptedPackage" {
                ole.unseen.push("an encrypted document".into());
            }
            if !stream {
                continue;
            }
            let data = {
                let mut reader = file
                    .open_stream(path)
                    .map_err(|e| format!("damaged ({e})"))?;
                let mut out = Vec::new();
                (&mut reader)
                    .take(budget.left() as u64 + 1)
                    .read_to_end(&mut out)
                    .map_err(|e| format!("damaged ({e})"))?;
                budget.take(out.len())?;
                out
            };
            if name == "\u{1}Ole10Native"
                && let Some((names, packaged)) = packaged_file(&data)
            {
                let mut entry = Entry::default();
                for packaged_name in names {
                    entry.also(packaged_name);
                }
                if entry.names.is_empty() {
                    entry.also("(packaged file)");
                }
                ole.entries.push(entry);
                ole.contents.push(Some(packaged.to_vec()));
                // The stream is only the wrapping of that file.
                continue;
            }
            let mut entry =
                Entry::named(path.to_string_lossy().trim_start_matches('/').to_string());
            // An Outlook attachment: its data stream takes the file's names.
            if upper.starts_with("__SUBSTG1.0_3701") {
                for property in ["3707001F", "3704001F", "3707001E", "3704001E"] {
                    let sibling = path.with_file_name(format!("__substg1.0_{property}"));
                    if let Ok(mut reader) = file.open_stream(&sibling) {
                        let mut raw = Vec::new();
                        let _ = (&mut reader).take(1024).read_to_end(&mut raw);
                        entry.also(if property.ends_with('F') {
                            super::utf16le(&raw)
                        } else {
                            super::legacy_text(raw.split(|&b| b == 0).next().unwrap_or(&[]))
                        });
                    }
                }
            }
            entry.size = Some(data.len() as u64);
            ole.entries.push(entry);
            ole.contents.push(Some(data));
        }
        Ok(ole)
    }
}

impl<'a> Container<'a> for Ole {
    fn entries(&self) -> &[Entry] {
        &self.entries
    }

    fn open(&mut self, index: usize, _: &mut Budget) -> Result<Cow<'a, [u8]>, String> {
        self.contents[index]
            .take()
            .map(Cow::Owned)
            .ok_or_else(|| "opened twice".into())
    }

    fn unseen(&self) -> Vec<String> {
        self.unseen.clone()
    }

    fn holds_macros(&self) -> bool {
        self.macros
    }
}

/// The file a Packager object carries: its label, source path and temporary
/// path (names), then its data. (The layout oletools reads.)
fn packaged_file(native: &[u8]) -> Option<(Vec<String>, &[u8])> {
    let mut pos = 6; // size, then a 16-bit marker
    let string = |pos: &mut usize| -> Option<String> {
        let end = *pos + memchr::memchr(0, native.get(*pos..)?)?;
        let text = super::legacy_text(&native[*pos..end]);
        *pos = end + 1;
        Some(text)
    };
    let label = string(&mut pos)?;
    let source = string(&mut pos)?;
    pos += 8;
    let temporary = string(&mut pos)?;
    let size = native.le32(pos)? as usize;
    let data = native.get(pos + 4..pos + 4 + size)?;
    let base = |path: &str| path.rsplit(['\\', '/']).next().unwrap_or(path).to_string();
    Some((vec![label, base(&source), base(&temporary)], data))
}
