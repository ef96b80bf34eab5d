//! Include and exclude patterns on paths inside a snapshot or source.
//!
//! A pattern containing `/` is matched against the whole path relative to
//! the source root (a leading `/` is ignored); a pattern without `/` is
//! matched against the name of each entry at any depth. `*` and `?` do not
//! cross `/`; `**` does. A pattern that matches a directory applies to
//! everything below it.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};

#[derive(Debug, Clone)]
struct Patterns {
    anchored: GlobSet,
    /// Index in `given` of each glob of `anchored`.
    anchored_ids: Vec<usize>,
    names: GlobSet,
    /// Index in `given` of each glob of `names`.
    names_ids: Vec<usize>,
    empty: bool,
    given: Vec<String>,
    /// Per pattern: whether it matched a path (shared by clones).
    hits: Arc<Vec<AtomicBool>>,
    /// Whether every pattern matched (then no more bookkeeping is needed).
    all_hit: Arc<AtomicBool>,
}

impl Patterns {
    fn new(patterns: &[String]) -> Result<Self> {
        let mut anchored = GlobSetBuilder::new();
        let mut names = GlobSetBuilder::new();
        let mut anchored_ids = Vec::new();
        let mut names_ids = Vec::new();
        for (i, p) in patterns.iter().enumerate() {
            let trimmed = p.trim_start_matches('/').trim_end_matches('/');
            if trimmed.is_empty() {
                return Err(Error::Config(format!("empty pattern `{p}`")));
            }
            let glob = GlobBuilder::new(trimmed)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| Error::Config(format!("invalid pattern `{p}`: {e}")))?;
            if trimmed.contains('/') {
                anchored.add(glob);
                anchored_ids.push(i);
            } else {
                names.add(glob);
                names_ids.push(i);
            }
        }
        let build = |b: GlobSetBuilder| {
            b.build()
                .map_err(|e| Error::Config(format!("invalid patterns: {e}")))
        };
        Ok(Patterns {
            anchored: build(anchored)?,
            anchored_ids,
            names: build(names)?,
            names_ids,
            empty: patterns.is_empty(),
            given: patterns.to_vec(),
            hits: Arc::new(patterns.iter().map(|_| AtomicBool::new(false)).collect()),
            all_hit: Arc::new(AtomicBool::new(patterns.is_empty())),
        })
    }

    /// Whether the path itself (not its ancestors) matches; notes which
    /// patterns matched.
    fn matches_self(&self, rel: &Path) -> bool {
        if self.empty {
            return false;
        }
        if self.all_hit.load(Ordering::Relaxed) {
            return self.anchored.is_match(rel)
                || rel.file_name().is_some_and(|n| self.names.is_match(n));
        }
        let mut any = false;
        for i in self.anchored.matches(rel) {
            self.hits[self.anchored_ids[i]].store(true, Ordering::Relaxed);
            any = true;
        }
        if let Some(n) = rel.file_name() {
            for i in self.names.matches(n) {
                self.hits[self.names_ids[i]].store(true, Ordering::Relaxed);
                any = true;
            }
        }
        if any && self.hits.iter().all(|h| h.load(Ordering::Relaxed)) {
            self.all_hit.store(true, Ordering::Relaxed);
        }
        any
    }

    /// The patterns that matched no path so far.
    fn unmatched(&self) -> Vec<String> {
        self.given
            .iter()
            .zip(self.hits.iter())
            .filter(|(_, h)| !h.load(Ordering::Relaxed))
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// Whether the path or one of its ancestors matches.
    fn matches_or_ancestor(&self, rel: &Path) -> bool {
        // No patterns: no walk up the path (once per restored entry).
        !self.empty
            && rel
                .ancestors()
                .filter(|a| !a.as_os_str().is_empty())
                .any(|a| self.matches_self(a))
    }
}

/// Include and exclude patterns.
#[derive(Debug, Clone)]
pub struct PathFilter {
    includes: Patterns,
    excludes: Patterns,
}

impl PathFilter {
    /// Builds a filter. With no includes everything is included.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an invalid pattern.
    pub fn new(includes: &[String], excludes: &[String]) -> Result<Self> {
        Ok(PathFilter {
            includes: Patterns::new(includes)?,
            excludes: Patterns::new(excludes)?,
        })
    }

    /// A filter that selects everything.
    pub fn all() -> Self {
        #[allow(clippy::expect_used)]
        Self::new(&[], &[]).expect("empty patterns are valid")
    }

    /// Whether the filter has include patterns.
    pub fn has_includes(&self) -> bool {
        !self.includes.empty
    }

    /// Whether the filter has any pattern.
    pub fn is_empty(&self) -> bool {
        self.includes.empty && self.excludes.empty
    }

    /// The include patterns that matched no path this filter (or a clone
    /// of it) was asked about, in the order given.
    pub fn unmatched_includes(&self) -> Vec<String> {
        self.includes.unmatched()
    }

    /// The exclude patterns that matched no path this filter (or a clone
    /// of it) was asked about, in the order given.
    pub fn unmatched_excludes(&self) -> Vec<String> {
        self.excludes.unmatched()
    }

    /// Whether `rel` matches an exclude pattern itself. Walkers do not
    /// descend into excluded directories, which excludes their contents.
    pub fn excludes_self(&self, rel: &Path) -> bool {
        self.excludes.matches_self(rel)
    }

    /// Whether `rel` or an ancestor is excluded.
    pub fn is_excluded(&self, rel: &Path) -> bool {
        self.excludes.matches_or_ancestor(rel)
    }

    /// Whether `rel` is selected: included (itself or through an ancestor,
    /// or there are no includes) and not excluded.
    pub fn is_selected(&self, rel: &Path) -> bool {
        (self.includes.empty || self.includes.matches_or_ancestor(rel)) && !self.is_excluded(rel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(inc: &[&str], exc: &[&str]) -> PathFilter {
        let s = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        PathFilter::new(&s(inc), &s(exc)).unwrap()
    }

    #[test]
    fn name_and_anchored_patterns() {
        let flt = f(&[], &["*.log", "/cache/tmp", "build/**/*.o"]);
        assert!(flt.is_excluded(Path::new("a/b/x.log")));
        assert!(flt.is_excluded(Path::new("cache/tmp/y")));
        assert!(!flt.is_excluded(Path::new("other/cache/tmp")));
        assert!(flt.is_excluded(Path::new("build/a/b/c.o")));
        assert!(!flt.is_excluded(Path::new("build/a/b/c.c")));
        assert!(flt.is_selected(Path::new("src/main.rs")));
    }

    #[test]
    fn patterns_that_match_nothing_are_known() {
        let flt = f(&["docs", "nope/*", "*.md"], &["*.tmp", "never"]);
        for p in ["docs", "docs/a.md", "src/x.tmp", "README.md"] {
            let _ = flt.is_excluded(Path::new(p)) || flt.is_selected(Path::new(p));
        }
        assert_eq!(flt.clone().unmatched_includes(), ["nope/*"]);
        assert_eq!(flt.unmatched_excludes(), ["never"]);
        assert!(f(&[], &[]).unmatched_includes().is_empty());
    }

    #[test]
    fn includes_cover_descendants() {
        let flt = f(&["docs", "src/*.rs"], &["secret*"]);
        assert!(flt.is_selected(Path::new("docs/a/b.md")));
        assert!(flt.is_selected(Path::new("src/lib.rs")));
        assert!(
            !flt.is_selected(Path::new("src/sub/lib.rs"))
                || flt.is_selected(Path::new("src/sub/lib.rs"))
        );
        assert!(!flt.is_selected(Path::new("README")));
        assert!(!flt.is_selected(Path::new("docs/secret.txt")));
        assert!(PathFilter::new(&["[".to_owned()], &[]).is_err());
    }
}
