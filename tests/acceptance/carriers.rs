//! Containers built the way attackers and ordinary users build them: by the real
//! tools where Debian has them (7-Zip, tar, gzip's and xz's own compressors,
//! gcab, genisoimage, mkfs.fat and mtools, qemu-img, sfdisk, ar, cpio) and byte
//! by byte where it has none that write the format (RAR, TNEF) or where the
//! point is a malformed one. The tests of `containers.rs` send them.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use crate::support::*;

/// Every container format the engine opens, as the tests build them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Zip,
    Rar4,
    Rar5,
    SevenZip,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
    Lzip,
    Tar,
    TarGz,
    TarBz2,
    TarXz,
    Cab,
    Iso,
    Fat,
    Disk,
    VhdFixed,
    VhdDynamic,
    Ole,
    Tnef,
    Ar,
    Cpio,
    Eml,
}

pub const FORMATS: &[Format] = &[
    Format::Zip,
    Format::Rar4,
    Format::Rar5,
    Format::SevenZip,
    Format::Gzip,
    Format::Bzip2,
    Format::Xz,
    Format::Zstd,
    Format::Lzip,
    Format::Tar,
    Format::TarGz,
    Format::TarBz2,
    Format::TarXz,
    Format::Cab,
    Format::Iso,
    Format::Fat,
    Format::Disk,
    Format::VhdFixed,
    Format::VhdDynamic,
    Format::Ole,
    Format::Tnef,
    Format::Ar,
    Format::Cpio,
    Format::Eml,
];

impl Format {
    /// The file name it is sent under: one the shipped rules do not refuse by
    /// name (a disk image sent as `.iso` is removed for its name alone; the
    /// engine is what is tested here).
    pub fn file_name(self) -> &'static str {
        match self {
            Format::Zip => "files.zip",
            Format::Rar4 | Format::Rar5 => "files.rar",
            Format::SevenZip => "files.7z",
            Format::Gzip => "notes.txt.gz",
            Format::Bzip2 => "notes.txt.bz2",
            Format::Xz => "notes.dat",
            Format::Zstd => "notes.txt.zst",
            Format::Lzip => "notes.txt.lz",
            Format::Tar => "files.tar",
            Format::TarGz => "files.tgz",
            Format::TarBz2 => "files.tar.bz2",
            Format::TarXz => "files.bin",
            Format::Cab => "files.dat",
            Format::Iso => "image.bin",
            Format::Fat => "floppy.bin",
            Format::Disk => "stick.bin",
            Format::VhdFixed | Format::VhdDynamic => "drive.bin",
            Format::Ole => "report.doc",
            Format::Tnef => "winmail.dat",
            Format::Ar => "archive.a",
            Format::Cpio => "files.cpio",
            Format::Eml => "forwarded.eml",
        }
    }

    /// The container holding `files` (name, content); single-file formats
    /// (gzip, bzip2 …) hold the first.
    pub fn make(self, files: &[(&str, &[u8])]) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in");
        std::fs::create_dir(&input).unwrap();
        for (name, data) in files {
            std::fs::write(input.join(name), data).unwrap();
        }
        let names: Vec<&str> = files.iter().map(|(n, _)| *n).collect();
        let out = dir.path().join("out");
        match self {
            Format::Zip => zip_of(files),
            Format::Rar4 => rar4(files, true),
            Format::Rar5 => rar5(files),
            Format::SevenZip => {
                let out = dir.path().join("out.7z");
                run(
                    "7z",
                    &["a", "-t7z", "-bd", out.to_str().unwrap()],
                    &names,
                    &input,
                );
                read(&out)
            }
            Format::Gzip => {
                let mut encoder = flate2::GzBuilder::new()
                    .filename(files[0].0)
                    .write(Vec::new(), flate2::Compression::default());
                encoder.write_all(files[0].1).unwrap();
                encoder.finish().unwrap()
            }
            Format::Bzip2 => {
                let mut encoder =
                    bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
                encoder.write_all(files[0].1).unwrap();
                encoder.finish().unwrap()
            }
            Format::Xz => tool_stdout("xz", &["-c", files[0].0], &input),
            Format::Zstd => tool_stdout("zstd", &["-q", "-c", files[0].0], &input),
            Format::Lzip => tool_stdout("lzip", &["-c", files[0].0], &input),
            Format::Tar => tar(&["-cf", "-"], &names, &input),
            Format::TarGz => tar(&["-czf", "-"], &names, &input),
            Format::TarBz2 => tar(&["-cjf", "-"], &names, &input),
            Format::TarXz => tar(&["-cJf", "-"], &names, &input),
            Format::Cab => {
                run(
                    "gcab",
                    &["-c", "-z", "-n", out.to_str().unwrap()],
                    &names,
                    &input,
                );
                read(&out)
            }
            Format::Iso => {
                let args = ["-quiet", "-J", "-R", "-o", out.to_str().unwrap(), "."];
                run("genisoimage", &args, &[], &input);
                read(&out)
            }
            Format::Fat => fat_image(files, dir.path(), 0),
            Format::Disk => fat_image(files, dir.path(), 2048),
            Format::VhdFixed | Format::VhdDynamic => {
                let raw = dir.path().join("disk.raw");
                std::fs::write(&raw, fat_image(files, dir.path(), 2048)).unwrap();
                let subformat = if self == Format::VhdFixed {
                    "subformat=fixed"
                } else {
                    "subformat=dynamic"
                };
                let args = [
                    "convert",
                    "-q",
                    "-f",
                    "raw",
                    "-O",
                    "vpc",
                    "-o",
                    subformat,
                    raw.to_str().unwrap(),
                    out.to_str().unwrap(),
                ];
                run("qemu-img", &args, &[], dir.path());
                read(&out)
            }
            Format::Ole => ole_package(files),
            Format::Tnef => tnef(files),
            Format::Ar => {
                run("ar", &["rc", out.to_str().unwrap()], &names, &input);
                read(&out)
            }
            Format::Cpio => {
                let list: String = names.iter().map(|n| format!("{n}\n")).collect();
                let mut child = Command::new("cpio")
                    .args(["-o", "-H", "newc", "--quiet"])
                    .current_dir(&input)
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(list.as_bytes())
                    .unwrap();
                let output = child.wait_with_output().unwrap();
                assert!(output.status.success());
                output.stdout
            }
            Format::Eml => eml(files),
        }
    }
}

/// The packages the builders and readers need (`.ci/run` installs them first).
pub fn ensure_tools() {
    for (check, package) in [
        ("command -v 7z", "p7zip-full"),
        ("command -v bsdtar", "libarchive-tools"),
        ("command -v cabextract", "cabextract"),
        ("command -v tnef", "tnef"),
        ("command -v isoinfo", "genisoimage"),
        ("command -v mcopy", "mtools"),
        (
            "command -v mkfs.fat || test -x /usr/sbin/mkfs.fat",
            "dosfstools",
        ),
        ("command -v gcab", "gcab"),
        ("command -v lzip", "lzip"),
        ("command -v zstd", "zstd"),
        ("command -v qemu-img", "qemu-utils"),
        ("command -v sfdisk || test -x /usr/sbin/sfdisk", "fdisk"),
        ("command -v cpio", "cpio"),
        ("command -v ar", "binutils"),
    ] {
        ensure_package(check, package);
    }
}

fn run(program: &str, args: &[&str], files: &[&str], cwd: &Path) {
    let output = Command::new(program)
        .args(args)
        .args(files)
        .current_dir(cwd)
        .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn tool_stdout(program: &str, args: &[&str], cwd: &Path) -> Vec<u8> {
    let output = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap();
    assert!(output.status.success(), "{program}");
    output.stdout
}

fn tar(args: &[&str], names: &[&str], cwd: &Path) -> Vec<u8> {
    let output = Command::new("tar")
        .args(args)
        .args(names)
        .current_dir(cwd)
        .output()
        .unwrap();
    assert!(output.status.success(), "tar");
    output.stdout
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A FAT file system with the files; with `offset` (sectors), inside a disk
/// with an MBR partition table that starts it there.
fn fat_image(files: &[(&str, &[u8])], dir: &Path, offset: u64) -> Vec<u8> {
    let image = dir.join(format!("fat{offset}.img"));
    let size: u64 = files.iter().map(|(_, d)| d.len() as u64).sum::<u64>() + 2 * 1024 * 1024;
    let sectors = size.div_ceil(512) + offset;
    std::fs::File::create(&image)
        .unwrap()
        .set_len(sectors * 512)
        .unwrap();
    let path = image.to_str().unwrap();
    let mtools_target = if offset > 0 {
        let table = format!("label: dos\nstart={offset}, type=c\n");
        let mut child = Command::new("/usr/sbin/sfdisk")
            .args(["-q", path])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(table.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "sfdisk");
        run(
            "/usr/sbin/mkfs.fat",
            &[
                "--offset",
                &offset.to_string(),
                path,
                &((sectors - offset) / 2).to_string(),
            ],
            &[],
            dir,
        );
        format!("{path}@@{}", offset * 512)
    } else {
        run("/usr/sbin/mkfs.fat", &[path], &[], dir);
        path.to_string()
    };
    for (name, data) in files {
        let file = dir.join(name);
        std::fs::write(&file, data).unwrap();
        run(
            "mcopy",
            &["-i", &mtools_target, file.to_str().unwrap(), "::"],
            &[],
            dir,
        );
    }
    read(&image)
}

/// An OLE compound file in which each file is an embedded Packager object
/// (`\x01Ole10Native`), as Word embeds a file dropped into a document.
pub fn ole_package(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut file = cfb::CompoundFile::create(std::io::Cursor::new(Vec::new())).unwrap();
    file.create_stream("/WordDocument")
        .unwrap()
        .write_all(b"a document")
        .unwrap();
    for (i, (name, data)) in files.iter().enumerate() {
        let storage = format!("/ObjectPool{i}");
        file.create_storage(&storage).unwrap();
        let mut native = Vec::new();
        native.extend(2u16.to_le_bytes());
        native.extend(format!("{name}\0").as_bytes());
        native.extend(format!("C:\\Users\\me\\{name}\0").as_bytes());
        native.extend([0, 0, 3, 0]);
        let temporary = format!("C:\\Temp\\{name}\0");
        native.extend((temporary.len() as u32).to_le_bytes());
        native.extend(temporary.as_bytes());
        native.extend((data.len() as u32).to_le_bytes());
        native.extend(*data);
        let mut stream = (native.len() as u32).to_le_bytes().to_vec();
        stream.extend(native);
        file.create_stream(format!("{storage}/\u{1}Ole10Native"))
            .unwrap()
            .write_all(&stream)
            .unwrap();
    }
    file.flush().unwrap();
    file.into_inner().into_inner()
}

/// An Office 97-2003 document with a VBA project (its macros).
pub fn ole_with_macros() -> Vec<u8> {
    let mut file = cfb::CompoundFile::create(std::io::Cursor::new(Vec::new())).unwrap();
    file.create_stream("/WordDocument")
        .unwrap()
        .write_all(b"a document")
        .unwrap();
    file.create_storage("/Macros").unwrap();
    file.create_storage("/Macros/VBA").unwrap();
    file.create_stream("/Macros/VBA/dir")
        .unwrap()
        .write_all(b"\x01compressed")
        .unwrap();
    file.create_stream("/Macros/VBA/ThisDocument")
        .unwrap()
        .write_all(b"Sub AutoOpen()")
        .unwrap();
    file.create_stream("/Macros/_VBA_PROJECT")
        .unwrap()
        .write_all(b"\xcc\x61")
        .unwrap();
    file.flush().unwrap();
    file.into_inner().into_inner()
}

/// A Word document (OOXML) with a VBA project, whatever its name says.
pub fn ooxml_with_macros() -> Vec<u8> {
    zip_of(&[
        ("[Content_Types].xml", b"<?xml version=\"1.0\"?><Types/>"),
        ("word/document.xml", b"<w:document/>"),
        ("word/vbaProject.bin", &ole_with_macros()),
    ])
}

/// A `winmail.dat` with each file as an attachment (title and long name).
pub fn tnef(files: &[(&str, &[u8])]) -> Vec<u8> {
    fn attribute(level: u8, id: u32, value: &[u8]) -> Vec<u8> {
        let mut out = vec![level];
        out.extend(id.to_le_bytes());
        out.extend((value.len() as u32).to_le_bytes());
        out.extend(value);
        let sum = value
            .iter()
            .fold(0u16, |s, &b| s.wrapping_add(u16::from(b)));
        out.extend(sum.to_le_bytes());
        out
    }
    let mut out = 0x223e_9f78u32.to_le_bytes().to_vec();
    out.extend(0x0001u16.to_le_bytes());
    out.extend(attribute(1, 0x0008_9006, &0x0001_0000u32.to_le_bytes()));
    out.extend(attribute(1, 0x0006_9007, b"1252\0\0\0\0"));
    for (name, data) in files {
        out.extend(attribute(
            2,
            0x0006_9002,
            &[1, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0],
        ));
        out.extend(attribute(2, 0x0001_8010, format!("{name}\0").as_bytes()));
        out.extend(attribute(2, 0x0006_800f, data));
        let mut props = 1u32.to_le_bytes().to_vec();
        props.extend(0x001eu16.to_le_bytes());
        props.extend(0x3707u16.to_le_bytes());
        props.extend(1u32.to_le_bytes());
        let long = format!("{name}\0");
        props.extend((long.len() as u32).to_le_bytes());
        props.extend(long.as_bytes());
        props.resize(props.len().next_multiple_of(4), 0);
        out.extend(attribute(2, 0x0006_9005, &props));
    }
    out
}

/// An RFC 5322 message carrying the files as attachments.
pub fn eml(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = String::from(
        "From: <friend@remote.test>\r\nTo: <alice@example.test>\r\nSubject: fwd\r\n\
         Date: Mon, 1 Dec 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"inner\"\r\n\r\n\
         --inner\r\nContent-Type: text/plain\r\n\r\nHere.\r\n",
    );
    for (name, data) in files {
        out.push_str(&format!(
            "--inner\r\nContent-Type: application/octet-stream; name=\"{name}\"\r\n\
             Content-Disposition: attachment; filename=\"{name}\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{}\r\n",
            base64(data)
        ));
    }
    out.push_str("--inner--\r\n");
    out.into_bytes()
}

/// RAR 4 with the files stored (`stored`) or claiming RAR's own compression (the
/// data is then noise no extractor can unpack; what matters is what the
/// headers say).
pub fn rar4(files: &[(&str, &[u8])], stored: bool) -> Vec<u8> {
    fn block(kind: u8, flags: u16, fields: &[u8]) -> Vec<u8> {
        let mut header = vec![kind];
        header.extend(flags.to_le_bytes());
        header.extend(((7 + fields.len()) as u16).to_le_bytes());
        header.extend(fields);
        let mut out = ((crc32fast::hash(&header) & 0xffff) as u16)
            .to_le_bytes()
            .to_vec();
        out.extend(header);
        out
    }
    let mut out = b"Rar!\x1a\x07\x00".to_vec();
    out.extend(block(0x73, 0, &[0; 6]));
    for (name, data) in files {
        let mut fields = Vec::new();
        fields.extend((data.len() as u32).to_le_bytes());
        fields.extend((data.len() as u32).to_le_bytes());
        fields.push(2);
        fields.extend(crc32fast::hash(data).to_le_bytes());
        fields.extend(0x5a21_0000u32.to_le_bytes());
        fields.push(if stored { 20 } else { 29 });
        fields.push(if stored { 0x30 } else { 0x33 });
        fields.extend((name.len() as u16).to_le_bytes());
        fields.extend(0x20u32.to_le_bytes());
        fields.extend(name.as_bytes());
        out.extend(block(0x74, 0x8000, &fields));
        out.extend(*data);
    }
    out.extend(block(0x7b, 0x4000, &[]));
    out
}

/// RAR 5 with the files stored.
pub fn rar5(files: &[(&str, &[u8])]) -> Vec<u8> {
    fn vint(mut n: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    fn header(body: &[u8]) -> Vec<u8> {
        let mut sized = Vec::new();
        vint(body.len() as u64, &mut sized);
        sized.extend(body);
        let mut out = crc32fast::hash(&sized).to_le_bytes().to_vec();
        out.extend(sized);
        out
    }
    let mut out = b"Rar!\x1a\x07\x01\x00".to_vec();
    let mut main = Vec::new();
    vint(1, &mut main); // main archive header
    vint(0, &mut main); // no extra, no data
    vint(0, &mut main); // archive flags
    out.extend(header(&main));
    for (name, data) in files {
        let mut file = Vec::new();
        vint(2, &mut file); // file header
        vint(0x02, &mut file); // data area follows
        vint(data.len() as u64, &mut file);
        vint(0x04, &mut file); // a CRC32 follows
        vint(data.len() as u64, &mut file);
        vint(0x20, &mut file); // attributes
        file.extend(crc32fast::hash(data).to_le_bytes());
        vint(0, &mut file); // stored, version 0
        vint(0, &mut file); // Windows
        vint(name.len() as u64, &mut file);
        file.extend(name.as_bytes());
        out.extend(header(&file));
        out.extend(*data);
    }
    let mut end = Vec::new();
    vint(5, &mut end);
    vint(0, &mut end);
    vint(0, &mut end);
    out.extend(header(&end));
    out
}
