//! A request's route key: a hash of its path with the segments that name one
//! object among many (all digits, a UUID, a long hex string) replaced by one
//! token, so `/users/123` and `/users/124` share a key and the kernel's
//! per-route series stay few however many objects the clients name.
//!
//! The kernel copies the first [`LINE`] bytes of a request's first read and
//! runs [`PathHash::step`] once per byte (under `bpf_loop`, with the state in
//! a map value, so the verifier checks one step, not one path per byte);
//! userspace runs the same code on the host ([`route_of`]). The path starts
//! after the method's space and ends at a space, `?`, `#`, CR or LF (the
//! query string is dropped) or at the end of the copied bytes (a longer path
//! is hashed over what was copied).

/// Bytes of a request's first read the kernel looks at for its path: the
/// method, its space and the path (so paths are cut at about 120 bytes).
pub const LINE: usize = 128;

/// A request whose target is not a path (`*`, an absolute URI, a read that
/// held no request line): no route.
pub const NONE: u64 = 0;
/// A request whose path's key the kernel could not add to its table of
/// routes (full): counted under this key, never dropped.
pub const OVERFLOW: u64 = 1;

/// Segments of at least this many hex digits are collapsed (a SHA-1 is 40,
/// a Mongo id 24, a short Git hash 7 or more: those stay).
pub const LONG_HEX: u32 = 16;

/// What a collapsed segment hashes as (its bytes do not matter).
const ID_TOKEN: u64 = 0x1D1D_1D1D_1D1D_1D1D;
/// A UUID's length (8-4-4-4-12 hex digits and dashes).
const UUID_LEN: u32 = 36;
/// FNV-1a's offset basis: a segment's hash before its first byte.
const SEG_SEED: u64 = 0xcbf2_9ce4_8422_2325;

/// Where [`PathHash`] is.
pub mod at {
    /// Before the method's space.
    pub const METHOD: u32 = 0;
    /// At the byte after the space: it must be `/`.
    pub const TARGET: u32 = 1;
    /// Inside the path.
    pub const PATH: u32 = 2;
    /// The path ended (or the target was not one).
    pub const DONE: u32 = 3;
}

/// The hash of a request line's path, built a byte at a time. `#[repr(C)]`:
/// the kernel keeps it in a per-CPU map value between steps.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathHash {
    /// The segments hashed so far.
    pub hash: u64,
    /// The current segment's bytes.
    pub seg: u64,
    /// The next byte's index in the line.
    pub pos: u32,
    /// Valid bytes in the line.
    pub len: u32,
    /// [`at`].
    pub at: u32,
    /// Index of the path's `/` and just past its last byte.
    pub start: u32,
    pub end: u32,
    /// The current segment's length, its digits, its hex digits, its dashes
    /// where a UUID has them, and its other bytes.
    pub seg_len: u32,
    pub digits: u32,
    pub hex: u32,
    pub dashes: u32,
    pub other: u32,
    /// 1 when the path reached the end of the copied bytes (it may be cut).
    pub cut: u32,
    pub _pad: u32,
}

#[inline(always)]
fn mix(h: u64, v: u64) -> u64 {
    let h = (h ^ v).wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 29)
}

/// Whether a segment of these counts names an object: all digits, a UUID,
/// or a long hex string.
#[inline(always)]
pub fn collapsed(len: u32, digits: u32, hex: u32, dashes: u32, other: u32) -> bool {
    let numeric = len > 0 && digits == len;
    let uuid = len == UUID_LEN && dashes == 4 && hex == 32;
    let long_hex = len >= LONG_HEX && hex == len;
    (numeric | uuid | long_hex) & (other == 0)
}

impl PathHash {
    /// The hash of `len` bytes of a line, not started.
    pub fn new(len: usize) -> PathHash {
        PathHash {
            len: if len < LINE { len as u32 } else { LINE as u32 },
            hash: 0x9E37_79B9_7F4A_7C15,
            ..PathHash::default()
        }
    }

    /// Ends the current segment (at a `/` or the path's end).
    #[inline(always)]
    fn close_segment(&mut self) {
        let v = if collapsed(self.seg_len, self.digits, self.hex, self.dashes, self.other) {
            ID_TOKEN
        } else {
            self.seg ^ self.seg_len as u64
        };
        self.hash = mix(self.hash, v);
        self.seg = SEG_SEED;
        self.seg_len = 0;
        self.digits = 0;
        self.hex = 0;
        self.dashes = 0;
        self.other = 0;
    }

    /// Takes the line's next byte `b` (at `self.pos`); false once done.
    #[inline(always)]
    pub fn step(&mut self, b: u8) -> bool {
        let pos = self.pos;
        if pos >= self.len || self.at == at::DONE {
            if self.at == at::PATH {
                self.close_segment();
                self.end = pos;
                self.cut = 1;
            }
            self.at = at::DONE;
            return false;
        }
        self.pos = pos + 1;
        match self.at {
            at::METHOD => {
                if b == b' ' {
                    self.at = at::TARGET;
                } else if pos >= 16 {
                    self.at = at::DONE;
                }
            }
            at::TARGET => {
                if b == b'/' {
                    self.at = at::PATH;
                    self.start = pos;
                    self.seg = SEG_SEED;
                } else {
                    self.at = at::DONE;
                }
            }
            _ => {
                if b == b' ' || b == b'?' || b == b'#' || b == b'\r' || b == b'\n' {
                    self.close_segment();
                    self.end = pos;
                    self.at = at::DONE;
                } else if b == b'/' {
                    self.close_segment();
                } else {
                    let digit = b.is_ascii_digit();
                    let hex = b.is_ascii_hexdigit();
                    let dash = b == b'-';
                    let uuid_dash = dash & matches!(self.seg_len, 8 | 13 | 18 | 23);
                    self.seg = (self.seg ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
                    self.seg_len += 1;
                    self.digits += digit as u32;
                    self.hex += hex as u32;
                    self.dashes += uuid_dash as u32;
                    self.other += (!hex & !uuid_dash) as u32;
                }
            }
        }
        self.at != at::DONE
    }

    /// The route key once done: [`NONE`] when the line held no path.
    #[inline(always)]
    pub fn key(&self) -> u64 {
        if self.at != at::DONE || self.end <= self.start {
            return NONE;
        }
        // Never one of the reserved keys.
        self.hash | 2
    }
}

/// What [`route_of`] found in a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    pub key: u64,
    /// The path is `line[start..end]`.
    pub start: usize,
    pub end: usize,
    /// It reached the end of the bytes looked at.
    pub cut: bool,
}

/// The route of a request line's first bytes (at most [`LINE`] are looked
/// at), as the kernel computes it.
pub fn route_of(line: &[u8]) -> Route {
    let mut h = PathHash::new(line.len());
    let mut i = 0;
    while i <= LINE {
        let b = line.get(h.pos as usize).copied().unwrap_or(0);
        if !h.step(b) {
            break;
        }
        i += 1;
    }
    Route {
        key: h.key(),
        start: h.start as usize,
        end: h.end as usize,
        cut: h.cut != 0,
    }
}

/// The first-seen path of a route key, kept by the kernel in its table of
/// routes ([`crate::abi::map::ROUTES`]) for userspace to name the route.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoutePath {
    /// Bytes of `bytes` that are the path.
    pub len: u32,
    /// 1 when the path may be cut (it reached the end of the copied bytes).
    pub cut: u32,
    pub bytes: [u8; LINE],
}

impl Default for RoutePath {
    fn default() -> Self {
        RoutePath {
            len: 0,
            cut: 0,
            bytes: [0; LINE],
        }
    }
}

impl RoutePath {
    /// The path's bytes.
    pub fn path(&self) -> &[u8] {
        &self.bytes[..(self.len as usize).min(LINE)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(line: &str) -> u64 {
        route_of(line.as_bytes()).key
    }

    fn path(line: &str) -> &str {
        let r = route_of(line.as_bytes());
        &line[r.start..r.end]
    }

    #[test]
    fn numeric_uuid_and_long_hex_segments_collapse() {
        let users = key("GET /users/123 HTTP/1.1\r\n");
        assert_ne!(users, NONE);
        assert_eq!(users, key("GET /users/9 HTTP/1.1\r\n"));
        assert_eq!(users, key("POST /users/4567890?x=1 HTTP/1.1\r\n"));
        assert_eq!(
            users,
            key("GET /users/3f2c1b9e-8d7a-4c6b-9e5f-0a1b2c3d4e5f HTTP/1.1\r\n")
        );
        assert_eq!(
            users,
            key("GET /users/da39a3ee5e6b4b0d3255bfef95601890afd80709 HTTP/1.1\r\n")
        );
        assert_eq!(users, key("GET /users/DEADBEEFDEADBEEF HTTP/1.1\r\n"));
        // Names stay names.
        assert_ne!(users, key("GET /users/alice HTTP/1.1\r\n"));
        assert_ne!(
            key("GET /users/alice HTTP/1.1"),
            key("GET /users/bob HTTP/1.1")
        );
        assert_ne!(users, key("GET /users/12a HTTP/1.1\r\n"), "not all digits");
        assert_ne!(users, key("GET /users/abc1234 HTTP/1.1\r\n"), "short hex");
        assert_ne!(
            users,
            key("GET /users/3f2c1b9e8d7a-4c6b-9e5f-0a1b2c3d4e5f0 HTTP/1.1\r\n"),
            "dashes not where a UUID has them"
        );
        assert_ne!(users, key("GET /users HTTP/1.1\r\n"));
        assert_ne!(users, key("GET /users/ HTTP/1.1\r\n"));
        assert_ne!(users, key("GET /users/1/ HTTP/1.1\r\n"));
        assert_eq!(
            key("GET /users/1/orders/2 HTTP/1.1"),
            key("GET /users/7/orders/99 HTTP/1.1")
        );
        assert_ne!(
            key("GET /users/1/orders/2 HTTP/1.1"),
            key("GET /users/1/items/2 HTTP/1.1")
        );
    }

    #[test]
    fn the_path_ends_before_the_query_and_fragment() {
        assert_eq!(path("GET /a/b?c=1 HTTP/1.1"), "/a/b");
        assert_eq!(path("GET /a#x HTTP/1.1"), "/a");
        assert_eq!(path("DELETE / HTTP/1.1"), "/");
        assert_eq!(path("GET /a\r\n"), "/a");
        assert_eq!(key("GET /a?x=1 HTTP/1.1"), key("GET /a?y=2 HTTP/1.1"));
        assert_ne!(key("GET / HTTP/1.1"), NONE);
    }

    #[test]
    fn targets_that_are_not_paths_have_no_route() {
        assert_eq!(key("OPTIONS * HTTP/1.1"), NONE);
        assert_eq!(key("GET http://x/a HTTP/1.1"), NONE);
        assert_eq!(key("GET"), NONE);
        assert_eq!(key(""), NONE);
        assert_eq!(key("\x16\x03\x01 TLS"), NONE);
        assert_eq!(key("AVERYLONGMETHODNAMEXX /a HTTP/1.1"), NONE);
    }

    #[test]
    fn a_long_path_is_cut_at_the_line_bound() {
        let long = format!("GET /{} HTTP/1.1", "a".repeat(200));
        let r = route_of(long.as_bytes());
        assert!(r.cut);
        assert_eq!(r.end, LINE);
        assert_ne!(r.key, NONE);
        let other = format!("GET /{}b HTTP/1.1", "a".repeat(200));
        assert_eq!(
            r.key,
            route_of(other.as_bytes()).key,
            "hashed over the copy"
        );
    }

    /// An independent statement of the rule: segment classes by regex-like checks.
    fn segment_is_id(s: &str) -> bool {
        let b = s.as_bytes();
        let numeric = !b.is_empty() && b.iter().all(u8::is_ascii_digit);
        let long_hex = b.len() >= LONG_HEX as usize && b.iter().all(u8::is_ascii_hexdigit);
        let uuid = b.len() == 36
            && b.iter().enumerate().all(|(i, c)| {
                if [8, 13, 18, 23].contains(&i) {
                    *c == b'-'
                } else {
                    c.is_ascii_hexdigit()
                }
            });
        numeric || long_hex || uuid
    }

    fn template_of(path: &str) -> String {
        path.split('/')
            .map(|s| if segment_is_id(s) { "{id}" } else { s })
            .collect::<Vec<_>>()
            .join("/")
    }

    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            "[0-9]{1,12}",
            "[a-z]{1,8}",
            "[0-9a-f]{16,24}",
            "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
            "[a-zA-Z0-9._~-]{0,10}",
        ]
    }

    proptest! {
        /// Two paths share a key exactly when they have the same template
        /// (up to hash collisions, which these sizes do not hit).
        #[test]
        fn keys_follow_templates(
            a in prop::collection::vec(segment(), 0..5),
            b in prop::collection::vec(segment(), 0..5),
            query in "[a-z=&0-9]{0,8}",
        ) {
            let pa = format!("/{}", a.join("/"));
            let pb = format!("/{}", b.join("/"));
            let la = format!("GET {pa}?{query} HTTP/1.1\r\n");
            let lb = format!("PUT {pb} HTTP/1.1\r\n");
            prop_assume!(la.len() < LINE && lb.len() < LINE);
            let (ka, kb) = (key(&la), key(&lb));
            prop_assert_ne!(ka, NONE);
            prop_assert_eq!(path(&la), pa.as_str());
            prop_assert_eq!(ka == kb, template_of(&pa) == template_of(&pb), "{} {}", pa, pb);
        }

        /// Any bytes: no panic, the path within the bytes looked at.
        #[test]
        fn any_bytes(line in prop::collection::vec(any::<u8>(), 0..200)) {
            let r = route_of(&line);
            prop_assert!(r.start <= r.end && r.end <= LINE.min(line.len()));
            if r.key != NONE {
                prop_assert_eq!(line[r.start], b'/');
                prop_assert!(r.key != OVERFLOW);
            }
        }
    }
}
