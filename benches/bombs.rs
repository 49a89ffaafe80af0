//! What a bomb costs: for each container format, a high-ratio bomb, a deep
//! nesting and a great many entries (and a few format-specific traps: a FAT
//! cluster loop, a sparse virtual disk of a terabyte, overlapping zip entries),
//! each attached to a message and analysed with the default limits as the DATA
//! step does. Prints the time, the peak heap the analysis took (a counting
//! allocator), and what the engine said.
//!
//!     cargo bench --bench bombs
//!
//! The goal: each answered within a second, with a peak heap under the default
//! `data_memory` (256 MB). Builds some bombs with Debian's tools (7z, xz, zstd,
//! lzip, gcab); a missing tool skips its rows.
//!
//! A second table is the everyday cost: a message carrying an ordinary archive
//! of about 1 MB (twenty files of text and of incompressible data) in each
//! format, beside the same message with a 1 MB attachment that is no archive.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use mailmoat::mime::{Content, Limits};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            let now = CURRENT.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size
                - layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        } else {
            CURRENT.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const ZEROS: usize = 1 << 30;

fn zip(files: &[(String, Vec<u8>)], method: zip::CompressionMethod) -> Vec<u8> {
    let mut buffer = std::io::Cursor::new(Vec::new());
    {
        let mut writer = zip::ZipWriter::new(&mut buffer);
        let options = zip::write::SimpleFileOptions::default().compression_method(method);
        for (name, data) in files {
            writer.start_file(name.as_str(), options).unwrap();
            writer.write_all(data).unwrap();
        }
        writer.finish().unwrap();
    }
    buffer.into_inner()
}

/// A zip of one entry of `n` zero bytes, written a megabyte at a time.
fn zip_of_zeros(n: usize) -> Vec<u8> {
    let mut buffer = std::io::Cursor::new(Vec::new());
    {
        let mut writer = zip::ZipWriter::new(&mut buffer);
        writer
            .start_file(
                "zeros.bin",
                zip::write::SimpleFileOptions::default().large_file(true),
            )
            .unwrap();
        let block = vec![0u8; 1 << 20];
        for _ in 0..n >> 20 {
            writer.write_all(&block).unwrap();
        }
        writer.finish().unwrap();
    }
    buffer.into_inner()
}

fn gzip_of_zeros(n: usize) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let block = vec![0u8; 1 << 20];
    for _ in 0..n >> 20 {
        encoder.write_all(&block).unwrap();
    }
    encoder.finish().unwrap()
}

fn bzip2_of_zeros(n: usize) -> Vec<u8> {
    let mut encoder = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
    let block = vec![0u8; 1 << 20];
    for _ in 0..n >> 20 {
        encoder.write_all(&block).unwrap();
    }
    encoder.finish().unwrap()
}

/// Zeros through a command-line compressor (`xz -c`, `zstd -c` …).
fn tool_of_zeros(tool: &str, args: &[&str], n: usize) -> Option<Vec<u8>> {
    let mut child = Command::new(tool)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take()?;
    let writer = std::thread::spawn(move || {
        let block = vec![0u8; 1 << 20];
        for _ in 0..n >> 20 {
            if stdin.write_all(&block).is_err() {
                break;
            }
        }
    });
    let output = child.wait_with_output().ok()?;
    writer.join().ok()?;
    output.status.success().then_some(output.stdout)
}

/// A file through a tool that writes an archive (`7z a`, `gcab -c`).
fn tool_archive(
    tool: &str,
    args: &[&str],
    out_name: &str,
    files: &[(&str, &[u8])],
) -> Option<Vec<u8>> {
    let dir = tempfile::tempdir().ok()?;
    for (name, data) in files {
        std::fs::write(dir.path().join(name), data).ok()?;
    }
    let names: Vec<&str> = files.iter().map(|(n, _)| *n).collect();
    let status = Command::new(tool)
        .args(args)
        .arg(out_name)
        .args(&names)
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .ok()?;
    status
        .success()
        .then(|| std::fs::read(dir.path().join(out_name)).ok())?
}

fn tar_of(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in files {
        let mut h = vec![0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        out.extend(h);
        out.extend(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend([0u8; 1024]);
    out
}

/// A FAT12 floppy whose one file's cluster chain loops on itself.
fn fat_loop() -> Vec<u8> {
    let mut image = vec![0u8; 1440 * 1024];
    let boot: [u8; 62] = [
        0xeb, 0x3c, 0x90, b'm', b'k', b'f', b's', b'.', b'f', b'a', b't', 0x00, 0x02, 0x01, 0x01,
        0x00, 0x02, 0xe0, 0x00, 0x40, 0x0b, 0xf0, 0x09, 0x00, 0x12, 0x00, 0x02, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x29, 0, 0, 0, 0, b'N', b'O', b' ', b'N',
        b'A', b'M', b'E', b' ', b' ', b' ', b' ', b'F', b'A', b'T', b'1', b'2', b' ', b' ', b' ',
    ];
    image[..62].copy_from_slice(&boot);
    image[510] = 0x55;
    image[511] = 0xaa;
    // FAT: cluster 2 → 3 → 2 …
    let fat = 512;
    image[fat..fat + 3].copy_from_slice(&[0xf0, 0xff, 0xff]);
    image[fat + 3..fat + 6].copy_from_slice(&[0x03, 0x20, 0x00]);
    // Root directory after two FATs of nine sectors.
    let root = 512 * 19;
    image[root..root + 11].copy_from_slice(b"LOOP    BIN");
    image[root + 11] = 0x20;
    image[root + 26] = 2;
    image[root + 28..root + 32].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
    image
}

/// A dynamic VHD that declares a terabyte.
fn sparse_vhd() -> Vec<u8> {
    let mut footer = vec![0u8; 512];
    footer[..8].copy_from_slice(b"conectix");
    footer[16..24].copy_from_slice(&512u64.to_be_bytes());
    footer[48..56].copy_from_slice(&(1u64 << 40).to_be_bytes());
    footer[60..64].copy_from_slice(&3u32.to_be_bytes());
    let mut header = vec![0u8; 1024];
    header[..8].copy_from_slice(b"cxsparse");
    header[16..24].copy_from_slice(&1536u64.to_be_bytes());
    header[28..32].copy_from_slice(&(1u32 << 19).to_be_bytes());
    header[32..36].copy_from_slice(&(2u32 << 20).to_be_bytes());
    let mut out = footer.clone();
    out.extend(header);
    out.extend(vec![0xffu8; 4096]);
    out.extend(footer);
    out
}

/// A message with the bytes attached.
fn message(name: &str, data: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let text = base64::engine::general_purpose::STANDARD.encode(data);
    let mut out = format!(
        "From: a@remote.test\r\nTo: b@example.test\r\nSubject: bomb\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nhi\r\n\
         --B\r\nContent-Type: application/octet-stream; name=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    )
    .into_bytes();
    for line in text.as_bytes().chunks(76) {
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"--B--\r\n");
    out
}

fn nested(levels: usize, wrap: impl Fn(&str, Vec<u8>) -> Vec<u8>) -> Vec<u8> {
    let mut inner = b"MZ\x90\x00 deep down".to_vec();
    for level in 0..levels {
        inner = wrap(&format!("level{level}"), inner);
    }
    inner
}

fn main() {
    let limits = Limits::default();
    let mut bombs: Vec<(&str, &str, Option<Vec<u8>>)> = Vec::new();
    let entries = |n: usize| -> Vec<(String, Vec<u8>)> {
        (0..n)
            .map(|i| (format!("f{i}.txt"), vec![b'x'; 16]))
            .collect()
    };
    bombs.push(("zip", "ratio (1 GiB of zeros)", Some(zip_of_zeros(ZEROS))));
    bombs.push((
        "zip",
        "nesting (40 deep)",
        Some(nested(40, |n, d| {
            zip(&[(n.to_string(), d)], zip::CompressionMethod::Deflated)
        })),
    ));
    bombs.push((
        "zip",
        "entries (50,000)",
        Some(zip(&entries(50_000), zip::CompressionMethod::Stored)),
    ));
    bombs.push((
        "zip",
        "overlapping entries (one file, 10,000 names)",
        Some({
            let one = zip(
                &[("a".into(), vec![0u8; 1 << 20])],
                zip::CompressionMethod::Deflated,
            );
            // Every directory record points at the one local header.
            let central = one.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
            let end = one.windows(4).rposition(|w| w == b"PK\x05\x06").unwrap();
            let record = one[central..end].to_vec();
            let mut out = one[..central].to_vec();
            let start = out.len();
            for _ in 0..10_000 {
                out.extend(&record);
            }
            let size = (out.len() - start) as u32;
            let mut tail = one[end..].to_vec();
            tail[8..10].copy_from_slice(&10_000u16.to_le_bytes());
            tail[10..12].copy_from_slice(&10_000u16.to_le_bytes());
            tail[12..16].copy_from_slice(&size.to_le_bytes());
            tail[16..20].copy_from_slice(&(start as u32).to_le_bytes());
            out.extend(tail);
            out
        }),
    ));
    bombs.push(("gzip", "ratio (1 GiB of zeros)", Some(gzip_of_zeros(ZEROS))));
    bombs.push((
        "gzip",
        "nesting (40 deep)",
        Some(nested(40, |_, d| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            e.write_all(&d).unwrap();
            e.finish().unwrap()
        })),
    ));
    bombs.push((
        "bzip2",
        "ratio (1 GiB of zeros)",
        Some(bzip2_of_zeros(ZEROS)),
    ));
    bombs.push((
        "xz",
        "ratio (1 GiB of zeros)",
        tool_of_zeros("xz", &["-c", "-9"], ZEROS),
    ));
    bombs.push((
        "zstd",
        "ratio (1 GiB of zeros)",
        tool_of_zeros("zstd", &["-c", "-q", "-19"], ZEROS),
    ));
    bombs.push((
        "lzip",
        "ratio (1 GiB of zeros)",
        tool_of_zeros("lzip", &["-c", "-9"], ZEROS),
    ));
    let big_zeros = vec![0u8; 256 << 20];
    bombs.push((
        "7z",
        "ratio (256 MiB of zeros, LZMA2)",
        tool_archive(
            "7z",
            &["a", "-t7z", "-mx9", "-bd"],
            "b.7z",
            &[("zeros.bin", &big_zeros)],
        ),
    ));
    bombs.push((
        "7z",
        "ratio (256 MiB of zeros, PPMd)",
        tool_archive(
            "7z",
            &["a", "-t7z", "-m0=ppmd", "-bd"],
            "p.7z",
            &[("zeros.bin", &big_zeros)],
        ),
    ));
    bombs.push((
        "cab",
        "ratio (256 MiB of zeros, MSZIP)",
        tool_archive("gcab", &["-c", "-z"], "b.cab", &[("zeros.bin", &big_zeros)]),
    ));
    drop(big_zeros);
    bombs.push(("tar", "entries (7,000)", Some(tar_of(&entries(7_000)))));
    bombs.push((
        "tar",
        "nesting (40 deep)",
        Some(nested(40, |n, d| tar_of(&[(n.to_string(), d)]))),
    ));
    let many: Vec<(String, Vec<u8>)> = entries(3_000);
    let many_refs: Vec<(&str, &[u8])> = many
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    bombs.push((
        "7z",
        "entries (3,000)",
        tool_archive("7z", &["a", "-t7z", "-bd"], "m.7z", &many_refs),
    ));
    bombs.push((
        "cab",
        "entries (3,000)",
        tool_archive("gcab", &["-c", "-z"], "m.cab", &many_refs),
    ));
    bombs.push((
        "tar.gz",
        "ratio (1 GiB of zeros)",
        Some({
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            let mut header = tar_of(&[("zeros.bin".into(), Vec::new())]);
            header.truncate(512);
            header[124..136].copy_from_slice(format!("{ZEROS:011o}\0").as_bytes());
            header[148..156].copy_from_slice(b"        ");
            let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
            header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
            e.write_all(&header).unwrap();
            let block = vec![0u8; 1 << 20];
            for _ in 0..ZEROS >> 20 {
                e.write_all(&block).unwrap();
            }
            e.finish().unwrap()
        }),
    ));
    bombs.push(("fat", "a cluster chain that loops", Some(fat_loop())));
    bombs.push(("vhd", "a sparse disk of 1 TiB", Some(sparse_vhd())));
    bombs.push((
        "eml",
        "messages attached 12 deep",
        Some(nested(12, |n, d| message(&format!("{n}.eml"), &d))),
    ));

    println!("| format | bomb | attached | time | peak heap | what the engine said |");
    println!("|---|---|---|---|---|---|");
    for (format, kind, bytes) in bombs {
        measure(&limits, format, kind, bytes, 1);
    }

    println!();
    println!(
        "| format | ordinary archive | attached | time (median of 20) | peak heap | what the engine said |"
    );
    println!("|---|---|---|---|---|---|");
    let files = ordinary_files();
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    let everyday: Vec<(&str, &str, Option<Vec<u8>>)> = vec![
        (
            "none",
            "1 MB of incompressible data, no archive",
            Some(noise(1 << 20, 7)),
        ),
        (
            "zip",
            "20 files, deflate",
            Some(zip(&files, zip::CompressionMethod::Deflated)),
        ),
        (
            "7z",
            "20 files, LZMA2",
            tool_archive("7z", &["a", "-t7z", "-bd"], "o.7z", &refs),
        ),
        (
            "tar.gz",
            "20 files",
            Some({
                let mut e =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                e.write_all(&tar_of(&files)).unwrap();
                e.finish().unwrap()
            }),
        ),
        (
            "cab",
            "20 files, MSZIP",
            tool_archive("gcab", &["-c", "-z"], "o.cab", &refs),
        ),
        (
            "iso",
            "20 files",
            tool_archive("genisoimage", &["-quiet", "-o"], "o.iso", &refs),
        ),
    ];
    for (format, kind, bytes) in everyday {
        measure(&limits, format, kind, bytes, 20);
    }
}

/// Bytes no compressor shrinks (xorshift), the same for the same seed.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// An everyday archive's contents: ten text files and ten of data, about 1 MB
/// packed.
fn ordinary_files() -> Vec<(String, Vec<u8>)> {
    let words = b"the quarterly report attached shows revenue and costs by region ";
    (0..10)
        .map(|i| {
            let text: Vec<u8> = words.iter().copied().cycle().take(40 * 1024).collect();
            (format!("notes{i}.txt"), text)
        })
        .chain((0..10).map(|i| (format!("scan{i}.jpg"), noise(100 * 1024, i + 1))))
        .collect()
}

/// Analyses `bytes` attached to a message `runs` times; prints the median time,
/// the peak heap and what the engine said.
fn measure(limits: &Limits, format: &str, kind: &str, bytes: Option<Vec<u8>>, runs: usize) {
    let Some(bytes) = bytes else {
        println!("| {format} | {kind} | (tool missing) | | | |");
        return;
    };
    let raw = message(&format!("attached.{format}"), &bytes);
    drop(bytes);
    let mut times = Vec::with_capacity(runs);
    let mut peak = 0;
    let mut content = None;
    for _ in 0..runs {
        let base = CURRENT.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        let start = Instant::now();
        let analysed = Content::analyze(&raw, limits);
        times.push(start.elapsed());
        peak = peak.max(PEAK.load(Ordering::Relaxed).saturating_sub(base));
        content = Some(analysed);
    }
    times.sort();
    let took = times[times.len() / 2];
    let content = content.expect("at least one run");
    let said = content
        .attachments
        .iter()
        .find_map(|a| a.unscannable.clone())
        .or_else(|| content.ambiguities.first().cloned())
        .unwrap_or_else(|| {
            format!(
                "{} attachments, none unscannable",
                content.attachments.len()
            )
        });
    let said: String = said.chars().take(90).collect();
    println!(
        "| {format} | {kind} | {} KB | {:.1} ms | {:.1} MB | {said} |",
        raw.len() / 1024,
        took.as_secs_f64() * 1000.0,
        peak as f64 / (1 << 20) as f64
    );
}
