//! RTSP 1.0 message framing (RFC 2326 sections 4, 6, 7 and 10.12): request parsing from a byte buffer,
//! interleaved binary frames sent by clients, and response serialization. Pure functions, no I/O.

/// Longest accepted request line plus headers. Longer heads are rejected with 400 and the connection closed.
pub(crate) const MAX_HEAD_BYTES: usize = 8 * 1024;

/// Largest accepted request body (`Content-Length`), e.g. a `SET_PARAMETER` payload.
pub(crate) const MAX_BODY_BYTES: usize = 16 * 1024;

/// Most header lines accepted in one request.
const MAX_HEADERS: usize = 64;

/// A parsed request. Header names keep their spelling; lookups are case-insensitive (RFC 2326 section 4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    pub(crate) method: String,
    pub(crate) uri: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Request {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Result of looking at the start of the receive buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// More bytes are needed.
    Incomplete,
    /// Bytes to drop without a response: an interleaved binary frame from the client (e.g. RTCP receiver
    /// reports) or blank lines between requests.
    Skip(usize),
    /// A complete request, and how many bytes it used.
    Request(Request, usize),
    /// Unparseable: answer with `status` (echoing `cseq` if found) and close, since framing is lost.
    Malformed { status: u16, cseq: Option<String> },
}

/// Parses the first message in `buf`.
pub(crate) fn parse(buf: &[u8]) -> Parsed {
    let Some(&first) = buf.first() else {
        return Parsed::Incomplete;
    };
    if first == b'$' {
        // RFC 2326 section 10.12: `$`, channel, 16-bit big-endian length, data.
        if buf.len() < 4 {
            return Parsed::Incomplete;
        }
        let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        if buf.len() < 4 + len {
            return Parsed::Incomplete;
        }
        return Parsed::Skip(4 + len);
    }
    let blank = buf
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    if blank > 0 {
        return Parsed::Skip(blank);
    }
    let Some(head_len) = find_head_end(buf) else {
        return if buf.len() > MAX_HEAD_BYTES {
            Parsed::Malformed {
                status: 400,
                cseq: None,
            }
        } else {
            Parsed::Incomplete
        };
    };
    if head_len > MAX_HEAD_BYTES {
        return Parsed::Malformed {
            status: 400,
            cseq: None,
        };
    }
    let Ok(head) = std::str::from_utf8(&buf[..head_len]) else {
        return Parsed::Malformed {
            status: 400,
            cseq: None,
        };
    };
    match parse_head(head) {
        Err((status, cseq)) => Parsed::Malformed { status, cseq },
        Ok(mut req) => {
            let content_len = match req.header("Content-Length") {
                None => 0,
                Some(v) => match v.trim().parse::<usize>() {
                    Ok(n) if n <= MAX_BODY_BYTES => n,
                    Ok(_) => {
                        return Parsed::Malformed {
                            status: 413,
                            cseq: req.header("CSeq").map(str::to_owned),
                        }
                    }
                    Err(_) => {
                        return Parsed::Malformed {
                            status: 400,
                            cseq: req.header("CSeq").map(str::to_owned),
                        }
                    }
                },
            };
            let total = head_len + content_len;
            if buf.len() < total {
                return Parsed::Incomplete;
            }
            req.body = buf[head_len..total].to_vec();
            Parsed::Request(req, total)
        }
    }
}

/// Offset just past the empty line ending the head (`\r\n\r\n`, tolerating bare `\n`), if present.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    let limit = buf.len().min(MAX_HEAD_BYTES + 4);
    let mut i = 0;
    while i < limit {
        if buf[i] == b'\n' {
            match buf.get(i + 1) {
                Some(b'\n') => return Some(i + 2),
                Some(b'\r') if buf.get(i + 2) == Some(&b'\n') => return Some(i + 3),
                _ => {}
            }
        }
        i += 1;
    }
    None
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Parses request line and headers. On error returns the status to answer and the CSeq if one was seen.
fn parse_head(head: &str) -> Result<Request, (u16, Option<String>)> {
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let request_line = lines.next().unwrap_or("");
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut bad_header = false;
    for line in lines {
        if line.is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            // Obsolete line folding (LWS): continue the previous header's value.
            match headers.last_mut() {
                Some((_, v)) => {
                    v.push(' ');
                    v.push_str(line.trim());
                }
                None => bad_header = true,
            }
            continue;
        }
        match line.split_once(':') {
            Some((name, value)) if is_token(name) => {
                headers.push((name.to_owned(), value.trim().to_owned()))
            }
            _ => bad_header = true,
        }
    }
    let cseq = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("CSeq"))
        .map(|(_, v)| v.clone());
    if bad_header
        || headers.len() > MAX_HEADERS
        || request_line.bytes().any(|b| b.is_ascii_control())
    {
        return Err((400, cseq));
    }
    let parts: Vec<&str> = request_line.split(' ').collect();
    let [method, uri, version] = parts[..] else {
        return Err((400, cseq));
    };
    if !is_token(method) || uri.is_empty() {
        return Err((400, cseq));
    }
    if version != "RTSP/1.0" {
        let status = if version.starts_with("RTSP/") {
            505
        } else {
            400
        };
        return Err((status, cseq));
    }
    Ok(Request {
        method: method.to_owned(),
        uri: uri.to_owned(),
        headers,
        body: Vec::new(),
    })
}

/// Reason phrases for the status codes this server sends (RFC 2326 section 7.1.1).
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Request Entity Too Large",
        451 => "Parameter Not Understood",
        454 => "Session Not Found",
        455 => "Method Not Valid in This State",
        461 => "Unsupported Transport",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "RTSP Version not supported",
        551 => "Option not supported",
        _ => "Error",
    }
}

/// An RTSP response under construction.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: Vec<u8>,
}

impl Response {
    pub(crate) fn new(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub(crate) fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Appends the serialized response to `out`. `CSeq` is echoed first when known (RFC 2326 section 12.17).
    pub(crate) fn write_to(&self, cseq: Option<&str>, out: &mut Vec<u8>) {
        use std::fmt::Write as _;
        let mut head = String::with_capacity(256);
        let _ = write!(head, "RTSP/1.0 {} {}\r\n", self.status, reason(self.status));
        if let Some(c) = cseq {
            let _ = write!(head, "CSeq: {c}\r\n");
        }
        let _ = write!(head, "Server: nvr-camsim\r\n");
        for (n, v) in &self.headers {
            let _ = write!(head, "{n}: {v}\r\n");
        }
        if !self.body.is_empty() || self.status != 200 {
            let _ = write!(head, "Content-Length: {}\r\n", self.body.len());
        }
        head.push_str("\r\n");
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(&self.body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(buf: &[u8]) -> (Request, usize) {
        match parse(buf) {
            Parsed::Request(r, n) => (r, n),
            other => panic!("expected request, got {other:?}"),
        }
    }

    #[test]
    fn simple_request() {
        let buf = b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nUser-Agent: x\r\n\r\n";
        let (r, n) = req(buf);
        assert_eq!(n, buf.len());
        assert_eq!(r.method, "OPTIONS");
        assert_eq!(r.uri, "*");
        assert_eq!(r.header("cseq"), Some("1"));
        assert_eq!(r.header("user-agent"), Some("x"));
    }

    #[test]
    fn incomplete_and_pipelined() {
        let one = b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n".to_vec();
        for cut in 0..one.len() {
            assert_eq!(parse(&one[..cut]), Parsed::Incomplete, "cut at {cut}");
        }
        let two =
            b"SET_PARAMETER rtsp://h/cam1 RTSP/1.0\r\nCSeq: 2\r\nContent-Length: 5\r\n\r\nhello";
        let mut both = one.clone();
        both.extend_from_slice(two);
        let (r1, n1) = req(&both);
        assert_eq!(r1.header("CSeq"), Some("1"));
        let (r2, n2) = req(&both[n1..]);
        assert_eq!(r2.body, b"hello");
        assert_eq!(n1 + n2, both.len());
        assert_eq!(parse(&both[n1..both.len() - 1]), Parsed::Incomplete);
    }

    #[test]
    fn bare_lf_and_interleaved() {
        let (r, _) = req(b"OPTIONS * RTSP/1.0\nCSeq: 3\n\n");
        assert_eq!(r.header("CSeq"), Some("3"));
        assert_eq!(parse(b"$\x01\x00\x02ab"), Parsed::Skip(6));
        assert_eq!(parse(b"$\x01\x00\x02a"), Parsed::Incomplete);
        assert_eq!(parse(b"\r\n\r\nOPTIONS"), Parsed::Skip(4));
    }

    #[test]
    fn malformed() {
        let bad = |b: &[u8]| match parse(b) {
            Parsed::Malformed { status, cseq } => (status, cseq),
            other => panic!("expected malformed, got {other:?}"),
        };
        assert_eq!(bad(b"\x00\x01\x02garbage\r\n\r\n").0, 400);
        assert_eq!(
            bad(b"OPTIONS *\r\nCSeq: 1\r\n\r\n"),
            (400, Some("1".into()))
        );
        assert_eq!(bad(b"OPTIONS * HTTP/1.1\r\nCSeq: 1\r\n\r\n").0, 400);
        assert_eq!(bad(b"OPTIONS * RTSP/2.0\r\nCSeq: 1\r\n\r\n").0, 505);
        assert_eq!(bad(b"OPTIONS * RTSP/1.0\r\nno colon\r\n\r\n").0, 400);
        assert_eq!(
            bad(b"OPTIONS * RTSP/1.0\r\nCSeq: 4\r\nContent-Length: x\r\n\r\n"),
            (400, Some("4".into()))
        );
        assert_eq!(
            bad(b"OPTIONS * RTSP/1.0\r\nCSeq: 4\r\nContent-Length: 99999999\r\n\r\n").0,
            413
        );
        assert_eq!(bad(&[0xff; 20_000]).0, 400);
        let mut long = b"OPTIONS * RTSP/1.0\r\nX: ".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_HEAD_BYTES));
        assert_eq!(bad(&long).0, 400);
        assert_eq!(bad(b"\xff\xfe * RTSP/1.0\r\n\r\n").0, 400);
    }

    #[test]
    fn response_serialization() {
        let mut out = Vec::new();
        Response::new(200)
            .header("Public", "OPTIONS")
            .write_to(Some("7"), &mut out);
        assert_eq!(
            String::from_utf8(out).expect("ascii"),
            "RTSP/1.0 200 OK\r\nCSeq: 7\r\nServer: nvr-camsim\r\nPublic: OPTIONS\r\n\r\n"
        );
    }

    /// Mutated and random inputs never panic, and a parsed request never claims more bytes than given.
    #[test]
    fn fuzz_no_panic() {
        use rand::{Rng as _, SeedableRng as _};
        let mut rng = rand::rngs::StdRng::seed_from_u64(2326);
        let valid = b"SETUP rtsp://h/cam1/track1 RTSP/1.0\r\nCSeq: 3\r\nTransport: RTP/AVP/TCP;interleaved=0-1\r\nContent-Length: 4\r\n\r\nbody$\x00\x00\x01x";
        for _ in 0..20_000 {
            let mut buf = valid.to_vec();
            for _ in 0..rng.random_range(1..6) {
                let i = rng.random_range(0..buf.len());
                match rng.random_range(0..3) {
                    0 => buf[i] = rng.random(),
                    1 => {
                        buf.remove(i);
                    }
                    _ => buf.insert(i, rng.random()),
                }
            }
            buf.truncate(rng.random_range(0..=buf.len()));
            let mut off = 0;
            while off < buf.len() {
                match parse(&buf[off..]) {
                    Parsed::Request(_, n) | Parsed::Skip(n) => {
                        assert!(n > 0 && off + n <= buf.len());
                        off += n;
                    }
                    Parsed::Incomplete | Parsed::Malformed { .. } => break,
                }
            }
        }
    }
}
