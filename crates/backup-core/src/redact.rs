//! Removing credentials from URLs before they reach a message, a log, a
//! manifest or the audit trail: the one redaction of the workspace.

/// Query parameters whose values are credentials.
const SECRET_PARAMS: [&str; 8] = [
    "password",
    "pass",
    "passwd",
    "sslpassword",
    "secret",
    "token",
    "access_token",
    "auth_token",
];

/// `url` with its password and credential query parameters replaced by
/// `***`: `scheme://user:***@host/path?password=***`. The user name
/// stays (it is not a secret and says which account failed); strings
/// without `://` (paths) are returned unchanged. Works on strings that do
/// not parse as URLs, so it can be used in the error about them.
pub fn redact_url(url: &str) -> String {
    redact(url, false)
}

/// Like [`redact_url`], but the whole user information goes: for URLs
/// whose user part is itself a credential (the access key id of
/// `s3://KEY:SECRET@bucket`).
pub fn redact_userinfo(url: &str) -> String {
    redact(url, true)
}

fn redact(url: &str, drop_user: bool) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((_, host)) if drop_user => host.to_owned(),
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    format!("{scheme}://{authority}{}", redact_query(tail))
}

/// Whether `url` carries a password in its user information or query.
pub fn has_password(url: &str) -> bool {
    redact_url(url) != url
}

fn redact_query(tail: &str) -> String {
    let Some((path, rest)) = tail.split_once('?') else {
        return tail.to_owned();
    };
    let (query, fragment) = match rest.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (rest, None),
    };
    let params: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if SECRET_PARAMS.iter().any(|s| k.eq_ignore_ascii_case(s)) => {
                format!("{k}=***")
            }
            _ => kv.to_owned(),
        })
        .collect();
    let mut out = format!("{path}?{}", params.join("&"));
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_go_users_stay() {
        assert_eq!(
            redact_url("mongodb://u:secret@h1:27017,h2/db?replicaSet=rs"),
            "mongodb://u:***@h1:27017,h2/db?replicaSet=rs"
        );
        assert_eq!(redact_url("mongodb://h/db"), "mongodb://h/db");
        assert_eq!(
            redact_url("mongodb+srv://u@c.example.net"),
            "mongodb+srv://u@c.example.net"
        );
        assert_eq!(
            redact_url("postgres://app:pw@db1:5432/shop?sslmode=require&password=x"),
            "postgres://app:***@db1:5432/shop?sslmode=require&password=***"
        );
        assert_eq!(
            redact_url("redis://:pw@cache:6379/2"),
            "redis://:***@cache:6379/2"
        );
        assert_eq!(redact_url("ftp://host/x@y"), "ftp://host/x@y");
        assert_eq!(redact_url("/srv/data"), "/srv/data");
        assert_eq!(
            redact_url("s3://b/p?token=abc#frag"),
            "s3://b/p?token=***#frag"
        );
        assert_eq!(redact_userinfo("s3://KEY:s3cr3t@bucket/p"), "s3://bucket/p");
        assert_eq!(redact_userinfo("s3://key-only@bucket/p"), "s3://bucket/p");
        assert!(has_password("redis://:pw@h"));
        assert!(!has_password("redis://h:1"));
    }
}
