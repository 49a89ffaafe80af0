//! Man pages made from the documentation that already exists, so they cannot
//! drift from it: `mailmoat.toml(5)` from the example configuration's comments,
//! `mailmoat-rules(5)` from rules/README.md. (`mailmoat(8)` comes from the
//! command line's own help, by clap_mangen, in main.rs.)

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

/// `mailmoat.toml(5)`: every section of the example configuration, its comments
/// as text and its keys as examples.
pub fn config_page() -> String {
    let mut out = header("mailmoat.toml", 5, "configuration file of mailmoat");
    out.push_str(
        ".SH DESCRIPTION\nmailmoat reads a TOML file (default /etc/mailmoat/mailmoat.toml). \
         Every key has a default; what follows is the example configuration shipped with \
         mailmoat, section by section. \\fBmailmoat check\\fR validates a file and prints \
         the effective settings.\n",
    );
    let mut in_example = false;
    for line in CONFIG.lines() {
        let trimmed = line.trim();
        if let Some(section) = trimmed
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .filter(|s| !s.contains('='))
        {
            if in_example {
                out.push_str(".fi\n");
                in_example = false;
            }
            out.push_str(&format!(".SH [{}]\n", escape(section)));
        } else if let Some(comment) = trimmed.strip_prefix('#') {
            if in_example {
                out.push_str(".fi\n");
                in_example = false;
            }
            let text = comment.trim();
            if text.is_empty() {
                out.push_str(".PP\n");
            } else {
                out.push_str(&escape(text));
                out.push('\n');
            }
        } else if trimmed.is_empty() {
            if in_example {
                out.push_str(".fi\n");
                in_example = false;
            }
        } else {
            if !in_example {
                out.push_str(".PP\n.nf\n");
                in_example = true;
            }
            out.push_str(&escape(line));
            out.push('\n');
        }
    }
    if in_example {
        out.push_str(".fi\n");
    }
    out.push_str(".SH SEE ALSO\n\\fBmailmoat\\fR(8), \\fBmailmoat-rules\\fR(5)\n");
    out
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
                            .is_none_or(|r| ["TH", "SH", "PP", "TP", "nf", "fi"].contains(&r)),
                    "{line}"
                );
            }
        }
    }
}
