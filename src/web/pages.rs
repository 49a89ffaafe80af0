//! The pages, as compiled templates (askama): every value escaped, no script,
//! readable on a phone. Forms post with the form token in a hidden field
//! named `csrf`.

use askama::Template;

/// The frame of every page.
#[derive(Template)]
#[template(
    ext = "html",
    source = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }} · mailmoat quarantine</title>
<link rel="stylesheet" href="/style.css"></head>
<body><header><strong>mailmoat</strong> quarantine
{% if let Some(who) = who %}<span class="who">{{ who }}</span>
<nav><a href="/">Messages</a> <a href="/lists">Senders</a>{% if admin %} <a href="/requests">Requests</a>{% endif %}
<form method="post" action="/logout" class="inline"><input type="hidden" name="csrf" value="{{ csrf }}"><button>Sign out</button></form></nav>{% endif %}
</header><main><h1>{{ title }}</h1>
{{ body|safe }}
</main></body></html>"#
)]
pub struct Frame<'a> {
    pub title: &'a str,
    pub who: Option<&'a str>,
    pub admin: bool,
    pub csrf: &'a str,
    pub body: &'a str,
}

#[derive(Template)]
#[template(
    ext = "html",
    source = r#"{% if let Some(message) = message %}<p class="note">{{ message }}</p>{% endif %}
<section><h2>Sign in</h2>
<form method="post" action="/login">
<input type="hidden" name="csrf" value="{{ csrf }}">
<label>Name or address <input name="user" autocomplete="username" required></label>
<label>Password <input name="password" type="password" autocomplete="current-password" required></label>
<button>Sign in</button></form></section>
<section><h2>Send me my link</h2>
<p>Enter your address: a link to the mail held for you is sent to it.</p>
<form method="post" action="/send-link">
<input type="hidden" name="csrf" value="{{ csrf }}">
<label>Address <input name="address" type="email" value="{{ address }}" required></label>
<button>Send me my link</button></form></section>"#
)]
pub struct Login<'a> {
    pub message: Option<&'a str>,
    pub csrf: &'a str,
    pub address: &'a str,
}

/// One line of the list of items.
pub struct Row {
    pub id: String,
    pub date: String,
    pub sender: String,
    pub from: String,
    pub subject: String,
    pub why: String,
    pub size: String,
    pub state: String,
}

#[derive(Template)]
#[template(
    ext = "html",
    source = r#"{% if let Some(search) = search %}<form method="get" action="/" class="search">
<input name="id" placeholder="queue id" value="{{ search.id }}">
<input name="sender" placeholder="sender" value="{{ search.sender }}">
<input name="recipient" placeholder="recipient" value="{{ search.recipient }}">
<input name="subject" placeholder="subject" value="{{ search.subject }}">
<input name="check" placeholder="check or rule" value="{{ search.check }}">
<input name="outcome" placeholder="outcome" value="{{ search.outcome }}">
<input name="since" placeholder="since (2h, 2026-12-01)" value="{{ search.since }}">
<input name="until" placeholder="until (1h, 2026-12-01)" value="{{ search.until }}">
<button>Search</button></form>{% endif %}
{% if let Some(problem) = problem %}<p class="note">{{ problem }}</p>{% endif %}
{% if rows.is_empty() %}<p>{{ empty }}</p>{% else %}
<table><thead><tr><th>Date</th><th>Sender</th><th>Subject</th><th>Why</th><th>Size</th><th></th></tr></thead><tbody>
{% for row in rows %}<tr><td>{{ row.date }}</td><td>{{ row.sender }}<br><small>{{ row.from }}</small></td>
<td><a href="/item/{{ row.id }}">{{ row.subject }}</a></td><td>{{ row.why }}</td><td>{{ row.size }}</td><td>{{ row.state }}</td></tr>
{% endfor %}</tbody></table>{% endif %}"#
)]
pub struct Items<'a> {
    pub rows: &'a [Row],
    /// The administrators' search form, as it was sent.
    pub search: Option<&'a crate::web::Search>,
    /// What an empty list says.
    pub empty: &'a str,
    /// What in the search could not be read.
    pub problem: Option<&'a str>,
}

#[derive(Template)]
#[template(
    ext = "html",
    source = r#"<form method="post" action="/item/{{ row.id }}" class="actions"><input type="hidden" name="csrf" value="{{ csrf }}">
{% if can_release %}<button name="action" value="release">Release</button>
{% if has_sender %}<button name="action" value="release-allow">Release and allow sender</button>{% endif %}{% endif %}
{% if must_request %}<button name="action" value="request">Ask for release</button>{% endif %}
{% if approvable %}<button name="action" value="approve">Approve release</button>
<button name="action" value="decline">Decline release</button>{% endif %}
{% if has_sender %}<button name="action" value="allow">Allow sender</button>
<button name="action" value="block">Block sender</button>{% endif %}
<button name="action" value="delete">Delete</button></form>
<dl><dt>Date</dt><dd>{{ row.date }}</dd><dt>Envelope sender</dt><dd>{{ row.sender }}</dd>
<dt>From</dt><dd>{{ row.from }}</dd><dt>To</dt><dd>{{ recipients }}</dd><dt>Subject</dt><dd>{{ row.subject }}</dd>
<dt>Why</dt><dd>{{ row.why }}</dd><dt>Reply given</dt><dd>{{ reply }}</dd><dt>Size</dt><dd>{{ row.size }}</dd><dt>State</dt><dd>{{ row.state }}</dd></dl>
{% if must_request %}<p class="note">{{ danger }}: only an administrator can release it. Ask, and they decide.</p>{% endif %}
<h2>Text</h2><pre class="preview">{{ preview }}</pre>
{% if !history.is_empty() %}<h2>History</h2><ul>{% for line in history %}<li>{{ line }}</li>{% endfor %}</ul>{% endif %}"#
)]
pub struct Item<'a> {
    pub row: &'a Row,
    pub recipients: String,
    pub reply: &'a str,
    pub csrf: &'a str,
    pub can_release: bool,
    pub must_request: bool,
    pub approvable: bool,
    pub has_sender: bool,
    pub danger: &'a str,
    pub preview: &'a str,
    pub history: Vec<String>,
}

/// A link's page: what it will do, and the button that does it (a link
/// scanner fetching the link changes nothing).
#[derive(Template)]
#[template(
    ext = "html",
    source = r#"<p>{{ what }}</p>
<form method="post" action="/link"><input type="hidden" name="t" value="{{ token }}">
<input type="hidden" name="csrf" value="{{ csrf }}"><button>{{ button }}</button></form>"#
)]
pub struct Confirm<'a> {
    pub what: &'a str,
    pub token: &'a str,
    pub csrf: &'a str,
    pub button: &'a str,
}

/// A sentence, and where to go next.
#[derive(Template)]
#[template(
    ext = "html",
    source = r#"<p class="note">{{ text }}</p>{% if let Some(address) = offer_link %}
<form method="post" action="/send-link"><input type="hidden" name="csrf" value="{{ csrf }}">
<input type="hidden" name="address" value="{{ address }}"><button>Send me a new link</button></form>{% endif %}
<p><a href="/">Back</a></p>"#
)]
pub struct Notice<'a> {
    pub text: &'a str,
    pub offer_link: Option<&'a str>,
    pub csrf: &'a str,
}

pub struct ListLine {
    pub owner: String,
    pub sender: String,
    pub kind: String,
    pub added: String,
}

#[derive(Template)]
#[template(
    ext = "html",
    source = r#"<p>{{ explain }}</p>
{% if lines.is_empty() %}<p>No senders listed.</p>{% else %}<table><thead><tr><th>Sender</th><th>List</th><th>For</th><th>Added</th><th></th></tr></thead><tbody>
{% for line in lines %}<tr><td>{{ line.sender }}</td><td>{{ line.kind }}</td><td>{{ line.owner }}</td><td>{{ line.added }}</td>
<td><form method="post" action="/lists"><input type="hidden" name="csrf" value="{{ csrf }}"><input type="hidden" name="owner" value="{{ line.owner }}">
<input type="hidden" name="sender" value="{{ line.sender }}"><button name="action" value="remove">Remove</button></form></td></tr>
{% endfor %}</tbody></table>{% endif %}
<form method="post" action="/lists"><input type="hidden" name="csrf" value="{{ csrf }}">
<label>Sender address or domain <input name="sender" required></label>
<button name="action" value="allow">Allow</button> <button name="action" value="block">Block</button></form>"#
)]
pub struct Lists<'a> {
    pub explain: &'a str,
    pub lines: &'a [ListLine],
    pub csrf: &'a str,
}

/// One item of a digest.
pub struct DigestLine {
    pub date: String,
    pub sender: String,
    pub subject: String,
    pub why: String,
    /// "Release", "Ask for release", or empty (nothing was kept to release).
    pub label: &'static str,
    pub href: String,
}

/// The HTML part of a digest (the text part says the same).
#[derive(Template)]
#[template(
    ext = "html",
    source = r#"<html><body><p>{{ lines.len() }} message(s) addressed to {{ recipient }} were held or refused since your last digest. <a href="{{ open }}">Open your quarantine</a>.</p><table>
{% for line in lines %}<tr><td>{{ line.date }}</td><td>{{ line.sender }}</td><td>{{ line.subject }}</td><td>{{ line.why }}</td><td>{% if !line.label.is_empty() %}<a href="{{ line.href }}">{{ line.label }}</a>{% endif %}</td></tr>
{% endfor %}</table><p>A link opens a page that asks before anything is done.</p></body></html>"#
)]
pub struct Digest<'a> {
    pub recipient: &'a str,
    pub open: &'a str,
    pub lines: &'a [DigestLine],
}

pub const STYLE: &str = "body{font:16px/1.4 system-ui,sans-serif;margin:0;color:#222}\
header{background:#234;color:#fff;padding:.6em 1em;display:flex;flex-wrap:wrap;gap:1em;align-items:center}\
header a{color:#fff;margin-right:.8em}.who{opacity:.8}main{padding:1em;max-width:70em}\
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:.4em;text-align:left;vertical-align:top}\
label{display:block;margin:.4em 0}input{font:inherit;padding:.3em;max-width:100%}\
button{font:inherit;padding:.35em .8em;margin:.2em .2em .2em 0;cursor:pointer}\
.inline{display:inline}.note{background:#fff6d6;padding:.6em;border-left:4px solid #e6b800}\
.preview{white-space:pre-wrap;background:#f6f6f6;padding:.8em;max-height:30em;overflow:auto}\
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2em 1em}dt{font-weight:bold}dd{margin:0}.search input{width:9em}\
@media (max-width:40em){td,th{display:block}thead{display:none}}";
