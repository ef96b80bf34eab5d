//! Reading `pg_dump` plain-format scripts: statements split with SQL's
//! quoting rules, grouped into the archive entries that `pg_dump`'s
//! `-- Name: ...; Type: ...` headers announce, plus the relations each
//! entry refers to (for selective restores).

use std::collections::BTreeSet;

use backup_core::{Error, Result};

/// One statement of a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Statement {
    /// SQL text, including the terminating `;`.
    Sql(String),
    /// `COPY ... FROM stdin;` followed by its data (without the `\.` line).
    CopyIn { sql: String, data: String },
    /// A psql meta-command line such as `\restrict KEY`.
    Meta(String),
}

/// An archive entry: a header and its statements.
#[derive(Debug, Clone, Default)]
pub(crate) struct Entry {
    /// The `Name:` of the header (for example `accounts` or `TABLE accounts`).
    pub(crate) name: String,
    /// The `Type:` (for example `TABLE`, `INDEX`, `FK CONSTRAINT`).
    pub(crate) kind: String,
    /// The `Schema:` (empty for `-`).
    pub(crate) schema: String,
    pub(crate) statements: Vec<Statement>,
}

impl Entry {
    /// `schema.name`, or the name alone for an object outside a schema.
    pub(crate) fn label(&self) -> String {
        if self.schema.is_empty() {
            self.name.clone()
        } else {
            format!("{}.{}", self.schema, self.name)
        }
    }

    /// Qualified two-part names that appear outside strings and comments,
    /// unquoted and case-folded as PostgreSQL reads them.
    pub(crate) fn qualified_names(&self) -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        for s in &self.statements {
            let sql = match s {
                Statement::Sql(t) | Statement::CopyIn { sql: t, .. } => t,
                Statement::Meta(_) => continue,
            };
            let toks = tokens(sql);
            for w in toks.windows(3) {
                if let (Tok::Ident(a), Tok::Dot, Tok::Ident(b)) = (&w[0], &w[1], &w[2]) {
                    out.insert((a.clone(), b.clone()));
                }
            }
        }
        out
    }

    /// The SQL of the entry as one text (for executing as one batch).
    pub(crate) fn sql_text(&self) -> String {
        let mut out = String::new();
        for s in &self.statements {
            if let Statement::Sql(t) = s {
                out.push_str(t);
                out.push('\n');
            }
        }
        out
    }
}

/// A parsed script: statements before the first entry (session settings)
/// and the entries.
#[derive(Debug, Clone, Default)]
pub(crate) struct Script {
    pub(crate) preamble: Vec<Statement>,
    pub(crate) entries: Vec<Entry>,
}

impl Script {
    /// Parses a plain-format script.
    pub(crate) fn parse(text: &str) -> Result<Self> {
        let mut script = Script::default();
        let mut current: Option<Entry> = None;
        let mut lexer = Lexer::new(text);
        while let Some(item) = lexer.next_item()? {
            match item {
                Item::Header(mut h) => {
                    if let Some(mut e) = current.take() {
                        // pg_dump writes the settings an entry needs
                        // (`SET default_tablespace`, `SET
                        // default_table_access_method`, ...) before the
                        // entry's header: they belong to the next entry.
                        let mut carried = Vec::new();
                        while e.statements.last().is_some_and(is_entry_selector) {
                            carried.extend(e.statements.pop());
                        }
                        carried.reverse();
                        h.statements = carried;
                        script.entries.push(e);
                    }
                    current = Some(h);
                }
                Item::Statement(s) => match current.as_mut() {
                    Some(e) => e.statements.push(s),
                    None => script.preamble.push(s),
                },
            }
        }
        if let Some(e) = current.take() {
            script.entries.push(e);
        }
        Ok(script)
    }

    /// `SET` and `set_config` statements of the preamble: the session state
    /// every connection running part of the script needs.
    pub(crate) fn session_settings(&self) -> Vec<String> {
        self.preamble
            .iter()
            .filter_map(|s| match s {
                Statement::Sql(t) if is_session_setting(t) => Some(t.clone()),
                _ => None,
            })
            .collect()
    }
}

/// Whether a statement only changes session state (safe to repeat on
/// every connection). `client_encoding` is left out: our connections
/// always talk UTF-8 (`pg_dump` is run with `--encoding=UTF8`).
pub(crate) fn is_session_setting(sql: &str) -> bool {
    let t = sql.trim_start();
    let lower = t.to_ascii_lowercase();
    if lower.starts_with("set client_encoding") {
        return false;
    }
    (lower.starts_with("set ") && !lower.starts_with("set session authorization"))
        || lower.starts_with("select pg_catalog.set_config(")
}

/// A statement `pg_dump` writes before an entry's header to set up for it:
/// a session setting (tablespace, table access method, search path) or a
/// change of session user.
fn is_entry_selector(s: &Statement) -> bool {
    let Statement::Sql(sql) = s else {
        return false;
    };
    let l = sql.trim_start().to_ascii_lowercase();
    (l.starts_with("set ") && !l.starts_with("set client_encoding"))
        || l.starts_with("reset session authorization")
}

enum Item {
    Header(Entry),
    Statement(Statement),
}

struct Lexer<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn new(text: &'a str) -> Self {
        Lexer { text, pos: 0 }
    }

    fn rest(&self) -> &'a str {
        &self.text[self.pos..]
    }

    /// Skips blank space and comments between statements; returns a header
    /// when one was found.
    fn next_item(&mut self) -> Result<Option<Item>> {
        loop {
            let rest = self.rest();
            let trimmed = rest.trim_start();
            self.pos += rest.len() - trimmed.len();
            if trimmed.is_empty() {
                return Ok(None);
            }
            if trimmed.starts_with("--") {
                let line_end = trimmed.find('\n').map_or(trimmed.len(), |i| i + 1);
                let line = &trimmed[..line_end];
                self.pos += line_end;
                if let Some(h) = parse_header(line) {
                    return Ok(Some(Item::Header(h)));
                }
                continue;
            }
            if trimmed.starts_with("/*") {
                let end = skip_block_comment(trimmed.as_bytes(), 0);
                self.pos += end;
                continue;
            }
            if trimmed.starts_with('\\') {
                let line_end = trimmed.find('\n').map_or(trimmed.len(), |i| i + 1);
                let line = trimmed[..line_end].trim_end().to_owned();
                self.pos += line_end;
                return Ok(Some(Item::Statement(Statement::Meta(line))));
            }
            let len = statement_len(trimmed.as_bytes()).ok_or_else(|| {
                Error::corrupt(
                    backup_core::FileKind::Pack,
                    "schema script",
                    format!(
                        "unterminated statement starting with `{}`",
                        trimmed.chars().take(60).collect::<String>()
                    ),
                )
            })?;
            let sql = trimmed[..len].to_owned();
            self.pos += len;
            if is_copy_from_stdin(&sql) {
                // The data runs from the next line to a line `\.`.
                let rest = self.rest();
                let start = rest.find('\n').map_or(rest.len(), |i| i + 1);
                let body = &rest[start..];
                let mut offset = 0;
                let mut end = None;
                for line in body.split_inclusive('\n') {
                    if line.trim_end_matches(['\n', '\r']) == "\\." {
                        end = Some((offset, offset + line.len()));
                        break;
                    }
                    offset += line.len();
                }
                let (data_end, skip) = end.ok_or_else(|| {
                    Error::corrupt(
                        backup_core::FileKind::Pack,
                        "schema script",
                        "COPY data without its terminating `\\.` line",
                    )
                })?;
                let data = body[..data_end].to_owned();
                self.pos += start + skip;
                return Ok(Some(Item::Statement(Statement::CopyIn { sql, data })));
            }
            return Ok(Some(Item::Statement(Statement::Sql(sql))));
        }
    }
}

fn is_copy_from_stdin(sql: &str) -> bool {
    let lower = sql.to_ascii_lowercase();
    lower.trim_start().starts_with("copy ") && lower.trim_end().ends_with("from stdin;")
}

/// `-- Name: x; Type: T; Schema: s; Owner: o` (also `Data for Name:`).
fn parse_header(line: &str) -> Option<Entry> {
    let body = line.trim_end().strip_prefix("-- ")?;
    let body = body
        .strip_prefix("Data for Name: ")
        .or_else(|| body.strip_prefix("Name: "))?;
    // The name may itself contain "; ", so split from the right on the
    // known keys.
    let type_at = body.rfind("; Type: ")?;
    let name = &body[..type_at];
    let after = &body[type_at + "; Type: ".len()..];
    let (kind, after) = after.split_once("; Schema: ")?;
    let schema = after.split_once("; ").map_or(after, |(s, _)| s);
    Some(Entry {
        name: name.to_owned(),
        kind: kind.to_owned(),
        schema: if schema == "-" {
            String::new()
        } else {
            schema.to_owned()
        },
        statements: Vec::new(),
    })
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

/// End of a block comment starting at `i` (`/*`, nesting allowed).
fn skip_block_comment(b: &[u8], i: usize) -> usize {
    let mut depth = 0;
    let mut j = i;
    while j < b.len() {
        if b[j] == b'/' && b.get(j + 1) == Some(&b'*') {
            depth += 1;
            j += 2;
        } else if b[j] == b'*' && b.get(j + 1) == Some(&b'/') {
            depth -= 1;
            j += 2;
            if depth == 0 {
                return j;
            }
        } else {
            j += 1;
        }
    }
    b.len()
}

/// The dollar-quote tag starting at `i` (`$tag$`), if any.
fn dollar_tag(b: &[u8], i: usize) -> Option<usize> {
    if i > 0 && is_ident_byte(b[i - 1]) {
        return None;
    }
    let mut j = i + 1;
    if j < b.len() && b[j].is_ascii_digit() {
        return None;
    }
    while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_' || b[j] >= 0x80) {
        j += 1;
    }
    (j < b.len() && b[j] == b'$').then_some(j + 1 - i)
}

/// Length of the statement at the start of `b`, through its `;`; `None`
/// when the text ends inside a quote.
fn statement_len(b: &[u8]) -> Option<usize> {
    let mut i = 0;
    let mut parens = 0i32;
    // Like psql: in CREATE FUNCTION/PROCEDURE, `BEGIN ATOMIC ... END`
    // bodies (and CASE ... END inside them) may hold semicolons.
    let mut words: Vec<String> = Vec::new();
    let mut begin_depth = 0i32;
    while i < b.len() {
        match b[i] {
            b';' if parens <= 0 && begin_depth <= 0 => return Some(i + 1),
            c if is_ident_byte(c)
                && !c.is_ascii_digit()
                && (i == 0 || !is_ident_byte(b[i - 1])) =>
            {
                let start = i;
                while i < b.len() && (is_ident_byte(b[i]) || b[i] == b'$') {
                    i += 1;
                }
                let w = String::from_utf8_lossy(&b[start..i]).to_ascii_lowercase();
                if words.len() < 4 {
                    words.push(w.clone());
                }
                let routine = words.first().is_some_and(|f| f == "create")
                    && words
                        .iter()
                        .skip(1)
                        .take(3)
                        .any(|x| x == "function" || x == "procedure");
                if routine && words.len() > 1 {
                    if w == "begin" || w == "case" {
                        begin_depth += 1;
                    } else if w == "end" && begin_depth > 0 {
                        begin_depth -= 1;
                    }
                }
            }
            b'(' => {
                parens += 1;
                i += 1;
            }
            b')' => {
                parens -= 1;
                i += 1;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => i = skip_block_comment(b, i),
            b'\'' => {
                let escapes = i > 0
                    && (b[i - 1] == b'E' || b[i - 1] == b'e')
                    && (i < 2 || !is_ident_byte(b[i - 2]));
                i = skip_string(b, i, escapes)?;
            }
            b'"' => {
                i += 1;
                loop {
                    if i >= b.len() {
                        return None;
                    }
                    if b[i] == b'"' {
                        if b.get(i + 1) == Some(&b'"') {
                            i += 2;
                            continue;
                        }
                        i += 1;
                        break;
                    }
                    i += 1;
                }
            }
            b'$' => {
                if let Some(len) = dollar_tag(b, i) {
                    let tag = &b[i..i + len];
                    let body = i + len;
                    let end = find(&b[body..], tag)?;
                    i = body + end + len;
                } else {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    // A last statement without `;` (not produced by pg_dump).
    (!String::from_utf8_lossy(b).trim().is_empty()).then_some(b.len())
}

fn skip_string(b: &[u8], start: usize, escapes: bool) -> Option<usize> {
    let mut i = start + 1;
    while i < b.len() {
        match b[i] {
            b'\\' if escapes => i += 2,
            b'\'' => {
                if b.get(i + 1) == Some(&b'\'') {
                    i += 2;
                } else {
                    return Some(i + 1);
                }
            }
            _ => i += 1,
        }
    }
    None
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Tokens of SQL text, enough to find qualified names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tok {
    Ident(String),
    Dot,
    Comma,
    Other,
}

/// Tokenizes SQL: identifiers (quoted ones unquoted, plain ones folded
/// to lower case), dots, and everything else as `Other`; strings and
/// comments are skipped.
pub(crate) fn tokens(sql: &str) -> Vec<Tok> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'-' && b.get(i + 1) == Some(&b'-') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            i = skip_block_comment(b, i);
        } else if c == b'\'' {
            let escapes = matches!(out.last(), Some(Tok::Ident(s)) if s == "e")
                && i > 0
                && (b[i - 1] == b'E' || b[i - 1] == b'e');
            if escapes {
                out.pop();
            }
            i = skip_string(b, i, escapes).unwrap_or(b.len());
            out.push(Tok::Other);
        } else if c == b'"' {
            let mut s = Vec::new();
            i += 1;
            while i < b.len() {
                if b[i] == b'"' {
                    if b.get(i + 1) == Some(&b'"') {
                        s.push(b'"');
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                s.push(b[i]);
                i += 1;
            }
            out.push(Tok::Ident(String::from_utf8_lossy(&s).into_owned()));
        } else if c == b'$' {
            if let Some(len) = dollar_tag(b, i) {
                let tag = &b[i..i + len];
                let body = i + len;
                i = find(&b[body..], tag).map_or(b.len(), |e| body + e + len);
                out.push(Tok::Other);
            } else {
                i += 1;
                out.push(Tok::Other);
            }
        } else if c == b'.' {
            out.push(Tok::Dot);
            i += 1;
        } else if c == b',' {
            out.push(Tok::Comma);
            i += 1;
        } else if is_ident_byte(c) && !c.is_ascii_digit() {
            let start = i;
            while i < b.len() && (is_ident_byte(b[i]) || b[i] == b'$') {
                i += 1;
            }
            out.push(Tok::Ident(
                String::from_utf8_lossy(&b[start..i]).to_lowercase(),
            ));
        } else if c.is_ascii_digit() {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.' || b[i] == b'_') {
                i += 1;
            }
            out.push(Tok::Other);
        } else {
            i += 1;
            out.push(Tok::Other);
        }
    }
    out
}

/// Names that stand for no role in the places a role is named.
const NOT_ROLES: [&str; 5] = [
    "public",
    "current_user",
    "session_user",
    "current_role",
    "user",
];

/// The roles a statement names: `OWNER TO r`, the grantees of `GRANT ...
/// TO` and `REVOKE ... FROM`, `GRANTED BY r`, the roles of `CREATE|ALTER
/// POLICY ... TO`, `ALTER DEFAULT PRIVILEGES FOR ROLE r`, `SET SESSION
/// AUTHORIZATION r` and `CREATE USER MAPPING FOR r`. `PUBLIC` and
/// `CURRENT_USER`-like keywords are not roles.
pub(crate) fn roles_named(sql: &str) -> Vec<String> {
    let toks = tokens(sql);
    let word = |i: usize| match toks.get(i) {
        Some(Tok::Ident(w)) => Some(w.as_str()),
        _ => None,
    };
    let mut out: Vec<String> = Vec::new();
    // A comma-separated list of role names starting at `i`.
    let list = |mut i: usize, out: &mut Vec<String>| {
        while let Some(Tok::Ident(name)) = toks.get(i) {
            out.push(name.clone());
            if toks.get(i + 1) == Some(&Tok::Comma) {
                i += 2;
            } else {
                break;
            }
        }
    };
    let first = word(0).unwrap_or("");
    let second = word(1).unwrap_or("");
    match (first, second) {
        ("set", "session") if word(2) == Some("authorization") => list(3, &mut out),
        ("create", "user") if word(2) == Some("mapping") && word(3) == Some("for") => {
            list(4, &mut out);
        }
        ("create" | "alter", "policy") => {
            if let Some(to) = (2..toks.len()).find(|&i| word(i) == Some("to")) {
                list(to + 1, &mut out);
            }
        }
        _ => {}
    }
    if first == "alter" && second == "default" {
        // ALTER DEFAULT PRIVILEGES FOR ROLE a, b [IN SCHEMA s] GRANT ... TO r
        if let Some(at) = (2..toks.len())
            .find(|&i| word(i) == Some("for") && matches!(word(i + 1), Some("role" | "user")))
        {
            list(at + 2, &mut out);
        }
    }
    let grant = (0..toks.len()).find(|&i| matches!(word(i), Some("grant" | "revoke")));
    if let Some(g) = grant.filter(|&g| g == 0 || (first == "alter" && second == "default")) {
        let keyword = if word(g) == Some("grant") {
            "to"
        } else {
            "from"
        };
        if let Some(at) = (g + 1..toks.len()).find(|&i| word(i) == Some(keyword)) {
            list(at + 1, &mut out);
        }
        if let Some(at) =
            (g + 1..toks.len()).find(|&i| word(i) == Some("granted") && word(i + 1) == Some("by"))
        {
            list(at + 2, &mut out);
        }
    }
    for w in toks.windows(3) {
        if let [Tok::Ident(a), Tok::Ident(b), Tok::Ident(r)] = w {
            if a == "owner" && b == "to" {
                out.push(r.clone());
            }
        }
    }
    out.retain(|r| !NOT_ROLES.contains(&r.as_str()));
    out.sort();
    out.dedup();
    out
}

/// Quotes an identifier for SQL.
pub(crate) fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quotes a string literal for SQL (standard conforming strings).
pub(crate) fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRIPT: &str = r#"--
-- PostgreSQL database dump
--

\restrict abc123

SET statement_timeout = 0;
SET client_encoding = 'UTF8';
SELECT pg_catalog.set_config('search_path', '', false);

--
-- Name: f(integer); Type: FUNCTION; Schema: public; Owner: postgres
--

CREATE FUNCTION public.f(x integer) RETURNS integer
    LANGUAGE plpgsql
    AS $_$ begin return x; /* ; */ end; $_$;

--
-- Name: Weird; Name; Type: TABLE; Schema: Mixed Case; Owner: postgres
--

CREATE TABLE "Mixed Case"."Weird; Name" (
    "a;b" text DEFAULT 'x;y''z' NOT NULL,
    c text DEFAULT E'\';' -- comment ; here
);
COMMENT ON TABLE "Mixed Case"."Weird; Name" IS 'semi; colon';

--
-- Data for Name: t; Type: TABLE DATA; Schema: public; Owner: postgres
--

COPY public.t (a) FROM stdin;
1;2
\.

--
-- Name: v; Type: VIEW; Schema: public; Owner: postgres
--

CREATE VIEW public.v AS
 SELECT t.a FROM public.t;

\unrestrict abc123
"#;

    #[test]
    fn roles_named_by_statements() {
        let r = |sql: &str| roles_named(sql);
        assert_eq!(r("ALTER TABLE public.t OWNER TO app;"), ["app"]);
        assert_eq!(
            r("GRANT SELECT ON TABLE public.t TO reporting, \"Mixed Role\";"),
            ["Mixed Role", "reporting"]
        );
        assert_eq!(
            r("REVOKE ALL ON TABLE public.t FROM PUBLIC;"),
            Vec::<String>::new()
        );
        assert_eq!(
            r("REVOKE ALL ON SCHEMA s FROM app GRANTED BY boss;"),
            ["app", "boss"]
        );
        assert_eq!(
            r("CREATE POLICY p ON public.t FOR SELECT TO reader, writer USING ((owner = CURRENT_USER));"),
            ["reader", "writer"]
        );
        assert_eq!(
            r("ALTER DEFAULT PRIVILEGES FOR ROLE app IN SCHEMA s GRANT SELECT ON TABLES TO reader;"),
            ["app", "reader"]
        );
        assert_eq!(r("SET SESSION AUTHORIZATION grantor;"), ["grantor"]);
        assert_eq!(
            r("CREATE USER MAPPING FOR app SERVER s OPTIONS (user 'x');"),
            ["app"]
        );
        assert_eq!(
            r("CREATE USER MAPPING FOR public SERVER s;"),
            Vec::<String>::new()
        );
        assert_eq!(
            r("CREATE TABLE public.t (owner text, \"to\" int);"),
            Vec::<String>::new()
        );
        assert_eq!(
            r("COMMENT ON TABLE public.t IS 'GRANT x TO y';"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn settings_before_a_header_belong_to_its_entry() {
        let text = "--\n-- Name: a; Type: INDEX; Schema: s; Owner: o\n--\n\nCREATE INDEX a ON s.t (x);\n\n\
            SET default_tablespace = space;\n\n--\n-- Name: b; Type: INDEX; Schema: s; Owner: o; Tablespace: space\n--\n\n\
            CREATE INDEX b ON s.t (y);\n\nSET default_tablespace = '';\n\n--\n-- Name: c; Type: INDEX; Schema: s; Owner: o\n--\n\nCREATE INDEX c ON s.t (z);\n";
        let s = Script::parse(text).unwrap();
        assert_eq!(s.entries[0].statements.len(), 1);
        assert_eq!(
            s.entries[1].statements,
            vec![
                Statement::Sql("SET default_tablespace = space;".into()),
                Statement::Sql("CREATE INDEX b ON s.t (y);".into())
            ]
        );
        assert_eq!(
            s.entries[2].statements[0],
            Statement::Sql("SET default_tablespace = '';".into())
        );
    }

    #[test]
    fn begin_atomic_bodies() {
        let sql = "CREATE FUNCTION public.g() RETURNS integer\n    LANGUAGE sql\n    BEGIN ATOMIC\n SELECT CASE WHEN true THEN 1 ELSE 2 END;\n SELECT 3;\nEND;\nSELECT 4;";
        let s = Script::parse(sql).unwrap();
        assert_eq!(s.preamble.len(), 2, "{:?}", s.preamble);
        assert_eq!(s.preamble[1], Statement::Sql("SELECT 4;".into()));
    }

    #[test]
    fn splits_entries_and_statements() {
        let s = Script::parse(SCRIPT).unwrap();
        assert_eq!(s.preamble.len(), 4, "{:?}", s.preamble);
        assert_eq!(s.preamble[0], Statement::Meta("\\restrict abc123".into()));
        assert_eq!(
            s.session_settings(),
            vec![
                "SET statement_timeout = 0;".to_owned(),
                "SELECT pg_catalog.set_config('search_path', '', false);".to_owned()
            ]
        );
        assert_eq!(s.entries.len(), 4);
        let f = &s.entries[0];
        assert_eq!((f.kind.as_str(), f.schema.as_str()), ("FUNCTION", "public"));
        assert_eq!(f.statements.len(), 1);
        let t = &s.entries[1];
        assert_eq!(t.name, "Weird; Name");
        assert_eq!(t.schema, "Mixed Case");
        assert_eq!(t.statements.len(), 2);
        assert!(t
            .qualified_names()
            .contains(&("Mixed Case".to_owned(), "Weird; Name".to_owned())));
        match &s.entries[2].statements[0] {
            Statement::CopyIn { sql, data } => {
                assert!(sql.starts_with("COPY public.t"));
                assert_eq!(data, "1;2\n");
            }
            other => panic!("{other:?}"),
        }
        let v = &s.entries[3];
        assert_eq!(v.kind, "VIEW");
        assert_eq!(v.statements.len(), 2);
        assert_eq!(
            v.statements[1],
            Statement::Meta("\\unrestrict abc123".into())
        );
        let names = v.qualified_names();
        assert!(names.contains(&("public".to_owned(), "t".to_owned())));
        assert!(names.contains(&("public".to_owned(), "v".to_owned())));
    }
}
