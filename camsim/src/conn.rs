//! One RTSP connection: request handling (OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET/SET_PARAMETER),
//! the single TCP-interleaved RTP session it may carry, real-time pacing, and RTCP sender reports.
//!
//! Everything for a connection runs in one task: requests and media share the socket and never interleave
//! mid-message. Each simulated stream is one live source with a frame clock shared by all its sessions
//! ([`Shared::frame_at`]): frame `k` of a stream is due at the same instant for every session, carries the
//! same stamp (sequence number `k`, scheduled send time) and the same RTP timestamp offset. When a frame is
//! due, the session copies its pre-packetized access unit, inserts the stamp SEI packet before the first
//! slice, patches sequence numbers, timestamps, SSRC and channel, and writes it with one `write_all`.

use super::clip::{Clip, INTERLEAVED_PREFIX_BYTES, RTP_HEADER_BYTES, RTP_PAYLOAD_TYPE};
use super::rtsp::{self, Parsed, Request, Response};
use super::stamp::{encode_sei_into, FrameStamp};
use bytes::{Buf as _, BytesMut};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tracing::debug;

const PUBLIC_METHODS: &str =
    "OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER, SET_PARAMETER";

/// Control attribute of the single video track, relative to the stream's base URL.
const TRACK_CONTROL: &str = "track1";

/// Seconds between 1900-01-01 (NTP epoch) and 1970-01-01.
const NTP_UNIX_OFFSET_SECS: u64 = 2_208_988_800;

/// Clip frames by which stream `/camN` is shifted (N * 7), so streams do not show the same picture or
/// send key frames at the same instant.
const CAM_CLIP_OFFSET_FRAMES: u64 = 7;

/// Distinct frame-clock phases among the streams (see [`Shared::phase_us`]). Spreading the streams over
/// 40 per-millisecond phases instead cost more than twice the CPU (many more runtime wake-ups).
const PHASE_SLOTS: u64 = 4;

/// A session further behind its stream's live frame than this many seconds (a client reading slower
/// than the stream's bit rate) skips ahead to the live frame, as a camera whose send queue overflows
/// does; the skipped sequence numbers show as a gap in the stamps.
const MAX_LAG_SECS: u64 = 2;

/// Server-wide settings shared by all connections.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) clip: Arc<Clip>,
    pub(crate) streams: usize,
    /// When every stream's frame 0 was due (monotonic clock).
    pub(crate) started: Instant,
    /// The same moment on the wall clock: microseconds since the Unix epoch.
    pub(crate) started_wall_us: u64,
    pub(crate) session_timeout: Duration,
    pub(crate) write_timeout: Duration,
}

impl Shared {
    /// Offset of stream `cam`'s frame clock from `started`, in microseconds: one of [`PHASE_SLOTS`] evenly
    /// spaced slots of a frame period (`cam` modulo the slot count), so hundreds of streams do not all send
    /// in the same instant, while a few slots keep the server's wake-ups per second low (each wake-up
    /// serves every session due in its slot).
    fn phase_us(&self, cam: usize) -> u64 {
        let period_us = 1_000_000 / u64::from(self.clip.fps());
        (cam as u64 % PHASE_SLOTS) * period_us / PHASE_SLOTS
    }

    /// Stream `cam`'s frame due at `now`: frames since its clock's origin at the clip's frame rate (the
    /// same for every session of the stream).
    pub(crate) fn frame_at(&self, cam: usize, now: Instant) -> u64 {
        let origin = self.started + Duration::from_micros(self.phase_us(cam));
        let ns = now.saturating_duration_since(origin).as_nanos();
        (ns * u128::from(self.clip.fps()) / 1_000_000_000) as u64
    }

    /// When frame `k` of stream `cam` is due (the first instant at which [`Shared::frame_at`] returns
    /// `k`).
    pub(crate) fn frame_instant(&self, cam: usize, k: u64) -> Instant {
        let ns = (u128::from(k) * 1_000_000_000).div_ceil(u128::from(self.clip.fps()));
        self.started
            + Duration::from_micros(self.phase_us(cam))
            + Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }

    /// Wall-clock time frame `k` of stream `cam` is scheduled to be sent, in microseconds since the
    /// Unix epoch.
    pub(crate) fn send_time_us(&self, cam: usize, k: u64) -> u64 {
        let us = u128::from(k) * 1_000_000 / u128::from(self.clip.fps());
        self.started_wall_us
            .saturating_add(self.phase_us(cam))
            .saturating_add(u64::try_from(us).unwrap_or(u64::MAX))
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnError {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("client did not accept data for {0:?}")]
    WriteTimeout(Duration),
}

/// The RTP session set up on this connection.
#[derive(Debug)]
struct Session {
    id: String,
    cam: usize,
    rtp_channel: u8,
    rtcp_channel: u8,
    ssrc: u32,
    /// Sequence number of the next RTP packet.
    next_seq: u16,
    /// RTP timestamp of the stream's frame 0 for this session (random); stream frame `k` has
    /// `ts_base + k * frame_duration`, so all sessions see the same timestamp deltas.
    ts_base: u32,
    frames_sent: u64,
    /// Stream frame index (= stamp sequence number) of the next access unit to send.
    next_frame: u64,
    packets_sent: u32,
    octets_sent: u32,
    playing: bool,
}

/// What the connection loop does after answering a request.
enum After {
    Continue,
    StartPlaying,
    StopPlaying,
}

struct Conn<'a> {
    shared: &'a Shared,
    local_addr: SocketAddr,
    session: Option<Session>,
}

/// Serves one client connection until it closes, times out, or fails.
pub(crate) async fn serve(mut stream: TcpStream, shared: Arc<Shared>) -> Result<(), ConnError> {
    let local_addr = stream.local_addr()?;
    let mut conn = Conn {
        shared: &shared,
        local_addr,
        session: None,
    };
    let mut read_buf = BytesMut::with_capacity(4096);
    let mut out: Vec<u8> = Vec::with_capacity(64 * 1024);
    // Fires when the session's next frame is due; only polled while playing.
    let pacer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(pacer);
    let mut playing = false;
    let timeout = shared.session_timeout;
    let mut last_activity = Instant::now();
    let idle = tokio::time::sleep(timeout);
    tokio::pin!(idle);
    loop {
        // Answer every complete request already buffered (pipelining), in order.
        loop {
            match rtsp::parse(&read_buf) {
                Parsed::Incomplete => break,
                Parsed::Skip(n) => read_buf.advance(n),
                Parsed::Malformed { status, cseq } => {
                    debug!(status, "camsim: malformed request; closing");
                    out.clear();
                    Response::new(status).write_to(cseq.as_deref(), &mut out);
                    write_all(&mut stream, &out, shared.write_timeout).await?;
                    return Ok(());
                }
                Parsed::Request(req, n) => {
                    read_buf.advance(n);
                    let (resp, after) = conn.handle(&req);
                    out.clear();
                    resp.write_to(req.header("CSeq"), &mut out);
                    write_all(&mut stream, &out, shared.write_timeout).await?;
                    match after {
                        After::Continue => {}
                        After::StartPlaying => {
                            if let Some(s) = &conn.session {
                                pacer
                                    .as_mut()
                                    .reset(shared.frame_instant(s.cam, s.next_frame).into());
                                playing = true;
                            }
                        }
                        After::StopPlaying => playing = false,
                    }
                }
            }
        }
        read_buf.reserve(4096);
        tokio::select! {
            r = stream.read_buf(&mut read_buf) => {
                if r? == 0 {
                    return Ok(());
                }
                last_activity = Instant::now();
            }
            () = &mut pacer, if playing => {
                if let Some(s) = conn.session.as_mut() {
                    // Every frame due by now, in order (several after a slow write), from one buffer.
                    let live = shared.frame_at(s.cam, Instant::now());
                    let max_lag = MAX_LAG_SECS * u64::from(shared.clip.fps());
                    if live > s.next_frame + max_lag {
                        debug!(session = %s.id, from = s.next_frame, to = live, "camsim: client too slow; skipping to the live frame");
                        s.next_frame = live;
                    }
                    out.clear();
                    while s.next_frame <= live {
                        s.append_frame(&shared, &mut out);
                    }
                    write_all(&mut stream, &out, shared.write_timeout).await?;
                    pacer.as_mut().reset(shared.frame_instant(s.cam, s.next_frame).into());
                } else {
                    playing = false;
                }
            }
            () = &mut idle => {
                let deadline = last_activity + timeout;
                if Instant::now() >= deadline {
                    debug!(?timeout, "camsim: session timed out");
                    return Ok(());
                }
                idle.as_mut().reset(deadline.into());
            }
        }
    }
}

async fn write_all(stream: &mut TcpStream, buf: &[u8], limit: Duration) -> Result<(), ConnError> {
    match tokio::time::timeout(limit, stream.write_all(buf)).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(ConnError::WriteTimeout(limit)),
    }
}

/// Parses `rtsp://host[:port]/camN[/rest]` or `/camN[/rest]`; returns the authority to use in URLs, the
/// camera number, and the rest of the path (without leading slash).
fn parse_uri(uri: &str, local_addr: SocketAddr) -> Option<(String, usize, String)> {
    let (authority, path) = if uri.starts_with('/') {
        (local_addr.to_string(), uri.to_owned())
    } else {
        let url = url::Url::parse(uri).ok()?;
        if url.scheme() != "rtsp" {
            return None;
        }
        let host = url.host_str()?;
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        };
        (authority, url.path().to_owned())
    };
    let path = path.split(['?', '#']).next().unwrap_or("");
    let path = path.trim_start_matches('/');
    let (first, rest) = path.split_once('/').unwrap_or((path, ""));
    let digits = first.strip_prefix("cam")?;
    let n: usize = digits.parse().ok()?;
    if n.to_string() != digits {
        return None;
    }
    Some((authority, n, rest.trim_end_matches('/').to_owned()))
}

fn error(status: u16) -> (Response, After) {
    (Response::new(status), After::Continue)
}

impl Conn<'_> {
    fn handle(&mut self, req: &Request) -> (Response, After) {
        if req.header("CSeq").is_none() {
            return error(400);
        }
        if let Some(req_opts) = req.header("Require") {
            // No extensions are supported (RFC 2326 section 12.32).
            return (
                Response::new(551).header("Unsupported", req_opts.to_owned()),
                After::Continue,
            );
        }
        debug!(method = %req.method, uri = %req.uri, "camsim: request");
        match req.method.as_str() {
            "OPTIONS" => (
                Response::new(200).header("Public", PUBLIC_METHODS),
                After::Continue,
            ),
            "DESCRIBE" => self.describe(req),
            "SETUP" => self.setup(req),
            "PLAY" => self.play(req),
            "TEARDOWN" => match self.check_session(req) {
                Err(e) => e,
                Ok(()) => {
                    if let Some(s) = self.session.take() {
                        debug!(session = %s.id, frames_sent = s.frames_sent, "camsim: teardown");
                    }
                    (Response::new(200), After::StopPlaying)
                }
            },
            "GET_PARAMETER" | "SET_PARAMETER" => {
                if req.header("Session").is_some() {
                    if let Err(e) = self.check_session(req) {
                        return e;
                    }
                }
                if req.method == "SET_PARAMETER" && !req.body.is_empty() {
                    return error(451);
                }
                let mut resp = Response::new(200);
                if let Some(s) = &self.session {
                    resp = resp.header("Session", self.session_header(s));
                }
                (resp, After::Continue)
            }
            "ANNOUNCE" | "RECORD" | "PAUSE" | "REDIRECT" => (
                Response::new(405).header("Allow", PUBLIC_METHODS),
                After::Continue,
            ),
            _ => error(501),
        }
    }

    fn session_header(&self, s: &Session) -> String {
        format!(
            "{};timeout={}",
            s.id,
            self.shared.session_timeout.as_secs().max(1)
        )
    }

    /// Checks the request's `Session` header against this connection's session.
    fn check_session(&self, req: &Request) -> Result<(), (Response, After)> {
        let wanted = req
            .header("Session")
            .map(|v| v.split(';').next().unwrap_or("").trim());
        match (&self.session, wanted) {
            (Some(s), Some(w)) if s.id == w => Ok(()),
            _ => Err(error(454)),
        }
    }

    fn cam(&self, req: &Request) -> Result<(String, usize, String), (Response, After)> {
        match parse_uri(&req.uri, self.local_addr) {
            Some((a, n, rest)) if (1..=self.shared.streams).contains(&n) => Ok((a, n, rest)),
            _ => Err(error(404)),
        }
    }

    fn describe(&mut self, req: &Request) -> (Response, After) {
        let (authority, cam, rest) = match self.cam(req) {
            Ok(v) => v,
            Err(e) => return e,
        };
        if !rest.is_empty() {
            return error(404);
        }
        let clip = &self.shared.clip;
        let base = format!("rtsp://{authority}/cam{cam}/");
        let ip = self.local_addr.ip();
        let ip_kind = if ip.is_ipv4() { "IP4" } else { "IP6" };
        let sdp = format!(
            "v=0\r\n\
             o=- {sess} 1 IN {ip_kind} {ip}\r\n\
             s=nvr camsim cam{cam}\r\n\
             c=IN {ip_kind} {unspec}\r\n\
             t=0 0\r\n\
             a=tool:nvr-camsim\r\n\
             a=range:npt=now-\r\n\
             a=control:{base}\r\n\
             m=video 0 RTP/AVP {pt}\r\n\
             a=rtpmap:{pt} H264/90000\r\n\
             a=fmtp:{pt} packetization-mode=1;profile-level-id={pli};sprop-parameter-sets={sprop}\r\n\
             a=framerate:{fps}\r\n\
             a=control:{TRACK_CONTROL}\r\n",
            sess = self.shared.started.elapsed().as_secs() + 1,
            unspec = if ip.is_ipv4() { "0.0.0.0" } else { "::" },
            pt = super::clip::RTP_PAYLOAD_TYPE,
            pli = clip.profile_level_id(),
            sprop = clip.sprop_parameter_sets(),
            fps = clip.fps(),
        );
        let mut resp = Response::new(200)
            .header("Content-Base", base)
            .header("Content-Type", "application/sdp");
        resp.body = sdp.into_bytes();
        (resp, After::Continue)
    }

    fn setup(&mut self, req: &Request) -> (Response, After) {
        let (_, cam, rest) = match self.cam(req) {
            Ok(v) => v,
            Err(e) => return e,
        };
        if !rest.is_empty() && rest != TRACK_CONTROL {
            return error(404);
        }
        if req.header("Session").is_some() {
            if let Err(e) = self.check_session(req) {
                return e;
            }
        }
        if self.session.as_ref().is_some_and(|s| s.playing) {
            return error(455);
        }
        let Some(transport) = req.header("Transport") else {
            return error(400);
        };
        let Some((rtp_channel, rtcp_channel)) = choose_transport(transport) else {
            return error(461);
        };
        let id = match &self.session {
            Some(s) => s.id.clone(),
            None => format!("{:016X}", rand::random::<u64>()),
        };
        let s = Session {
            id,
            cam,
            rtp_channel,
            rtcp_channel,
            ssrc: rand::random(),
            next_seq: rand::random(),
            ts_base: rand::random(),
            frames_sent: 0,
            next_frame: 0,
            packets_sent: 0,
            octets_sent: 0,
            playing: false,
        };
        debug!(session = %s.id, cam, ssrc = s.ssrc, "camsim: setup");
        let resp = Response::new(200)
            .header(
                "Transport",
                format!(
                    "RTP/AVP/TCP;unicast;interleaved={rtp_channel}-{rtcp_channel};ssrc={:08X}",
                    s.ssrc
                ),
            )
            .header("Session", self.session_header(&s));
        self.session = Some(s);
        (resp, After::Continue)
    }

    fn play(&mut self, req: &Request) -> (Response, After) {
        if let Err(e) = self.check_session(req) {
            return e;
        }
        let authority = parse_uri(&req.uri, self.local_addr)
            .map(|(a, _, _)| a)
            .unwrap_or_else(|| self.local_addr.to_string());
        let shared = self.shared;
        let Some(s) = self.session.as_mut() else {
            return error(454);
        };
        let was_playing = s.playing;
        if !was_playing {
            // Each stream is one live source: a new viewer starts at the frame due now, key frame or
            // not, like a real camera.
            s.next_frame = shared.frame_at(s.cam, Instant::now());
            s.playing = true;
            debug!(session = %s.id, cam = s.cam, start_frame = s.next_frame, "camsim: play");
        }
        let rtptime = s.rtp_timestamp(s.next_frame, &shared.clip);
        let rtp_info = format!(
            "url=rtsp://{authority}/cam{}/{TRACK_CONTROL};seq={};rtptime={rtptime}",
            s.cam, s.next_seq
        );
        let session_header = format!(
            "{};timeout={}",
            s.id,
            shared.session_timeout.as_secs().max(1)
        );
        let resp = Response::new(200)
            .header("Session", session_header)
            .header("Range", "npt=now-")
            .header("RTP-Info", rtp_info);
        let after = if was_playing {
            After::Continue
        } else {
            After::StartPlaying
        };
        (resp, after)
    }
}

/// Picks the first unicast `RTP/AVP/TCP` spec from a `Transport` header (RFC 2326 section 12.39) and returns
/// its interleaved channels (default 0-1). `None` if no acceptable spec is offered.
fn choose_transport(header: &str) -> Option<(u8, u8)> {
    for spec in header.split(',') {
        let mut parts = spec.split(';').map(str::trim);
        let proto = parts.next().unwrap_or("");
        if !proto.eq_ignore_ascii_case("RTP/AVP/TCP") {
            continue;
        }
        let mut channels = Some((0u8, 1u8));
        let mut multicast = false;
        for p in parts {
            if p.eq_ignore_ascii_case("multicast") {
                multicast = true;
            } else if let Some(v) = p.strip_prefix("interleaved=") {
                channels = match v.split_once('-') {
                    Some((a, b)) => a.parse().ok().zip(b.parse().ok()),
                    None => v
                        .parse::<u8>()
                        .ok()
                        .and_then(|a| Some((a, a.checked_add(1)?))),
                };
            }
        }
        if let (false, Some((a, b))) = (multicast, channels) {
            if a != b {
                return Some((a, b));
            }
        }
    }
    None
}

impl Session {
    /// RTP timestamp of stream frame `k` in this session.
    fn rtp_timestamp(&self, k: u64, clip: &Clip) -> u32 {
        self.ts_base
            .wrapping_add((k as u32).wrapping_mul(clip.frame_duration_ticks()))
    }

    /// Appends the session's next access unit (stream frame `next_frame`) to `out` as interleaved RTP
    /// packets: the clip's pre-packetized packets with the stamp SEI packet inserted before the first
    /// slice, plus an RTCP sender report about once per second; then advances the session.
    fn append_frame(&mut self, shared: &Shared, out: &mut Vec<u8>) {
        let clip = &shared.clip;
        let k = self.next_frame;
        let clip_index = (k.wrapping_add(self.cam as u64 * CAM_CLIP_OFFSET_FRAMES)
            % clip.frame_count() as u64) as usize;
        let t = clip.template(clip_index);
        let ts = self.rtp_timestamp(k, clip);
        let send_time_us = shared.send_time_us(self.cam, k);
        let start = out.len();
        out.extend_from_slice(&t.bytes[..t.sei_offset]);
        // The stamp: a single NAL unit packet, no marker (a slice follows); header patched below.
        let sei_packet = out.len();
        out.extend_from_slice(&[b'$', 0, 0, 0, 0x80, RTP_PAYLOAD_TYPE]);
        out.extend_from_slice(&[0; RTP_HEADER_BYTES - 2]);
        encode_sei_into(
            FrameStamp {
                seq: k,
                send_time_us,
            },
            out,
        );
        let sei_payload_bytes =
            out.len() - sei_packet - INTERLEAVED_PREFIX_BYTES - RTP_HEADER_BYTES;
        let frame_len = (RTP_HEADER_BYTES + sei_payload_bytes) as u16;
        out[sei_packet + 2..sei_packet + 4].copy_from_slice(&frame_len.to_be_bytes());
        out.extend_from_slice(&t.bytes[t.sei_offset..]);
        let ssrc = self.ssrc.to_be_bytes();
        let ts_bytes = ts.to_be_bytes();
        let mut off = start;
        while off + INTERLEAVED_PREFIX_BYTES + RTP_HEADER_BYTES <= out.len() {
            let len = usize::from(u16::from_be_bytes([out[off + 2], out[off + 3]]));
            out[off + 1] = self.rtp_channel;
            let h = off + INTERLEAVED_PREFIX_BYTES;
            out[h + 2..h + 4].copy_from_slice(&self.next_seq.to_be_bytes());
            out[h + 4..h + 8].copy_from_slice(&ts_bytes);
            out[h + 8..h + 12].copy_from_slice(&ssrc);
            self.next_seq = self.next_seq.wrapping_add(1);
            off = h + len;
        }
        self.packets_sent = self.packets_sent.wrapping_add(t.packet_count + 1);
        self.octets_sent = self
            .octets_sent
            .wrapping_add(t.payload_bytes + sei_payload_bytes as u32);
        if self.frames_sent % u64::from(clip.fps()) == 0 {
            self.append_sender_report(send_time_us, ts, out);
        }
        self.frames_sent += 1;
        self.next_frame = k + 1;
    }

    /// Appends an interleaved RTCP compound packet: sender report (RFC 3550 section 6.4.1) mapping the
    /// frame just queued, scheduled at `wall_us` (microseconds since the Unix epoch), to its RTP
    /// timestamp `ts`, then SDES with a CNAME (section 6.5). Every session of a stream maps a frame to the
    /// same wall time, the one in the frame's stamp.
    fn append_sender_report(&self, wall_us: u64, ts: u32, out: &mut Vec<u8>) {
        let ntp_secs = (wall_us / 1_000_000 + NTP_UNIX_OFFSET_SECS) as u32;
        let ntp_frac = (((wall_us % 1_000_000) << 32) / 1_000_000) as u32;
        let cname = b"nvr-camsim";
        // SDES chunk: SSRC, CNAME item (type, length, text), then a zero end byte, padded to 32 bits.
        let sdes_chunk_bytes = (4 + 2 + cname.len() + 1).div_ceil(4) * 4;
        let sdes_bytes = 4 + sdes_chunk_bytes;
        let sr_bytes = 28;
        let total = (sr_bytes + sdes_bytes) as u16;
        out.extend_from_slice(&[b'$', self.rtcp_channel]);
        out.extend_from_slice(&total.to_be_bytes());
        out.extend_from_slice(&[0x80, 200]);
        out.extend_from_slice(&((sr_bytes / 4 - 1) as u16).to_be_bytes());
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        out.extend_from_slice(&ntp_secs.to_be_bytes());
        out.extend_from_slice(&ntp_frac.to_be_bytes());
        out.extend_from_slice(&ts.to_be_bytes());
        out.extend_from_slice(&self.packets_sent.to_be_bytes());
        out.extend_from_slice(&self.octets_sent.to_be_bytes());
        out.extend_from_slice(&[0x81, 202]);
        out.extend_from_slice(&((sdes_bytes / 4 - 1) as u16).to_be_bytes());
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        out.extend_from_slice(&[1, cname.len() as u8]);
        out.extend_from_slice(cname);
        let pad = sdes_chunk_bytes - (4 + 2 + cname.len());
        out.extend(std::iter::repeat_n(0u8, pad));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_choice() {
        assert_eq!(
            choose_transport("RTP/AVP/TCP;unicast;interleaved=0-1"),
            Some((0, 1))
        );
        assert_eq!(
            choose_transport("RTP/AVP;unicast;client_port=5000-5001,RTP/AVP/TCP;interleaved=4-5"),
            Some((4, 5))
        );
        assert_eq!(choose_transport("RTP/AVP/TCP;interleaved=6"), Some((6, 7)));
        assert_eq!(choose_transport("RTP/AVP/TCP"), Some((0, 1)));
        assert_eq!(
            choose_transport("RTP/AVP;unicast;client_port=5000-5001"),
            None
        );
        assert_eq!(choose_transport("RTP/AVP/TCP;interleaved=255"), None);
        assert_eq!(choose_transport("RTP/AVP/TCP;interleaved=x-1"), None);
    }

    #[test]
    fn uri_parsing() {
        let local: SocketAddr = ([127, 0, 0, 1], 9).into();
        assert_eq!(
            parse_uri("rtsp://h:554/cam3/track1", local),
            Some(("h:554".into(), 3, "track1".into()))
        );
        assert_eq!(
            parse_uri("/cam12/", local),
            Some(("127.0.0.1:9".into(), 12, String::new()))
        );
        assert_eq!(parse_uri("rtsp://h/cam01", local), None);
        assert_eq!(parse_uri("rtsp://h/camx", local), None);
        assert_eq!(parse_uri("http://h/cam1", local), None);
        assert_eq!(parse_uri("*", local), None);
    }

    #[test]
    fn frame_patching_stamps_and_sender_report() {
        let clip = Clip::embedded();
        let shared = Shared {
            clip: clip.clone(),
            streams: 2,
            started: Instant::now(),
            started_wall_us: 1_700_000_000_000_000,
            session_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(5),
        };
        let start_frame = 1_000u64;
        let mut s = Session {
            id: "X".into(),
            cam: 1,
            rtp_channel: 2,
            rtcp_channel: 3,
            ssrc: 0x1234_5678,
            next_seq: 65_535,
            ts_base: u32::MAX - 100,
            frames_sent: 0,
            next_frame: start_frame,
            packets_sent: 0,
            octets_sent: 0,
            playing: true,
        };
        let mut out = Vec::new();
        let mut expected_seq = 65_535u16;
        for n in 0..(clip.frame_count() as u64 + 30) {
            let k = start_frame + n;
            out.clear();
            s.append_frame(&shared, &mut out);
            let want_ts = (u32::MAX - 100).wrapping_add(k as u32 * 3600);
            let mut off = 0;
            let mut saw_sr = false;
            let mut last_marker = false;
            let mut nal_types = Vec::new();
            let mut stamp = None;
            while off < out.len() {
                assert_eq!(out[off], b'$');
                let len = usize::from(u16::from_be_bytes([out[off + 2], out[off + 3]]));
                let p = &out[off + 4..off + 4 + len];
                if out[off + 1] == 3 {
                    assert_eq!(p[1], 200, "SR first in compound");
                    assert_eq!(&p[4..8], &0x1234_5678u32.to_be_bytes());
                    // NTP time of the SR is the frame's scheduled send time, RTP time its timestamp.
                    let wall_us = shared.send_time_us(1, k);
                    let ntp_secs = u32::from_be_bytes([p[8], p[9], p[10], p[11]]);
                    assert_eq!(
                        u64::from(ntp_secs),
                        wall_us / 1_000_000 + NTP_UNIX_OFFSET_SECS
                    );
                    assert_eq!(u32::from_be_bytes([p[16], p[17], p[18], p[19]]), want_ts);
                    saw_sr = true;
                } else {
                    assert_eq!(out[off + 1], 2);
                    assert_eq!(p[0], 0x80);
                    assert!(!last_marker, "frame {k}: marker only on the last packet");
                    assert_eq!(u16::from_be_bytes([p[2], p[3]]), expected_seq);
                    expected_seq = expected_seq.wrapping_add(1);
                    let ts = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
                    assert_eq!(ts, want_ts);
                    assert_eq!(&p[8..12], &0x1234_5678u32.to_be_bytes());
                    last_marker = p[1] & 0x80 != 0;
                    let payload = &p[12..];
                    let t = payload[0] & 0x1f;
                    if t != 28 || payload[1] & 0x80 != 0 {
                        nal_types.push(if t == 28 { payload[1] & 0x1f } else { t });
                    }
                    if let Some(st) = crate::stamp::parse_sei(payload) {
                        assert!(stamp.is_none(), "one stamp per frame");
                        stamp = Some(st);
                    }
                }
                off += 4 + len;
            }
            assert!(last_marker, "frame {k}: marker on last RTP packet");
            assert_eq!(saw_sr, n % 25 == 0, "frame {k}");
            assert_eq!(
                stamp,
                Some(FrameStamp {
                    seq: k,
                    send_time_us: 1_700_000_000_000_000 + 10_000 + k * 40_000
                }),
                "frame {k}"
            );
            // The stamp SEI directly precedes the first slice, after any parameter sets.
            let first_slice = nal_types
                .iter()
                .position(|&t| t == 1 || t == 5)
                .expect("a slice");
            assert!(first_slice >= 1, "{nal_types:?}");
            assert_eq!(nal_types[first_slice - 1], 6, "{nal_types:?}");
            assert!(
                nal_types[first_slice..].iter().all(|&t| t == 1 || t == 5),
                "{nal_types:?}"
            );
            // Clip frame shown: k shifted by the camera's offset.
            let clip_index = ((k + 7) % 100) as usize;
            assert_eq!(nal_types.contains(&5), clip.access_units()[clip_index].idr);
        }
    }

    #[test]
    fn stream_clock() {
        let started = Instant::now();
        let shared = Shared {
            clip: Clip::embedded(),
            streams: 1,
            started,
            started_wall_us: 5_000_000,
            session_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(5),
        };
        // Stream 0 (and 4, 8, ...) has no phase; stream 1's clock starts a quarter period (10 ms) later.
        assert_eq!(shared.frame_at(0, started), 0);
        assert_eq!(shared.frame_at(0, started + Duration::from_millis(39)), 0);
        assert_eq!(shared.frame_at(0, started + Duration::from_millis(40)), 1);
        assert_eq!(shared.frame_at(1, started + Duration::from_millis(49)), 0);
        assert_eq!(shared.frame_at(1, started + Duration::from_millis(50)), 1);
        for cam in [0, 1, 2, 400] {
            let phase_us = shared.phase_us(cam);
            assert!(phase_us < 40_000);
            for k in [0u64, 1, 2, 99, 100, 12_345_678] {
                let at = shared.frame_instant(cam, k);
                assert_eq!(shared.frame_at(cam, at), k);
                assert_eq!(
                    shared.frame_at(cam, at - Duration::from_nanos(1)),
                    k.saturating_sub(1)
                );
                assert_eq!(
                    shared.send_time_us(cam, k),
                    5_000_000 + phase_us + k * 40_000
                );
            }
        }
        // Streams' clocks are spread over the frame period in four slots.
        let mut phases: Vec<u64> = (1..=400).map(|c| shared.phase_us(c)).collect();
        phases.sort_unstable();
        phases.dedup();
        assert_eq!(phases, vec![0, 10_000, 20_000, 30_000]);
    }
}
