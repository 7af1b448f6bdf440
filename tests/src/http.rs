//! A raw HTTP/1.1 client over `TcpStream` that counts every byte it sends and
//! receives, so the exporter's request/response size sums can be checked
//! exactly. No HTTP library there: what goes on the wire is exactly what is
//! built here, split or pipelined as a test needs. Ordinary GETs, where no
//! byte is counted (scrapes, plain checks), go through ureq: [`get`].

use std::{
    collections::BTreeMap,
    io::{self, Read as _, Write as _},
    net::{Shutdown, SocketAddr, TcpStream},
    thread,
    time::{Duration, Instant},
};

/// Pause between the pieces of a request written in several writes, so that the
/// server sees several reads. (Shapes traffic; nothing waits on a result.)
pub const SPLIT_PAUSE: Duration = Duration::from_millis(30);
/// Default connect/read/write timeout: a hung server fails the test, it does not
/// hang it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// A request to serialize.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Offsets in the serialized request where a new write starts.
    pub splits: Vec<usize>,
    /// For HEAD: the server sends the body anyway (gunicorn 23 writes whatever the
    /// app returns after a HEAD response's headers).
    pub head_body: bool,
}

impl Request {
    /// `METHOD target HTTP/1.1` with a Host header.
    pub fn new(method: &str, target: &str) -> Request {
        Request {
            method: method.to_string(),
            target: target.to_string(),
            headers: vec![("Host".into(), "127.0.0.1".into())],
            body: Vec::new(),
            splits: Vec::new(),
            head_body: false,
        }
    }

    pub fn get(target: &str) -> Request {
        Request::new("GET", target)
    }

    pub fn head(target: &str) -> Request {
        Request::new("HEAD", target)
    }

    /// A POST with `body` (Content-Length is added when serialized).
    pub fn post(target: &str, body: Vec<u8>) -> Request {
        let mut r = Request::new("POST", target);
        r.headers
            .push(("Content-Type".into(), "application/octet-stream".into()));
        r.body = body;
        r
    }

    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Adds `Connection: close`.
    pub fn close(self) -> Request {
        self.header("Connection", "close")
    }

    /// Write the request in several writes, starting new ones at these byte
    /// offsets of the serialized request.
    pub fn split_at(mut self, offsets: &[usize]) -> Request {
        self.splits = offsets.to_vec();
        self
    }

    /// The bytes on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.1\r\n", self.method, self.target).into_bytes();
        for (k, v) in &self.headers {
            out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        let has_length = self
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-length"));
        if !has_length
            && (!self.body.is_empty() || matches!(self.method.as_str(), "POST" | "PUT" | "PATCH"))
        {
            out.extend_from_slice(format!("Content-Length: {}\r\n", self.body.len()).as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }

    /// Expect a body after the response to this HEAD request, delimited as for
    /// GET (see [`Request::head_body`]).
    pub fn with_head_body(mut self, yes: bool) -> Request {
        self.head_body = yes;
        self
    }

    /// Whether the response to this request has no body (HEAD).
    pub fn is_head(&self) -> bool {
        self.method == "HEAD" && !self.head_body
    }
}

/// A parsed response.
#[derive(Clone, Debug)]
pub struct Response {
    /// "HTTP/1.1" or "HTTP/1.0".
    pub version: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
    /// Bytes this response took on the wire (status line .. end of body/chunks).
    pub wire_len: usize,
    pub chunked: bool,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the server closes the connection after this response.
    pub fn server_closes(&self) -> bool {
        match self.header("Connection").map(|v| v.to_ascii_lowercase()) {
            Some(v) if v.contains("close") => true,
            Some(v) if v.contains("keep-alive") => false,
            _ => self.version == "HTTP/1.0",
        }
    }
}

/// What a client did: bytes and responses, per (method, status).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    pub sent: u64,
    pub received: u64,
    pub connections: u64,
    pub responses: BTreeMap<(String, u16), u64>,
    /// The longest time from starting to send a request to having read its whole
    /// response: an upper bound of how long any worker spent on one request.
    pub slowest: Duration,
}

impl Traffic {
    pub fn record(&mut self, method: &str, status: u16) {
        *self
            .responses
            .entry((method.to_string(), status))
            .or_insert(0) += 1;
    }

    /// Notes the time one request/response exchange took.
    pub fn observe(&mut self, took: Duration) {
        self.slowest = self.slowest.max(took);
    }

    /// Adds a finished connection's byte counts.
    pub fn add_conn(&mut self, c: &Conn) {
        self.sent += c.sent;
        self.received += c.received;
        self.connections += 1;
    }

    pub fn merge(&mut self, other: &Traffic) {
        self.sent += other.sent;
        self.received += other.received;
        self.connections += other.connections;
        self.slowest = self.slowest.max(other.slowest);
        for (k, v) in &other.responses {
            *self.responses.entry(k.clone()).or_insert(0) += v;
        }
    }

    pub fn total_responses(&self) -> u64 {
        self.responses.values().sum()
    }

    /// Responses to `method`.
    pub fn method_responses(&self, method: &str) -> u64 {
        self.responses
            .iter()
            .filter(|((m, _), _)| m == method)
            .map(|(_, v)| v)
            .sum()
    }
}

/// One client connection with exact byte counts.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    eof: bool,
    /// Bytes written to the socket.
    pub sent: u64,
    /// Bytes read from the socket.
    pub received: u64,
    /// Write calls made (a split request makes several).
    pub writes: u64,
}

impl Conn {
    /// Connects with TCP_NODELAY and [`IO_TIMEOUT`] timeouts.
    pub fn connect(addr: SocketAddr) -> io::Result<Conn> {
        Conn::connect_timeout(addr, IO_TIMEOUT)
    }

    pub fn connect_timeout(addr: SocketAddr, timeout: Duration) -> io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Conn {
            stream,
            buf: Vec::new(),
            eof: false,
            sent: 0,
            received: 0,
            writes: 0,
        })
    }

    /// Writes `req`, in several writes with [`SPLIT_PAUSE`] between them when it
    /// has split offsets.
    pub fn send(&mut self, req: &Request) -> io::Result<()> {
        let bytes = req.to_bytes();
        let mut start = 0;
        let mut cuts: Vec<usize> = req
            .splits
            .iter()
            .copied()
            .filter(|&c| c > 0 && c < bytes.len())
            .collect();
        cuts.sort_unstable();
        cuts.dedup();
        cuts.push(bytes.len());
        for (i, &end) in cuts.iter().enumerate() {
            if i > 0 {
                thread::sleep(SPLIT_PAUSE);
            }
            self.send_raw(&bytes[start..end])?;
            start = end;
        }
        Ok(())
    }

    /// Writes `bytes` with one `write_all`.
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.sent += bytes.len() as u64;
        self.writes += 1;
        Ok(())
    }

    /// Reads more bytes into the buffer; 0 at EOF.
    fn fill(&mut self) -> io::Result<usize> {
        if self.eof {
            return Ok(0);
        }
        let mut tmp = [0u8; 65536];
        let n = loop {
            match self.stream.read(&mut tmp) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            self.eof = true;
        }
        self.received += n as u64;
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(n)
    }

    /// Makes the buffer hold at least `n` bytes.
    fn ensure(&mut self, n: usize, what: &str) -> io::Result<()> {
        while self.buf.len() < n {
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "connection closed with {} of {n} bytes of {what}",
                        self.buf.len()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Index just past the next CRLF at or after `from`, reading as needed.
    fn line_end(&mut self, from: usize, what: &str) -> io::Result<usize> {
        loop {
            if let Some(i) = find(&self.buf[from..], b"\r\n") {
                return Ok(from + i + 2);
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("connection closed in the middle of {what}"),
                ));
            }
        }
    }

    /// Reads one response; `Ok(None)` when the server closed the connection
    /// before sending any byte of it.
    pub fn try_read_response(&mut self, head: bool) -> io::Result<Option<Response>> {
        // Head: status line and headers.
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            if self.fill()? == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "connection closed in a response head: {:?}",
                        String::from_utf8_lossy(&self.buf)
                    ),
                ));
            }
        };
        let head_text = String::from_utf8_lossy(&self.buf[..head_end - 4]).into_owned();
        let mut lines = head_text.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("").to_string();
        let status = parts
            .next()
            .and_then(|s| s.parse::<u16>().ok())
            .filter(|_| version.starts_with("HTTP/1."))
            .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
        let mut headers = Vec::new();
        for line in lines {
            let (k, v) = line
                .split_once(':')
                .ok_or_else(|| bad(format!("bad header line {line:?}")))?;
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        let mut resp = Response {
            version,
            status,
            headers,
            body: Vec::new(),
            wire_len: 0,
            chunked: false,
        };
        let mut pos = head_end;
        let no_body = head || status / 100 == 1 || status == 204 || status == 304;
        let chunked = resp
            .header("Transfer-Encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        if no_body {
        } else if chunked {
            resp.chunked = true;
            loop {
                let end = self.line_end(pos, "a chunk size line")?;
                let size_text = String::from_utf8_lossy(&self.buf[pos..end - 2]).into_owned();
                let size_hex = size_text.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size_hex, 16)
                    .map_err(|_| bad(format!("bad chunk size line {size_text:?}")))?;
                pos = end;
                if size == 0 {
                    // Trailers, then an empty line.
                    loop {
                        let end = self.line_end(pos, "chunked trailers")?;
                        let empty = end - pos == 2;
                        pos = end;
                        if empty {
                            break;
                        }
                    }
                    break;
                }
                self.ensure(pos + size + 2, "a chunk")?;
                resp.body.extend_from_slice(&self.buf[pos..pos + size]);
                if &self.buf[pos + size..pos + size + 2] != b"\r\n" {
                    return Err(bad("chunk not followed by CRLF".into()));
                }
                pos += size + 2;
            }
        } else if let Some(len) = resp.header("Content-Length") {
            let len: usize = len
                .parse()
                .map_err(|_| bad(format!("bad Content-Length {len:?}")))?;
            self.ensure(pos + len, "a response body")?;
            resp.body.extend_from_slice(&self.buf[pos..pos + len]);
            pos += len;
        } else {
            // Delimited by the end of the connection.
            while self.fill()? > 0 {}
            resp.body.extend_from_slice(&self.buf[pos..]);
            pos = self.buf.len();
        }
        resp.wire_len = pos;
        self.buf.drain(..pos);
        Ok(Some(resp))
    }

    /// Reads one response; the server closing first is an error.
    pub fn read_response(&mut self, head: bool) -> io::Result<Response> {
        self.try_read_response(head)?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection without a response",
            )
        })
    }

    /// Sends `req` and reads its response.
    pub fn request(&mut self, req: &Request) -> io::Result<Response> {
        self.send(req)?;
        self.read_response(req.is_head())
    }

    /// Whether the server has closed its side (seen as EOF).
    pub fn at_eof(&self) -> bool {
        self.eof
    }

    /// Closes the connection cleanly: shuts down our side, then reads (and counts)
    /// until the server closes its side. Bytes left unparsed are an error.
    pub fn finish(&mut self) -> io::Result<()> {
        match self.stream.shutdown(Shutdown::Write) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
            Err(e) => return Err(e),
        }
        while self.fill()? > 0 {}
        if !self.buf.is_empty() {
            return Err(bad(format!(
                "{} unexpected bytes after the last response: {:?}",
                self.buf.len(),
                String::from_utf8_lossy(&self.buf[..self.buf.len().min(200)])
            )));
        }
        Ok(())
    }
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A ureq agent for ordinary requests: every status is an answer, not an error.
pub fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .into()
}

/// The largest body [`get`] reads: ureq's default of 10 MiB is less than a
/// scrape of a node of 1,024 workers that served requests (tests/scale).
pub const GET_BODY_LIMIT: u64 = 256 << 20;

/// An ordinary `GET path` through ureq: the status and the body as text
/// (at most [`GET_BODY_LIMIT`]).
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(u16, String), ureq::Error> {
    let mut response = agent(timeout).get(format!("http://{addr}{path}")).call()?;
    let body = response
        .body_mut()
        .with_config()
        .limit(GET_BODY_LIMIT)
        .read_to_string()?;
    Ok((response.status().as_u16(), body))
}

/// One request on its own connection, then a clean close.
pub fn exchange(addr: SocketAddr, req: &Request, traffic: &mut Traffic) -> io::Result<Response> {
    sequence(addr, std::slice::from_ref(req), traffic).map(|mut v| v.remove(0))
}

/// Several requests one after the other on one keep-alive connection; when the
/// server closes it (sync workers always do), the next request goes on a new one.
/// Every connection is closed cleanly at the end.
pub fn sequence(
    addr: SocketAddr,
    reqs: &[Request],
    traffic: &mut Traffic,
) -> io::Result<Vec<Response>> {
    let mut out = Vec::new();
    let mut conn: Option<Conn> = None;
    for req in reqs {
        let c = match &mut conn {
            Some(c) => c,
            None => conn.insert(Conn::connect(addr)?),
        };
        let started = Instant::now();
        let r = c.request(req)?;
        traffic.observe(started.elapsed());
        traffic.record(&req.method, r.status);
        let closes = r.server_closes();
        out.push(r);
        if closes {
            let mut c = conn.take().expect("connection");
            c.finish()?;
            traffic.add_conn(&c);
        }
    }
    if let Some(mut c) = conn {
        c.finish()?;
        traffic.add_conn(&c);
    }
    Ok(out)
}

/// Two requests written in ONE write on a new connection, then their responses.
/// A server that answers the first with `Connection: close` (sync workers) gives
/// one response. The connection is closed cleanly.
pub fn pipelined(
    addr: SocketAddr,
    first: &Request,
    second: &Request,
    traffic: &mut Traffic,
) -> io::Result<Vec<Response>> {
    let mut c = Conn::connect(addr)?;
    let mut bytes = first.to_bytes();
    bytes.extend_from_slice(&second.to_bytes());
    c.send_raw(&bytes)?;
    let mut out = Vec::new();
    let r = c.read_response(first.is_head())?;
    traffic.record(&first.method, r.status);
    let closes = r.server_closes();
    out.push(r);
    if !closes {
        let r = c.read_response(second.is_head())?;
        traffic.record(&second.method, r.status);
        out.push(r);
    }
    c.finish()?;
    traffic.add_conn(&c);
    Ok(out)
}

/// One `GET target` with `Connection: close` over the unix socket at `path`
/// (raw: ureq speaks HTTP over TCP only):
/// (status, body), the body checked against Content-Length when given.
pub fn unix_get(
    path: &std::path::Path,
    target: &str,
    timeout: std::time::Duration,
) -> Result<(u16, Vec<u8>), String> {
    let what = format!("GET {target} over unix:{}", path.display());
    let mut s = std::os::unix::net::UnixStream::connect(path)
        .map_err(|e| format!("{what}: connect: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .and_then(|_| s.set_write_timeout(Some(timeout)))
        .map_err(|e| format!("{what}: {e}"))?;
    let req = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .map_err(|e| format!("{what}: write: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .map_err(|e| format!("{what}: read: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("{what}: no header end in {text:?}"))?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{what}: no status in {text:?}"))?;
    let body = raw[head_end + 4..].to_vec();
    let length = text[..head_end].lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())?
    });
    if length.is_some_and(|n| n != body.len()) {
        return Err(format!(
            "{what}: body of {} bytes, Content-Length {length:?}",
            body.len()
        ));
    }
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    /// A one-connection server: records what it reads (read by read) until it has
    /// `expect` bytes, answers with `reply`, then closes or not.
    fn server(
        expect: usize,
        reply: Vec<u8>,
        close: bool,
    ) -> (SocketAddr, thread::JoinHandle<Vec<Vec<u8>>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let h = thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut reads = Vec::new();
            let mut total = 0;
            while total < expect {
                let mut b = [0u8; 65536];
                let n = s.read(&mut b).unwrap();
                if n == 0 {
                    break;
                }
                total += n;
                reads.push(b[..n].to_vec());
            }
            s.write_all(&reply).unwrap();
            if close {
                s.shutdown(Shutdown::Write).unwrap();
            }
            // Drain until the client closes.
            let mut b = [0u8; 1024];
            while s.read(&mut b).map(|n| n > 0).unwrap_or(false) {}
            reads
        });
        (addr, h)
    }

    #[test]
    fn serializes_requests() {
        let r = Request::post("/echo", b"abc".to_vec()).close();
        assert_eq!(
            String::from_utf8(r.to_bytes()).unwrap(),
            "POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n\
             Connection: close\r\nContent-Length: 3\r\n\r\nabc"
        );
        assert_eq!(
            Request::get("/ok").to_bytes(),
            b"GET /ok HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        );
    }

    #[test]
    fn content_length_response_and_byte_counts() {
        let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".to_vec();
        let req = Request::get("/ok");
        let (addr, h) = server(req.to_bytes().len(), reply.clone(), true);
        let mut t = Traffic::default();
        let r = exchange(addr, &req, &mut t).unwrap();
        assert_eq!(
            (r.status, r.body.as_slice(), r.wire_len),
            (200, &b"ok"[..], reply.len())
        );
        assert!(r.server_closes());
        assert_eq!(t.sent, req.to_bytes().len() as u64);
        assert_eq!(t.received, reply.len() as u64);
        assert_eq!(t.responses[&("GET".to_string(), 200)], 1);
        assert_eq!(h.join().unwrap().concat(), req.to_bytes());
    }

    #[test]
    fn chunked_response() {
        let reply = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                      8\r\nchunk-0\n\r\n8;x=y\r\nchunk-1\n\r\n0\r\n\r\n"
            .to_vec();
        let req = Request::get("/chunked");
        let (addr, h) = server(req.to_bytes().len(), reply.clone(), false);
        let mut t = Traffic::default();
        let r = exchange(addr, &req, &mut t).unwrap();
        assert!(r.chunked);
        assert_eq!(r.body, b"chunk-0\nchunk-1\n");
        assert_eq!(r.wire_len, reply.len());
        assert_eq!(t.received, reply.len() as u64);
        h.join().unwrap();
    }

    #[test]
    fn eof_delimited_and_head_responses() {
        let reply = b"HTTP/1.0 200 OK\r\n\r\nuntil the end".to_vec();
        let req = Request::get("/x");
        let (addr, h) = server(req.to_bytes().len(), reply.clone(), true);
        let r = exchange(addr, &req, &mut Traffic::default()).unwrap();
        assert_eq!(r.body, b"until the end");
        assert!(r.server_closes());
        h.join().unwrap();

        let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n".to_vec();
        let req = Request::head("/ok");
        let (addr, h) = server(req.to_bytes().len(), reply.clone(), false);
        let r = exchange(addr, &req, &mut Traffic::default()).unwrap();
        assert!(r.body.is_empty());
        assert!(!r.server_closes());
        h.join().unwrap();
    }

    #[test]
    fn split_request_is_written_in_pieces() {
        let req = Request::post("/echo", vec![b'a'; 3000]).split_at(&[10, 40, 2000]);
        let (addr, h) = server(
            req.to_bytes().len(),
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n3000".to_vec(),
            false,
        );
        let mut c = Conn::connect(addr).unwrap();
        let r = c.request(&req).unwrap();
        c.finish().unwrap();
        assert_eq!(r.body, b"3000");
        assert_eq!(c.writes, 4);
        assert_eq!(c.sent, req.to_bytes().len() as u64);
        // What the server read (in however many reads) is the request, unchanged.
        assert_eq!(h.join().unwrap().concat(), req.to_bytes());
    }

    #[test]
    fn pipelined_pair_is_one_write() {
        let a = Request::get("/ok");
        let b = Request::get("/missing");
        let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok\
                      HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found"
            .to_vec();
        let len = a.to_bytes().len() + b.to_bytes().len();
        let (addr, h) = server(len, reply.clone(), false);
        let mut t = Traffic::default();
        let rs = pipelined(addr, &a, &b, &mut t).unwrap();
        assert_eq!(
            rs.iter().map(|r| r.status).collect::<Vec<_>>(),
            vec![200, 404]
        );
        assert_eq!(h.join().unwrap().len(), 1);
        assert_eq!((t.sent, t.received), (len as u64, reply.len() as u64));
    }

    #[test]
    fn pipelined_pair_with_close_gives_one_response() {
        let a = Request::get("/ok");
        let b = Request::get("/missing");
        let reply = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok".to_vec();
        let len = a.to_bytes().len() + b.to_bytes().len();
        let (addr, h) = server(len, reply, true);
        let rs = pipelined(addr, &a, &b, &mut Traffic::default()).unwrap();
        assert_eq!(rs.len(), 1);
        h.join().unwrap();
    }

    #[test]
    fn premature_close_is_an_error() {
        let req = Request::get("/ok");
        let (addr, h) = server(
            req.to_bytes().len(),
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort".to_vec(),
            true,
        );
        let err = exchange(addr, &req, &mut Traffic::default()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        h.join().unwrap();
    }
}
