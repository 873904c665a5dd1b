//! Include/exclude globs, and the pruning that lets the walk skip whole subtrees.
//!
//! The final word on a file is globset's: its path relative to the repository root must
//! match an include pattern and no exclude pattern. To avoid listing directories no
//! pattern can reach, each include pattern is also split into per-component matchers and
//! run as a small NFA while walking down (`**` may consume any number of components,
//! including none, which makes the pruning conservative, never wrong). When every live
//! pattern is down to one literal file name (`metadata.json`), the walker opens that
//! file directly instead of listing the directory, which halves the system calls of a
//! scan.

use globset::{Glob, GlobBuilder, GlobMatcher, GlobSet, GlobSetBuilder};

use crate::DetectError;

/// One component of an include pattern.
#[derive(Debug)]
enum Component {
    /// `**`: any number of path components.
    AnyDepth,
    /// A name without glob metacharacters.
    Literal(String),
    /// A glob confined to one component.
    Glob(GlobMatcher),
}

impl Component {
    fn matches(&self, name: &str) -> bool {
        match self {
            Component::AnyDepth => true,
            Component::Literal(literal) => literal == name,
            Component::Glob(glob) => glob.is_match(name),
        }
    }
}

/// Where a pattern stands while walking down: the components `pattern[position..]` must
/// match the rest of the path.
pub(crate) type State = (usize, usize);

/// Compiled include and exclude patterns.
#[derive(Debug)]
pub(crate) struct Patterns {
    include: GlobSet,
    exclude: GlobSet,
    components: Vec<Vec<Component>>,
    /// Per include pattern: its components alone decide a match exactly (no `**`, no
    /// component that failed to compile alone), so globset need not be asked again.
    exact: Vec<bool>,
}

fn glob(pattern: &str) -> Result<Glob, DetectError> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map_err(|source| DetectError::InvalidPattern {
            pattern: pattern.to_owned(),
            source,
        })
}

fn glob_set(patterns: &[String]) -> Result<GlobSet, DetectError> {
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        builder.add(glob(pattern)?);
    }
    builder
        .build()
        .map_err(|source| DetectError::InvalidPattern {
            pattern: patterns.join(", "),
            source,
        })
}

fn is_literal(component: &str) -> bool {
    !component.contains(['*', '?', '[', ']', '{', '}', '\\'])
}

impl Patterns {
    pub(crate) fn new(include: &[String], exclude: &[String]) -> Result<Self, DetectError> {
        let components = include
            .iter()
            .map(|pattern| {
                pattern
                    .split('/')
                    .filter(|c| !c.is_empty() && *c != ".")
                    .map(|c| {
                        if c == "**" {
                            Component::AnyDepth
                        } else if is_literal(c) {
                            Component::Literal(c.to_owned())
                        } else {
                            // A component that does not compile on its own (a `{a/b,c}`
                            // alternation cut in half by the split) only loses pruning.
                            glob(c)
                                .map(|g| Component::Glob(g.compile_matcher()))
                                .unwrap_or(Component::AnyDepth)
                        }
                    })
                    .collect()
            })
            .collect();
        let exact = include
            .iter()
            .zip(&components)
            .map(|(pattern, comps): (&String, &Vec<Component>)| {
                !pattern.split('/').any(|c| c == "**")
                    && !comps.iter().any(|c| matches!(c, Component::AnyDepth))
            })
            .collect();
        Ok(Self {
            include: glob_set(include)?,
            exclude: glob_set(exclude)?,
            components,
            exact,
        })
    }

    /// The states before any component is consumed.
    pub(crate) fn start(&self) -> Vec<State> {
        (0..self.components.len()).map(|p| (p, 0)).collect()
    }

    /// Adds the states reachable by letting `**` match nothing.
    fn closure(&self, states: &[State]) -> Vec<State> {
        let mut out = Vec::with_capacity(states.len() + 1);
        for &(p, mut i) in states {
            loop {
                if !out.contains(&(p, i)) {
                    out.push((p, i));
                }
                match self.components[p].get(i) {
                    Some(Component::AnyDepth) => i += 1,
                    _ => break,
                }
            }
        }
        out
    }

    /// The states after descending into a directory named `name`; empty when no pattern
    /// can match anything below it.
    pub(crate) fn step(&self, states: &[State], name: &str) -> Vec<State> {
        let mut next = Vec::new();
        for (p, i) in self.closure(states) {
            match self.components[p].get(i) {
                Some(Component::AnyDepth) => next.push((p, i)),
                Some(c) if c.matches(name) => next.push((p, i + 1)),
                _ => {}
            }
        }
        next.sort_unstable();
        next.dedup();
        next
    }

    /// When every live pattern needs exactly one more component and that component is a
    /// literal file name, those names; the walker can then open them without listing the
    /// directory.
    pub(crate) fn final_literals<'a>(&'a self, states: &[State]) -> Option<Vec<&'a str>> {
        let mut names = Vec::new();
        for (p, i) in self.closure(states) {
            let components = &self.components[p];
            match components.get(i) {
                Some(Component::Literal(name)) if i + 1 == components.len() => {
                    if !names.contains(&name.as_str()) {
                        names.push(name.as_str());
                    }
                }
                _ => return None,
            }
        }
        Some(names)
    }

    /// Whether a file at `rel` (relative to the repository root) is to be read.
    pub(crate) fn is_selected_file(&self, rel: &str) -> bool {
        self.include.is_match(rel) && !self.is_excluded(rel)
    }

    /// Whether the file named by one of [`Patterns::final_literals`]`(states)`, at `rel`,
    /// is to be read: the states already prove the include match when every live pattern
    /// is exact, which spares a regex search per chunk.
    pub(crate) fn is_selected_literal(&self, states: &[State], rel: &str) -> bool {
        let proven = states.iter().all(|&(p, _)| self.exact[p]);
        (proven || self.include.is_match(rel)) && !self.is_excluded(rel)
    }

    fn is_excluded(&self, rel: &str) -> bool {
        !self.exclude.is_empty() && self.exclude.is_match(rel)
    }

    /// Whether a directory at `rel` is excluded as a whole.
    pub(crate) fn is_excluded_dir(&self, rel: &str) -> bool {
        self.is_excluded(rel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(patterns: &Patterns, path: &str) -> Vec<State> {
        path.split('/').fold(patterns.start(), |states, name| {
            patterns.step(&states, name)
        })
    }

    #[test]
    fn default_pattern_prunes_and_ends_in_a_literal() {
        let p =
            Patterns::new(&["pending_compression/*/chunk_*/metadata.json".into()], &[]).unwrap();
        assert!(walk(&p, "other").is_empty());
        assert!(walk(&p, "pending_compression/movie/notes").is_empty());
        let chunk = walk(&p, "pending_compression/movie/chunk_0001");
        assert_eq!(p.final_literals(&chunk), Some(vec!["metadata.json"]));
        assert_eq!(
            p.final_literals(&walk(&p, "pending_compression/movie")),
            None
        );
        assert!(p.is_selected_file("pending_compression/movie/chunk_0001/metadata.json"));
        assert!(!p.is_selected_file("pending_compression/a/b/chunk_0001/metadata.json"));
    }

    #[test]
    fn any_depth_keeps_every_depth_alive() {
        let p = Patterns::new(&["root/**/metadata.json".into()], &[]).unwrap();
        assert!(!walk(&p, "root").is_empty());
        assert!(!walk(&p, "root/a/b/c/d").is_empty());
        assert_eq!(
            p.final_literals(&walk(&p, "root/a")),
            None,
            "** can still descend"
        );
        assert!(p.is_selected_file("root/a/b/metadata.json"));
    }
}
