//! Man pages made from the documentation that already exists, so they cannot
//! drift from it: `mailmoat(8)` from the command line's own help (clap), with the
//! sections a man page has (exit status, signals, files); `mailmoat.toml(5)`
//! from the example configuration's comments, each key with its own
//! description under it; `mailmoat-rules(5)` from rules/README.md.

const CONFIG: &str = include_str!("../packaging/mailmoat.toml");
const RULES: &str = include_str!("../rules/README.md");

/// Text as roff reads it: backslashes doubled, and a line that would start with
/// a control character (`.` or `'`) guarded.
fn escape(line: &str) -> String {
    let line = line.replace('\\', "\\e");
    if line.starts_with('.') || line.starts_with('\'') {
        format!("\\&{line}")
    } else {
        line
    }
}

fn header(name: &str, section: u8, title: &str) -> String {
    format!(
        ".TH {} {section} \"\" \"mailmoat {}\" \"mailmoat\"\n.SH NAME\n{name} \\- {title}\n",
        name.to_uppercase(),
        env!("CARGO_PKG_VERSION")
    )
}

/// `mailmoat.toml(5)`: every section of the example configuration; each key (or
/// key left commented out) as a tagged paragraph, with the comment above it as
/// its description; comments with no key after them as text. Comment lines
/// that start a list item (indented, or a quoted value) keep their line.
pub fn config_page() -> String {
    let mut out = header("mailmoat.toml", 5, "configuration file of mailmoat");
    out.push_str(
        ".SH DESCRIPTION\nmailmoat reads a TOML file (default /etc/mailmoat/mailmoat.toml; \
         relative paths in it are relative to its folder). Every key has a default; the keys \
         below are shown as the configuration shipped with mailmoat sets them, section by \
         section, each with what it does. Durations are written like \"30s\", \"5m\", \
         \"1h\", \"5d\"; sizes as a number of bytes or like \"10MB\". \
         \\fBmailmoat check\\fR validates a file and prints the effective settings.\n",
    );
    let mut comment: Vec<&str> = Vec::new();
    let mut keys: Vec<&str> = Vec::new();
    // The file's own opening (what it is, how to check it) is the description
    // above; the page starts with the first section.
    let sections = &CONFIG[CONFIG.find("\n[").map_or(0, |at| at + 1)..];
    let flush = |out: &mut String, comment: &mut Vec<&str>, keys: &mut Vec<&str>| {
        if keys.is_empty() {
            if !comment.is_empty() {
                out.push_str(".PP\n");
                push_text(out, comment);
            }
        } else {
            // One tag per key set together (.TQ adds a tag line to the .TP).
            for (n, key) in keys.iter().enumerate() {
                out.push_str(if n == 0 { ".TP\n" } else { ".TQ\n" });
                out.push_str(&format!("\\fB{}\\fR\n", escape(key)));
            }
            push_text(out, comment);
        }
        comment.clear();
        keys.clear();
    };
    for line in sections.lines() {
        let trimmed = line.trim();
        if let Some(section) = trimmed
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .filter(|s| !s.contains('='))
        {
            flush(&mut out, &mut comment, &mut keys);
            out.push_str(&format!(".SH [{}]\n", escape(section)));
        } else if let Some(text) = trimmed.strip_prefix('#') {
            let text = text.strip_prefix(' ').unwrap_or(text);
            if is_key(text) {
                // A key left out of the example: shown as the key it would be.
                keys.push(text);
            } else {
                if !keys.is_empty() {
                    flush(&mut out, &mut comment, &mut keys);
                }
                comment.push(text);
            }
        } else if trimmed.is_empty() {
            flush(&mut out, &mut comment, &mut keys);
        } else {
            keys.push(trimmed);
        }
    }
    flush(&mut out, &mut comment, &mut keys);
    out.push_str(".SH SEE ALSO\n\\fBmailmoat\\fR(8), \\fBmailmoat-rules\\fR(5)\n");
    out
}

/// `key = value`: a line of TOML that sets a key.
fn is_key(text: &str) -> bool {
    let Some((key, _)) = text.split_once(" = ") else {
        return false;
    };
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '"')
}

/// Comment lines as text: filled into a paragraph, but an indented line (a
/// list item) starts a line of its own; one indented deeper than the item
/// before it continues that item.
fn push_text(out: &mut String, lines: &[&str]) {
    let mut item: Option<usize> = None;
    for line in lines {
        if line.trim().is_empty() {
            out.push_str(".sp\n");
            item = None;
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        if indent >= 2 {
            if item.is_none_or(|at| indent <= at) {
                out.push_str(".br\n");
                item = Some(indent);
            }
        } else {
            item = None;
        }
        out.push_str(&escape(line.trim()));
        out.push('\n');
    }
}

/// `mailmoat(8)`: clap's name, synopsis, description and options; every command
/// (and the commands under it) with its own help; then exit status, signals,
/// files and the pages that exist.
pub fn program_page(command: &clap::Command) -> std::io::Result<Vec<u8>> {
    let man = clap_mangen::Man::new(command.clone()).section("8");
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    let mut out = String::from(".SH COMMANDS\n");
    for sub in command.get_subcommands() {
        commands(&mut out, "mailmoat", sub);
    }
    out.push_str(
        ".SH EXIT STATUS\n\
         0 when the command did what it was asked (\\fBcheck\\fR: the configuration and rules \
         are valid; \\fBqueue wait\\fR: the queue settled in time); 1 otherwise, with the \
         reason on standard error.\n\
         .SH SIGNALS\n\
         .TP\n\\fBSIGTERM\\fR, \\fBSIGINT\\fR\n\
         Stop taking connections, let sessions finish for server.shutdown_grace (a message \
         being received is read and queued), then answer 421 4.3.2 to the rest and exit.\n\
         .TP\n\\fBSIGHUP\\fR\n\
         Read the configuration and rules again (as \\fBmailmoat reload\\fR); settings that \
         need a restart are named in the log.\n\
         .SH FILES\n\
         .TP\n/etc/mailmoat/mailmoat.toml\n\
         The configuration (\\fBmailmoat.toml\\fR(5)); \\fB--config\\fR names another.\n\
         .TP\n/etc/mailmoat/rules/\n\
         Rule files (\\fBmailmoat-rules\\fR(5)), reread when they change.\n\
         .TP\n/var/lib/mailmoat/queue/\n\
         The spool: the queue itself, one folder per state; control.sock, through which the \
         commands reach the running server.\n\
         .TP\n/var/lib/mailmoat/store/\n\
         The embedded store: caches, greylisting, the archive's index.\n\
         .TP\n/var/lib/mailmoat/archive/\n\
         Refused, quarantined and discarded messages kept for review.\n\
         .SH SEE ALSO\n\\fBmailmoat.toml\\fR(5), \\fBmailmoat-rules\\fR(5)\n",
    );
    page.extend_from_slice(out.as_bytes());
    man.render_version_section(&mut page)?;
    Ok(page)
}

/// One command as a tagged paragraph (its arguments in the tag), then those
/// under it.
fn commands(out: &mut String, parent: &str, command: &clap::Command) {
    if command.is_hide_set() {
        return;
    }
    let name = format!("{parent} {}", command.get_name());
    let arguments: Vec<String> = command
        .get_arguments()
        .filter(|a| !a.is_hide_set() && !a.is_global_set())
        .map(|a| {
            let value = a
                .get_value_names()
                .and_then(|v| v.first())
                .map(|v| v.to_string())
                .unwrap_or_else(|| a.get_id().to_string().to_uppercase());
            match (a.get_long(), a.is_positional()) {
                (_, true) => format!("\\fI{value}\\fR"),
                (Some(long), _) if a.get_action().takes_values() => {
                    format!("[\\fB--{long}\\fR \\fI{value}\\fR]")
                }
                (Some(long), _) => format!("[\\fB--{long}\\fR]"),
                (None, _) => String::new(),
            }
        })
        .collect();
    let subs: Vec<&clap::Command> = command.get_subcommands().collect();
    if subs.is_empty() {
        out.push_str(&format!(
            ".TP\n\\fB{}\\fR {}\n",
            escape(&name),
            arguments.join(" ")
        ));
        let about = command
            .get_long_about()
            .or(command.get_about())
            .map(|a| a.to_string())
            .unwrap_or_default();
        for line in about.lines() {
            out.push_str(&escape(line.trim()));
            out.push('\n');
        }
    }
    for sub in subs {
        commands(out, &name, sub);
    }
}

/// `mailmoat-rules(5)`: rules/README.md, headings as sections, code and tables
/// as they are.
pub fn rules_page() -> String {
    let mut out = header("mailmoat-rules", 5, "rule files of mailmoat");
    let mut verbatim = false;
    for line in RULES.lines() {
        if line.starts_with("```") {
            out.push_str(if verbatim { ".fi\n" } else { ".PP\n.nf\n" });
            verbatim = !verbatim;
            continue;
        }
        if verbatim {
            out.push_str(&escape(line));
            out.push('\n');
            continue;
        }
        if let Some(title) = line.strip_prefix("# ") {
            out.push_str(&format!(".SH DESCRIPTION\n{}\n", escape(title)));
        } else if let Some(title) = line.strip_prefix("## ") {
            out.push_str(&format!(".SH {}\n", escape(&title.to_uppercase())));
        } else if line.starts_with('|') {
            if line.starts_with("|---") {
                continue;
            }
            let cells: Vec<&str> = line
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().trim_matches('`'))
                .collect();
            out.push_str(&format!(
                ".TP\n{}\n{}\n",
                escape(cells[0]),
                escape(&cells[1..].join("; "))
            ));
        } else if line.trim().is_empty() {
            out.push_str(".PP\n");
        } else {
            out.push_str(&escape(&line.replace('`', "")));
            out.push('\n');
        }
    }
    if verbatim {
        out.push_str(".fi\n");
    }
    out.push_str(".SH SEE ALSO\n\\fBmailmoat\\fR(8), \\fBmailmoat.toml\\fR(5)\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_hold_every_section_and_no_unguarded_control_line() {
        let config = config_page();
        for section in [
            "[server]",
            "[sender_auth]",
            "[greylist]",
            "[antivirus]",
            "[spam]",
            "[metrics]",
        ] {
            assert!(config.contains(&format!(".SH {section}\n")), "{section}");
        }
        let rules = rules_page();
        assert!(rules.contains(".SH ACTIONS\n"), "{rules}");
        for page in [config, rules] {
            for line in page.lines() {
                let request = line
                    .strip_prefix('.')
                    .map(|r| r.split(' ').next().unwrap_or(""));
                assert!(
                    !line.starts_with('\'')
                        && request
                            .is_none_or(|r| ["TH", "SH", "PP", "TP", "TQ", "br", "sp", "nf", "fi"]
                                .contains(&r)),
                    "{line}"
                );
            }
        }
    }
}
