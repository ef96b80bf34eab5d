//! Include and exclude patterns on paths inside a snapshot or source.
//!
//! A pattern containing `/` is matched against the whole path relative to
//! the source root (a leading `/` is ignored); a pattern without `/` is
//! matched against the name of each entry at any depth. `*` and `?` do not
//! cross `/`; `**` does. A pattern that matches a directory applies to
//! everything below it.

use std::path::Path;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};

#[derive(Debug, Clone)]
struct Patterns {
    anchored: GlobSet,
    names: GlobSet,
    empty: bool,
}

impl Patterns {
    fn new(patterns: &[String]) -> Result<Self> {
        let mut anchored = GlobSetBuilder::new();
        let mut names = GlobSetBuilder::new();
        for p in patterns {
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
            } else {
                names.add(glob);
            }
        }
        let build = |b: GlobSetBuilder| {
            b.build()
                .map_err(|e| Error::Config(format!("invalid patterns: {e}")))
        };
        Ok(Patterns {
            anchored: build(anchored)?,
            names: build(names)?,
            empty: patterns.is_empty(),
        })
    }

    /// Whether the path itself (not its ancestors) matches.
    fn matches_self(&self, rel: &Path) -> bool {
        if self.empty {
            return false;
        }
        self.anchored.is_match(rel) || rel.file_name().is_some_and(|n| self.names.is_match(n))
    }

    /// Whether the path or one of its ancestors matches.
    fn matches_or_ancestor(&self, rel: &Path) -> bool {
        rel.ancestors()
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
