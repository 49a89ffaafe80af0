//! The shape of the source: each room (a top-level module, or a file of a folder
//! module) imports only rooms on its own floor or below, and no two rooms import
//! each other, however indirectly. The floors follow the way of a message: the
//! adapters (SMTP, the control socket) over the pipeline, the pipeline over the
//! checks that judge, those over the queue and the archive that keep, those over
//! the reading of messages and containers, and the shared vocabulary at the
//! bottom. A new import that goes up, or closes a circle, fails here with the
//! room and the import named.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top floor first.
const FLOORS: &[&[&str]] = &[
    &["main"],
    &["lib", "server", "reload", "control"],
    &["web"],
    &["smtp"],
    &["pipeline"],
    &["services"],
    &["policy", "rules", "scanners", "sender_auth"],
    &["archive", "queue"],
    &["mime"],
    &["containers"],
    &["filetype"],
    &[
        "smtp_client",
        "dns",
        "directory",
        "shared_state",
        "store",
        "metrics",
        "memory",
        "manual",
    ],
    &["logging", "config", "file_error"],
    &["verdict", "reply", "address", "local_time"],
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs")
            && path.file_name().is_some_and(|n| n != "tests.rs")
        {
            out.push(path);
        }
    }
}

/// `smtp/session/data.rs` → ["smtp", "session", "data"].
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// A room: the first two parts of a module path.
fn room(parts: &[String]) -> String {
    parts[..parts.len().min(2)].join("::")
}

fn floor(room: &str) -> usize {
    let top = room.split("::").next().unwrap();
    FLOORS
        .iter()
        .position(|floor| floor.contains(&top))
        .unwrap_or_else(|| panic!("the room {room} is on no floor: add it to FLOORS"))
}

/// The rooms each room imports (code only: comments and test modules left out).
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let paths: Vec<Vec<String>> = files.iter().map(|f| module_path(&src, f)).collect();
    let rooms: BTreeSet<String> = paths.iter().map(|p| room(p)).collect();
    let resolve = |path: &str| {
        let parts: Vec<&str> = path.split("::").collect();
        [2, 1]
            .into_iter()
            .map(|n| parts[..n.min(parts.len())].join("::"))
            .find(|candidate| rooms.contains(candidate))
    };
    let test_module = regex::Regex::new(r"#\[cfg\(test\)\]\s*(?:pub )?mod tests").unwrap();
    let absolute =
        regex::Regex::new(r"\b(?:crate|mailmoat)::([a-z_0-9]+(?:::[a-z_0-9]+)?)").unwrap();
    let relative = regex::Regex::new(r"\bsuper::([a-z_0-9]+)").unwrap();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (file, parts) in files.iter().zip(&paths) {
        let text = std::fs::read_to_string(file).unwrap();
        let code = test_module.split(&text).next().unwrap_or_default();
        let code: String = code
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let me = room(parts);
        let parent = &parts[..parts.len().saturating_sub(1)];
        let mut found = Vec::new();
        for m in absolute.captures_iter(&code) {
            found.push(resolve(&m[1]));
        }
        for m in relative.captures_iter(&code) {
            let mut path = parent.to_vec();
            path.push(m[1].to_string());
            found.push(resolve(&path.join("::")));
        }
        for other in found.into_iter().flatten() {
            if other != me {
                edges.entry(me.clone()).or_default().insert(other);
            }
        }
    }
    edges
}

#[test]
fn no_room_imports_a_floor_above_it() {
    let mut up = Vec::new();
    for (from, to) in imports() {
        for target in to {
            let same_module = from.split("::").next() == target.split("::").next();
            if !same_module && floor(&target) < floor(&from) {
                up.push(format!("{from} imports {target}"));
            }
        }
    }
    assert!(
        up.is_empty(),
        "imports that go up a floor:\n{}",
        up.join("\n")
    );
}

#[test]
fn no_rooms_import_each_other_even_through_others() {
    let edges = imports();
    // Every room that can reach itself again is in a circle.
    let mut circles = BTreeSet::new();
    for start in edges.keys() {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<&String> = edges[start].iter().collect();
        while let Some(room) = stack.pop() {
            if room == start {
                circles.insert(start.clone());
                break;
            }
            if seen.insert(room) {
                stack.extend(edges.get(room).into_iter().flatten());
            }
        }
    }
    assert!(
        circles.is_empty(),
        "rooms that import themselves through others: {circles:?}"
    );
}
