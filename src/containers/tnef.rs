//! TNEF (`winmail.dat`): Outlook's wrapping of a message's attachments, which
//! Outlook and many other clients unpack. Each attachment is an entry with every
//! name TNEF gives it (the title, the MAPI long and short file names, the
//! extension) and its data (`attAttachData`, or an embedded object's).

use std::borrow::Cow;

use super::{Budget, Container, Entry, Fields};

const SIGNATURE: u32 = 0x223e_9f78;
const ATTACH_REND_DATA: u32 = 0x0006_9002;
const ATTACH_TITLE: u32 = 0x0001_8010;
const ATTACH_DATA: u32 = 0x0006_800f;
const ATTACHMENT: u32 = 0x0006_9005;

pub struct Tnef<'a> {
    entries: Vec<Entry>,
    data: Vec<Option<&'a [u8]>>,
    unseen: Vec<String>,
}

impl<'a> Tnef<'a> {
    pub fn read(bytes: &'a [u8]) -> Result<Tnef<'a>, String> {
        if bytes.le32(0) != Some(SIGNATURE) {
            return Err("damaged (not a TNEF signature)".into());
        }
        let mut tnef = Tnef {
            entries: Vec::new(),
            data: Vec::new(),
            unseen: Vec::new(),
        };
        let mut pos = 6;
        while pos < bytes.len() {
            let (Some(level), Some(id), Some(len)) =
                (bytes.u8_at(pos), bytes.le32(pos + 1), bytes.le32(pos + 5))
            else {
                tnef.unseen.push("damaged (an attribute cut short)".into());
                break;
            };
            let start = pos + 9;
            let Some(value) = bytes.slice(start, len as usize) else {
                tnef.unseen
                    .push("damaged (an attribute past the end)".into());
                break;
            };
            pos = start + len as usize + 2;
            if level != 2 {
                continue;
            }
            match id {
                ATTACH_REND_DATA => {
                    tnef.entries.push(Entry::default());
                    tnef.data.push(None);
                }
                ATTACH_TITLE => {
                    if let Some(entry) = tnef.entries.last_mut() {
                        entry.also(c_string(value));
                    }
                }
                ATTACH_DATA => {
                    if let Some(data) = tnef.data.last_mut() {
                        *data = Some(value);
                    }
                }
                ATTACHMENT => {
                    if let (Some(entry), Some(data)) =
                        (tnef.entries.last_mut(), tnef.data.last_mut())
                    {
                        properties(value, entry, data);
                    }
                }
                _ => {}
            }
        }
        for entry in &mut tnef.entries {
            if entry.names.is_empty() {
                entry.also("(unnamed attachment)");
            }
        }
        Ok(tnef)
    }
}

impl<'a> Container<'a> for Tnef<'a> {
    fn entries(&self) -> &[Entry] {
        &self.entries
    }

    fn open(&mut self, index: usize, _: &mut Budget) -> Result<Cow<'a, [u8]>, String> {
        Ok(Cow::Borrowed(self.data[index].unwrap_or(&[])))
    }

    fn unseen(&self) -> Vec<String> {
        self.unseen.clone()
    }
}

/// The MAPI properties of an attachment: its names and, for an embedded
/// object, its data.
fn properties<'a>(bytes: &'a [u8], entry: &mut Entry, data: &mut Option<&'a [u8]>) {
    let Some(count) = bytes.le32(0) else { return };
    let mut pos = 4;
    for _ in 0..count.min(10_000) {
        let (Some(kind), Some(id)) = (bytes.le16(pos), bytes.le16(pos + 2)) else {
            return;
        };
        pos += 4;
        if id >= 0x8000 {
            // A named property: a GUID, then a number or a name.
            let Some(named_kind) = bytes.le32(pos + 16) else {
                return;
            };
            pos += 20;
            if named_kind == 0 {
                pos += 4;
            } else {
                let Some(len) = bytes.le32(pos) else { return };
                pos += 4 + (len as usize).next_multiple_of(4);
            }
        }
        let multi = kind & 0x1000 != 0;
        let base = kind & 0x0fff;
        let variable = matches!(base, 0x001e | 0x001f | 0x0102 | 0x000d);
        let values = if multi || variable {
            let Some(n) = bytes.le32(pos) else { return };
            pos += 4;
            n.min(10_000)
        } else {
            1
        };
        for _ in 0..values {
            if variable {
                let Some(len) = bytes.le32(pos) else { return };
                let Some(value) = bytes.slice(pos + 4, len as usize) else {
                    return;
                };
                pos += 4 + (len as usize).next_multiple_of(4);
                match (id, base) {
                    (0x3707 | 0x3704 | 0x3001, 0x001f) => entry.also(super::utf16le(value)),
                    (0x3707 | 0x3704 | 0x3001, 0x001e) => entry.also(c_string(value)),
                    (0x3703, 0x001f) => entry.also(format!("attachment{}", super::utf16le(value))),
                    (0x3703, 0x001e) => entry.also(format!("attachment{}", c_string(value))),
                    // An embedded object: an interface identifier, then its data.
                    (0x3701, 0x000d) => *data = value.get(16..),
                    (0x3701, 0x0102) => *data = Some(value),
                    _ => {}
                }
            } else {
                pos += match base {
                    0x0002 | 0x0003 | 0x0004 | 0x000a | 0x000b => 4,
                    0x0005 | 0x0006 | 0x0007 | 0x0014 | 0x0040 => 8,
                    0x0048 => 16,
                    _ => return,
                };
            }
        }
    }
}

fn c_string(bytes: &[u8]) -> String {
    super::legacy_text(bytes.split(|&b| b == 0).next().unwrap_or(&[]))
}

#[cfg(test)]
pub mod tests {
    use super::*;

    fn attribute(level: u8, id: u32, value: &[u8]) -> Vec<u8> {
        let mut out = vec![level];
        out.extend(id.to_le_bytes());
        out.extend((value.len() as u32).to_le_bytes());
        out.extend(value);
        let sum: u16 = value
            .iter()
            .fold(0u16, |s, &b| s.wrapping_add(u16::from(b)));
        out.extend(sum.to_le_bytes());
        out
    }

    /// A `winmail.dat` with attachments (title, long name, data).
    pub fn make_tnef(files: &[(&str, &str, &[u8])]) -> Vec<u8> {
        let mut out = SIGNATURE.to_le_bytes().to_vec();
        out.extend(0x0001u16.to_le_bytes());
        out.extend(attribute(1, 0x0009_9006, &[0, 0, 0, 0]));
        for (title, long, data) in files {
            out.extend(attribute(2, ATTACH_REND_DATA, &[0; 14]));
            out.extend(attribute(2, ATTACH_TITLE, format!("{title}\0").as_bytes()));
            out.extend(attribute(2, ATTACH_DATA, data));
            let mut props = 1u32.to_le_bytes().to_vec();
            props.extend(0x001fu16.to_le_bytes());
            props.extend(0x3707u16.to_le_bytes());
            props.extend(1u32.to_le_bytes());
            let utf16: Vec<u8> = long
                .encode_utf16()
                .chain([0])
                .flat_map(u16::to_le_bytes)
                .collect();
            props.extend((utf16.len() as u32).to_le_bytes());
            props.extend(&utf16);
            props.resize(props.len().next_multiple_of(4), 0);
            out.extend(attribute(2, ATTACHMENT, &props));
        }
        out
    }

    #[test]
    fn attachments_with_their_names_and_data() {
        let bytes = make_tnef(&[
            ("REPORT~1.TXT", "report.txt.vbs", b"MsgBox 1"),
            ("a.txt", "a.txt", b"hi"),
        ]);
        let mut tnef = Tnef::read(&bytes).unwrap();
        assert_eq!(tnef.entries().len(), 2);
        assert_eq!(tnef.entries()[0].names, ["REPORT~1.TXT", "report.txt.vbs"]);
        assert_eq!(&*tnef.open(0, &mut Budget::new(0)).unwrap(), b"MsgBox 1");
        assert_eq!(&*tnef.open(1, &mut Budget::new(0)).unwrap(), b"hi");
    }
}
