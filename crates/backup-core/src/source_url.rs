//! Which recorded sources a URL names: the rule behind `--source`.
//!
//! A snapshot records its source as a redacted URL
//! (`postgres://repl@db1:5432/?mode=physical`), and users name sources the
//! way they connect to them (`postgresql://postgres@db1/postgres`). Two
//! URLs name the same system when they reach the same server, whatever
//! user, password, scheme alias (`postgresql`/`postgres`,
//! `rediss`/`redis`), default port or order of hosts they spell:
//!
//! - [`selects`] (what `--source` means): same server; the databases are
//!   equal or one of the two names none (a URL without a database names
//!   the whole server, and a whole-server snapshot, such as a physical
//!   base backup, holds every database); and a `mode` the given URL
//!   spells must be the recorded one's.
//! - [`same_source`] (what a backup's parent must be): same server, same
//!   database, same mode.
//!
//! Paths (and `file://` URLs) are compared as they are, without a trailing
//! slash. A URL without a mode has its kind's default (`logical` for
//! PostgreSQL, `rdb` for Redis); as `--source`, it selects every mode.

/// The parts of a source URL that say which system it names.
#[derive(Debug, Clone)]
struct Parsed {
    /// The scheme, aliases folded (`postgres`, `mongodb`, `redis`, ...).
    scheme: String,
    /// `host:port` of every host, lower-case, default ports filled in,
    /// sorted.
    hosts: Vec<String>,
    /// The database (the path without slashes), when there is one.
    database: Option<String>,
    /// `?mode=`, or the kind's default mode when the URL names none
    /// (`None` for kinds without modes).
    mode: Option<String>,
    /// Whether the URL spelled its mode.
    mode_given: bool,
}

/// A source URL's identity, or `None` for paths and `file://` URLs.
fn parse(url: &str) -> Option<Parsed> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme == "file" {
        return None;
    }
    let (family, default_port, default_mode) = match scheme.as_str() {
        "postgres" | "postgresql" => ("postgres", Some(5432), Some("logical")),
        "mongodb" => ("mongodb", Some(27017), None),
        "mongodb+srv" => ("mongodb+srv", None, None),
        "redis" | "rediss" => ("redis", Some(6379), Some("rdb")),
        other => (other, None, None),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let hostlist = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let mut hosts: Vec<String> = hostlist
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|h| {
            let h = h.to_ascii_lowercase();
            // `[::1]:5432`, `[::1]`, `db1:5432`, `db1`.
            let has_port = match h.rfind(']') {
                Some(close) => h[close..].contains(':'),
                None => h.contains(':'),
            };
            match (has_port, default_port) {
                (false, Some(p)) => format!("{h}:{p}"),
                _ => h,
            }
        })
        .collect();
    hosts.sort();
    let tail = tail.split('#').next().unwrap_or("");
    let (path, query) = tail.split_once('?').unwrap_or((tail, ""));
    let database = Some(path.trim_matches('/'))
        .filter(|d| !d.is_empty())
        .map(str::to_owned);
    let given = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| k.eq_ignore_ascii_case("mode"))
        .map(|(_, v)| v.to_ascii_lowercase());
    Some(Parsed {
        scheme: family.to_owned(),
        hosts,
        database,
        mode_given: given.is_some(),
        mode: given.or_else(|| default_mode.map(str::to_owned)),
    })
}

/// Paths compare without a trailing slash.
fn path_form(url: &str) -> &str {
    let p = url.strip_prefix("file://").unwrap_or(url);
    let trimmed = p.trim_end_matches('/');
    if trimmed.is_empty() {
        p
    } else {
        trimmed
    }
}

/// Whether `given` (a URL as a user writes it for `--source`) selects
/// snapshots whose recorded source URL is `recorded`: the same server,
/// databases equal or one of them unnamed, and the given `mode` (if any)
/// the recorded one.
pub fn selects(given: &str, recorded: &str) -> bool {
    match (parse(given), parse(recorded)) {
        (Some(g), Some(r)) => {
            g.scheme == r.scheme
                && g.hosts == r.hosts
                && (!g.mode_given || g.mode == r.mode)
                && match (&g.database, &r.database) {
                    (Some(a), Some(b)) => a == b,
                    _ => true,
                }
        }
        (None, None) => path_form(given) == path_form(recorded),
        _ => false,
    }
}

/// Whether two URLs name the same source exactly: the same server,
/// database and mode, whatever user, password, scheme alias or default
/// port they spell (a backup's parent is a snapshot of the same source).
pub fn same_source(a: &str, b: &str) -> bool {
    match (parse(a), parse(b)) {
        (Some(x), Some(y)) => {
            x.scheme == y.scheme
                && x.hosts == y.hosts
                && x.database == y.database
                && x.mode == y.mode
        }
        (None, None) => path_form(a) == path_form(b),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_url_selects_its_physical_base_whatever_it_spells() {
        let recorded = "postgres://postgres@127.0.0.1:5499/?mode=physical";
        for given in [
            "postgres://postgres@127.0.0.1:5499/postgres",
            "postgresql://127.0.0.1:5499/",
            "postgres://repl:secret@127.0.0.1:5499/?mode=physical",
            "postgres://127.0.0.1:5499/postgres?mode=physical&sslmode=disable",
            "postgres://other@127.0.0.1:5499",
        ] {
            assert!(selects(given, recorded), "{given}");
        }
        for given in [
            "postgres://postgres@127.0.0.1:5498/postgres",
            "postgres://postgres@127.0.0.2:5499/",
            "postgres://postgres@127.0.0.1:5499/postgres?mode=logical",
            "redis://127.0.0.1:5499",
            "/srv/data",
        ] {
            assert!(!selects(given, recorded), "{given}");
        }
    }

    #[test]
    fn databases_select_their_own_snapshots_and_default_ports_and_modes_fold() {
        let shop = "postgres://app@db1:5432/shop";
        assert!(selects("postgresql://db1/shop", shop));
        assert!(selects("postgres://db1/", shop));
        assert!(!selects("postgres://db1/crm", shop));
        assert!(!selects("postgres://db1/shop?mode=physical", shop));
        assert!(selects("redis://cache:6379?mode=rdb", "redis://cache"));
        assert!(selects("rediss://u@cache/2", "redis://cache:6379"));
        assert!(!selects("redis://cache?mode=keys", "redis://cache"));
        assert!(selects(
            "mongodb://b:27017,a/?replicaSet=rs0",
            "mongodb://u@a:27017,b:27017/"
        ));
        assert!(selects("/srv/data/", "/srv/data"));
        assert!(selects("file:///srv/data", "/srv/data"));
        assert!(!selects("/srv/data2", "/srv/data"));
    }

    #[test]
    fn the_same_source_needs_the_same_database_and_mode() {
        assert!(same_source(
            "postgres://repl@db1/?mode=physical",
            "postgresql://postgres@db1:5432/?mode=physical"
        ));
        assert!(!same_source(
            "postgres://db1/?mode=physical",
            "postgres://db1/postgres"
        ));
        assert!(!same_source("redis://cache/2", "redis://cache"));
        assert!(same_source("redis://cache/2", "redis://u:p@CACHE:6379/2"));
        assert!(same_source("/srv/data/", "/srv/data"));
    }
}
