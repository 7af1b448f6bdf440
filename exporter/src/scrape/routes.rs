//! Routes: the kernel counts requests by route key (a hash of the path with
//! numeric, UUID and long hex segments collapsed, `exporter_ebpf::route`)
//! and keeps the first path seen with each key; here each key gets its
//! route label: the first user template (`--route`, `--routes-file`) the
//! path matches, else the path with those segments written `{id}`. Several
//! keys may share a route (`/users/{name}` matches `/users/alice` and
//! `/users/bob`, two keys). At most `--max-routes` distinct routes are
//! named, in the order they are first scraped; the requests of the others,
//! and those the kernel could not key (its table full, or a target that is
//! not a path), count under `route="other"`.

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
};

use anyhow::{Context as _, bail};
use exporter_ebpf::{abi::RouteKey, route};

/// The label of the routes not named.
pub const OTHER: &str = "other";

/// A user template: its segments, `None` for a `{...}` one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    text: String,
    segments: Vec<Option<String>>,
}

impl Template {
    pub fn parse(text: &str) -> anyhow::Result<Template> {
        let text = text.trim();
        let Some(rest) = text.strip_prefix('/') else {
            bail!("route template {text:?} does not start with /");
        };
        if text.contains(['?', '#', ' ']) {
            bail!("route template {text:?}: a path only (no query, fragment or space)");
        }
        let segments = rest
            .split('/')
            .map(|s| {
                if s.starts_with('{') && s.ends_with('}') && s.len() >= 2 {
                    Ok(None)
                } else if s.contains(['{', '}']) {
                    bail!("route template {text:?}: a {{name}} must be a whole segment")
                } else {
                    Ok(Some(s.to_string()))
                }
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Template {
            text: text.to_string(),
            segments,
        })
    }

    /// Whether `path` (no query) is one of the template's: as many
    /// segments, the literal ones equal, the `{...}` ones non-empty.
    pub fn matches(&self, path: &str) -> bool {
        let Some(rest) = path.strip_prefix('/') else {
            return false;
        };
        let parts: Vec<&str> = rest.split('/').collect();
        parts.len() == self.segments.len()
            && parts
                .iter()
                .zip(&self.segments)
                .all(|(part, seg)| match seg {
                    Some(literal) => literal == part,
                    None => !part.is_empty(),
                })
    }
}

/// The automatic rule: numeric, UUID and long hex segments become `{id}`,
/// as the kernel collapsed them when it hashed the path.
pub fn automatic(path: &str) -> String {
    path.split('/')
        .map(|s| if is_id(s) { "{id}" } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

/// The kernel's rule for a segment (`exporter_ebpf::route::collapsed`).
fn is_id(segment: &str) -> bool {
    let b = segment.as_bytes();
    let digits = b.iter().filter(|c| c.is_ascii_digit()).count() as u32;
    let hex = b.iter().filter(|c| c.is_ascii_hexdigit()).count() as u32;
    let dashes = b
        .iter()
        .enumerate()
        .filter(|(i, c)| **c == b'-' && matches!(i, 8 | 13 | 18 | 23))
        .count() as u32;
    let other = b.len() as u32 - hex - dashes;
    route::collapsed(b.len() as u32, digits, hex, dashes, other)
}

/// Templates and the cap, from the command line.
#[derive(Clone, Debug)]
pub struct Rules {
    templates: Vec<Template>,
    max: usize,
}

impl Rules {
    pub fn new(templates: Vec<Template>, max: usize) -> Rules {
        Rules { templates, max }
    }

    /// `--route` templates, then those of `--routes-file`.
    pub fn load(routes: &[String], file: Option<&Path>, max: usize) -> anyhow::Result<Rules> {
        let mut templates = routes
            .iter()
            .map(|t| Template::parse(t).context("--route"))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if let Some(file) = file {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("--routes-file {}", file.display()))?;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                templates.push(
                    Template::parse(line)
                        .with_context(|| format!("--routes-file {}:{}", file.display(), n + 1))?,
                );
            }
        }
        Ok(Rules::new(templates, max))
    }

    /// The route of `path`: a template's text, else the automatic rule's.
    /// A path the kernel cut at its bound ends with `...`.
    pub fn route(&self, path: &str, cut: bool) -> String {
        if let Some(t) = self.templates.iter().find(|t| t.matches(path)) {
            return t.text.clone();
        }
        let auto = automatic(path);
        if cut { format!("{auto}...") } else { auto }
    }
}

/// The route each kernel key was given, kept from scrape to scrape so a
/// series keeps its route. Bounded: the kernel keeps at most
/// `abi::ROUTE_KEYS` keys, and at most `max` routes are named.
#[derive(Debug)]
pub struct Names {
    rules: Rules,
    by_key: HashMap<u64, Option<usize>>,
    routes: Vec<String>,
    index: BTreeMap<String, usize>,
}

impl Names {
    pub fn new(rules: Rules) -> Names {
        Names {
            rules,
            by_key: HashMap::new(),
            routes: Vec::new(),
            index: BTreeMap::new(),
        }
    }

    /// The route of `key`, whose first path the kernel kept is `path`
    /// (`None`: not found); `None` means `other`. A key without a path is
    /// asked again at the next scrape.
    pub fn name(
        &mut self,
        key: u64,
        path: impl FnOnce() -> Option<(String, bool)>,
    ) -> Option<&str> {
        if key == route::NONE || key == route::OVERFLOW {
            return None;
        }
        let slot = match self.by_key.get(&key) {
            Some(slot) => *slot,
            None => {
                let (path, cut) = path()?;
                let route = self.rules.route(&path, cut);
                let slot = match self.index.get(&route) {
                    Some(&i) => Some(i),
                    None if self.routes.len() < self.rules.max => {
                        self.index.insert(route.clone(), self.routes.len());
                        self.routes.push(route);
                        Some(self.routes.len() - 1)
                    }
                    None => None,
                };
                self.by_key.insert(key, slot);
                slot
            }
        };
        slot.map(|i| self.routes[i].as_str())
    }
}

/// The label of a named route, or [`OTHER`].
pub fn label(name: Option<&str>) -> String {
    name.unwrap_or(OTHER).to_string()
}

/// Route series by (route label, method, status), and the requests counted
/// under `other` (answered ones, as in the requests family).
pub fn series_by_route(
    names: &mut Names,
    kernel: Vec<(RouteKey, exporter_ebpf::abi::Aggregate)>,
    path: impl Fn(u64) -> Option<(String, bool)>,
) -> BTreeMap<(String, u8, u16), exporter_ebpf::abi::Aggregate> {
    let mut out: BTreeMap<(String, u8, u16), exporter_ebpf::abi::Aggregate> = BTreeMap::new();
    let mut keys: Vec<_> = kernel;
    // Keys in a stable order, so which routes pass the cap does not depend
    // on the map's iteration order within one scrape.
    keys.sort_by_key(|(k, _)| *k);
    for (k, a) in keys {
        let route = label(names.name(k.route, || path(k.route)));
        out.entry((route, k.method, k.status))
            .or_default()
            .merge(&a);
    }
    out
}

/// The set of distinct routes named so far.
#[cfg(test)]
fn named(names: &Names) -> std::collections::BTreeSet<String> {
    names.routes.iter().cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_whole_segments() {
        let t = Template::parse("/users/{id}").unwrap();
        assert!(t.matches("/users/1"));
        assert!(t.matches("/users/alice"));
        assert!(!t.matches("/users/"));
        assert!(!t.matches("/users/1/x"));
        assert!(!t.matches("/users"));
        assert!(!t.matches("/posts/1"));
        let t = Template::parse("/").unwrap();
        assert!(t.matches("/"));
        assert!(!t.matches("/a"));
        assert!(Template::parse("users").is_err());
        assert!(Template::parse("/a?b").is_err());
        assert!(Template::parse("/a/x{id}").is_err());
    }

    #[test]
    fn the_automatic_rule_collapses_ids() {
        assert_eq!(automatic("/users/123/orders/9"), "/users/{id}/orders/{id}");
        assert_eq!(
            automatic("/f/3f2c1b9e-8d7a-4c6b-9e5f-0a1b2c3d4e5f"),
            "/f/{id}"
        );
        assert_eq!(automatic("/c/da39a3ee5e6b4b0d3255bf"), "/c/{id}");
        assert_eq!(automatic("/c/abc123"), "/c/abc123");
        assert_eq!(automatic("/users/alice"), "/users/alice");
        assert_eq!(automatic("/"), "/");
    }

    #[test]
    fn the_automatic_rule_names_each_kernel_key_once() {
        // Paths with one kernel key have one automatic route.
        for (a, b) in [
            ("/users/1", "/users/22"),
            ("/x/3f2c1b9e-8d7a-4c6b-9e5f-0a1b2c3d4e5f/y", "/x/0/y"),
            ("/c/DEADBEEFDEADBEEF", "/c/0123456789abcdef0"),
        ] {
            let key = |p: &str| route::route_of(format!("GET {p} HTTP/1.1").as_bytes()).key;
            assert_eq!(key(a), key(b), "{a} {b}");
            assert_eq!(automatic(a), automatic(b), "{a} {b}");
        }
    }

    #[test]
    fn templates_first_then_the_cap() {
        let rules = Rules::new(vec![Template::parse("/users/{name}").unwrap()], 2);
        let mut names = Names::new(rules);
        let p = |s: &str| Some((s.to_string(), false));
        assert_eq!(names.name(10, || p("/users/alice")), Some("/users/{name}"));
        assert_eq!(names.name(11, || p("/users/bob")), Some("/users/{name}"));
        assert_eq!(names.name(12, || p("/items/7")), Some("/items/{id}"));
        assert_eq!(names.name(13, || p("/a")), None, "over the cap");
        assert_eq!(names.name(12, || None), Some("/items/{id}"), "remembered");
        assert_eq!(names.name(14, || p("/users/carol")), Some("/users/{name}"));
        assert_eq!(names.name(route::OVERFLOW, || p("/b")), None);
        assert_eq!(names.name(route::NONE, || p("/b")), None);
        assert_eq!(names.name(15, || None), None, "no path yet");
        assert_eq!(names.name(15, || p("/users/dan")), Some("/users/{name}"));
        assert_eq!(named(&names).len(), 2);
    }

    #[test]
    fn cut_paths_say_so() {
        let rules = Rules::new(vec![], 10);
        assert_eq!(rules.route("/a/1/bbbb", true), "/a/{id}/bbbb...");
    }

    #[test]
    fn routes_files() {
        let dir = std::env::temp_dir().join(format!("routes-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("routes");
        std::fs::write(&file, "# comment\n\n/users/{id}\n  /files/{name}/raw \n").unwrap();
        let rules = Rules::load(&["/a/{x}".to_string()], Some(&file), 5).unwrap();
        assert_eq!(rules.route("/a/q", false), "/a/{x}");
        assert_eq!(rules.route("/files/x.txt/raw", false), "/files/{name}/raw");
        std::fs::write(&file, "/ok\nbad\n").unwrap();
        let e = Rules::load(&[], Some(&file), 5).unwrap_err();
        assert!(format!("{e:#}").contains(":2"), "{e:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
