//! Key patterns in Redis's glob syntax (the syntax of `KEYS`, `SCAN
//! MATCH` and `--include`/`--exclude` for Redis): `*` any run of bytes,
//! `?` one byte, `[abc]`, `[^abc]`, `[a-z]` classes, `\` escapes the next
//! byte. Matching is on bytes, so binary keys work.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Whether `key` matches `pattern`.
pub fn glob_match(pattern: &[u8], key: &[u8]) -> bool {
    let (mut p, mut k) = (0usize, 0usize);
    // Where to resume after the last `*`: pattern position after it, and
    // the key position it is currently assumed to cover up to.
    let mut star: Option<(usize, usize)> = None;
    while k < key.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    while p < pattern.len() && pattern[p] == b'*' {
                        p += 1;
                    }
                    if p == pattern.len() {
                        return true;
                    }
                    star = Some((p, k));
                    continue;
                }
                b'?' => {
                    p += 1;
                    k += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = class(pattern, p, key[k]) {
                        if matched {
                            p = next;
                            k += 1;
                            continue;
                        }
                    } else if key[k] == b'[' {
                        // An unclosed class matches a literal `[`.
                        p += 1;
                        k += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pattern.len() => {
                    if pattern[p + 1] == key[k] {
                        p += 2;
                        k += 1;
                        continue;
                    }
                }
                c => {
                    if c == key[k] {
                        p += 1;
                        k += 1;
                        continue;
                    }
                }
            }
        }
        // Mismatch: let the last `*` take one more byte, or fail.
        match star {
            Some((sp, sk)) => {
                p = sp;
                k = sk + 1;
                star = Some((sp, sk + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|c| *c == b'*')
}

/// Matches byte `c` against the class starting at `pattern[p] == b'['`;
/// returns whether it matched and the position after the class, or
/// `None` when the class is not closed.
#[allow(clippy::many_single_char_names)] // Matcher conventions: p pattern position, c byte, a..z range.
fn class(pattern: &[u8], p: usize, c: u8) -> Option<(bool, usize)> {
    let mut i = p + 1;
    let negate = pattern.get(i) == Some(&b'^');
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let b = *pattern.get(i)?;
        if b == b']' && !first {
            break;
        }
        first = false;
        let lo = if b == b'\\' {
            i += 1;
            *pattern.get(i)?
        } else {
            b
        };
        if pattern.get(i + 1) == Some(&b'-') && pattern.get(i + 2).is_some_and(|x| *x != b']') {
            let mut hi = pattern[i + 2];
            i += 2;
            if hi == b'\\' {
                i += 1;
                hi = *pattern.get(i)?;
            }
            let (a, z) = if lo <= hi { (lo, hi) } else { (hi, lo) };
            if (a..=z).contains(&c) {
                matched = true;
            }
        } else if lo == c {
            matched = true;
        }
        i += 1;
    }
    Some((matched != negate, i + 1))
}

/// Include and exclude patterns for keys. Clones share the record of
/// which patterns matched a key.
#[derive(Debug, Clone, Default)]
pub struct KeyFilter {
    includes: Vec<Vec<u8>>,
    excludes: Vec<Vec<u8>>,
    /// Per include, then per exclude: whether it matched a key.
    hits: Arc<Vec<AtomicBool>>,
}

impl KeyFilter {
    /// A filter: a key passes when it matches some include (or there are
    /// none) and no exclude.
    pub fn new(includes: &[String], excludes: &[String]) -> Self {
        KeyFilter {
            includes: includes.iter().map(|s| s.as_bytes().to_vec()).collect(),
            excludes: excludes.iter().map(|s| s.as_bytes().to_vec()).collect(),
            hits: Arc::new(
                (0..includes.len() + excludes.len())
                    .map(|_| AtomicBool::new(false))
                    .collect(),
            ),
        }
    }

    /// The patterns that matched none of the keys this filter (or a clone)
    /// was asked about, as report lines.
    pub fn unmatched(&self) -> Vec<String> {
        self.includes
            .iter()
            .map(|p| ("--include", p))
            .chain(self.excludes.iter().map(|p| ("--exclude", p)))
            .enumerate()
            .filter(|(i, _)| !self.hits[*i].load(Ordering::Relaxed))
            .map(|(_, (flag, p))| format!("{flag} `{}` matched no key", String::from_utf8_lossy(p)))
            .collect()
    }

    /// Whether the filter lets every key through.
    pub fn is_all(&self) -> bool {
        self.includes.is_empty() && self.excludes.is_empty()
    }

    /// The single include pattern, usable as `SCAN MATCH`.
    pub fn scan_pattern(&self) -> Option<&[u8]> {
        match self.includes.as_slice() {
            [one] => Some(one),
            _ => None,
        }
    }

    /// Whether `key` passes; notes which patterns matched it.
    pub fn accepts(&self, key: &[u8]) -> bool {
        let mut included = self.includes.is_empty();
        for (i, p) in self.includes.iter().enumerate() {
            if glob_match(p, key) {
                self.hits[i].store(true, Ordering::Relaxed);
                included = true;
            }
        }
        let mut excluded = false;
        for (i, p) in self.excludes.iter().enumerate() {
            if glob_match(p, key) {
                self.hits[self.includes.len() + i].store(true, Ordering::Relaxed);
                excluded = true;
            }
        }
        included && !excluded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "", true),
            ("*", "abc", true),
            ("user:*", "user:1", true),
            ("user:*", "users", false),
            ("h?llo", "hello", true),
            ("h?llo", "hllo", false),
            ("h[ae]llo", "hallo", true),
            ("h[ae]llo", "hillo", false),
            ("h[^e]llo", "hallo", true),
            ("h[^e]llo", "hello", false),
            ("h[a-b]llo", "hbllo", true),
            ("h[b-a]llo", "hallo", true),
            ("h[a-b]llo", "hcllo", false),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("*:*:end", "a:b:c:end", true),
            ("\\*", "*", true),
            ("\\*", "a", false),
            ("[", "[", true),
            ("a**", "abc", true),
        ];
        for (p, k, want) in cases {
            assert_eq!(glob_match(p.as_bytes(), k.as_bytes()), *want, "{p} vs {k}");
        }
        assert!(glob_match(b"bin\xff*", b"bin\xff\x00\x01"));
    }

    #[test]
    fn filters() {
        let f = KeyFilter::new(&["a*".into(), "b*".into()], &["*tmp".into()]);
        assert!(f.accepts(b"apple"));
        assert!(f.accepts(b"banana"));
        assert!(!f.accepts(b"cherry"));
        assert!(!f.accepts(b"a-tmp"));
        assert!(KeyFilter::default().is_all());
        assert_eq!(f.unmatched(), Vec::<String>::new());
        let g = KeyFilter::new(&["a*".into(), "zz*".into()], &["nope".into()]);
        assert!(g.clone().accepts(b"apple"));
        assert_eq!(
            g.unmatched(),
            [
                "--include `zz*` matched no key",
                "--exclude `nope` matched no key"
            ]
        );
        assert_eq!(
            KeyFilter::new(&["x*".into()], &[]).scan_pattern(),
            Some(&b"x*"[..])
        );
    }
}
