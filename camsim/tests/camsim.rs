//! End-to-end tests of `camsim` with real peers on loopback: ffprobe/ffmpeg, the `retina` client (one,
//! two on the same stream comparing frame stamps, and 50 at once), and raw sockets for protocol corner cases (pipelining, malformed input, 404/461/454,
//! session timeout).

use camsim::stamp::{find_in_length_prefixed, parse_sei, FrameStamp};
use camsim::{CamSim, Clip};
use futures::StreamExt as _;
use retina::client::{PlayOptions, SessionOptions, SetupOptions, TcpTransportOptions, Transport};
use retina::codec::{CodecItem, FrameFormat, ParametersRef};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// A server running in the background; stops when dropped or on `stop()`.
struct Server {
    addr: SocketAddr,
    urls: Vec<url::Url>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Server {
    async fn start(streams: usize, session_timeout: Option<Duration>) -> Server {
        let mut sim = CamSim::bind(([127, 0, 0, 1], 0).into(), streams, Clip::embedded())
            .await
            .expect("bind loopback port 0");
        if let Some(t) = session_timeout {
            sim.set_session_timeout(t);
        }
        let addr = sim.local_addr();
        let urls = sim.urls();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = sim
                .run(async move {
                    let _ = rx.await;
                })
                .await;
        });
        Server {
            addr,
            urls,
            stop: Some(tx),
            task,
        }
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.task).await;
    }
}

#[tokio::test]
async fn camsim_urls_and_bind_errors() {
    let s = Server::start(3, None).await;
    let urls: Vec<String> = s.urls.iter().map(|u| u.to_string()).collect();
    assert_eq!(
        urls,
        (1..=3)
            .map(|n| format!("rtsp://{}/cam{n}", s.addr))
            .collect::<Vec<_>>()
    );
    assert!(CamSim::bind(s.addr, 1, Clip::embedded()).await.is_err());
    assert!(
        CamSim::bind(([127, 0, 0, 1], 0).into(), 0, Clip::embedded())
            .await
            .is_err()
    );
    s.stop().await;
}

/// Reads one RTSP response (head + Content-Length body) from `stream`, skipping interleaved frames.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<String> {
    loop {
        while buf.first() == Some(&b'$') && buf.len() >= 4 {
            let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
            if buf.len() < 4 + len {
                break;
            }
            buf.drain(..4 + len);
        }
        if buf.first() != Some(&b'$') {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
                let body_len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + body_len {
                    let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + body_len]);
                    let msg = format!("{head}{body}");
                    buf.drain(..end + 4 + body_len);
                    return Ok(msg);
                }
            }
        }
        let mut chunk = [0u8; 16384];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no response"))??;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn header<'a>(resp: &'a str, name: &str) -> Option<&'a str> {
    resp.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

/// SETUP of `base`'s track 1 over interleaved TCP on `c`, then PLAY of its session (its answer left
/// unread): the `Session` header of the SETUP's answer.
async fn setup_and_play(
    c: &mut TcpStream,
    buf: &mut Vec<u8>,
    base: &str,
) -> std::io::Result<String> {
    c.write_all(
        format!("SETUP {base}/track1 RTSP/1.0\r\nCSeq: 1\r\nTransport: RTP/AVP/TCP;interleaved=0-1\r\n\r\n")
            .as_bytes(),
    )
    .await?;
    let r = read_response(c, buf).await?;
    let session = header(&r, "Session").unwrap_or("").to_owned();
    let id = session.split(';').next().unwrap_or("");
    c.write_all(format!("PLAY {base}/ RTSP/1.0\r\nCSeq: 2\r\nSession: {id}\r\n\r\n").as_bytes())
        .await?;
    Ok(session)
}

async fn exchange(addr: SocketAddr, request: &[u8]) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(request).await?;
    read_response(&mut s, &mut Vec::new()).await
}

#[tokio::test]
async fn camsim_pipelined_setup_play_and_interleaved_media() -> TestResult {
    let s = Server::start(2, None).await;
    let base = format!("rtsp://{}/cam2", s.addr);
    let mut c = TcpStream::connect(s.addr).await?;
    // Four requests in one write; the session id is not known yet, so PLAY comes in a second batch.
    let batch = format!(
        "OPTIONS {base} RTSP/1.0\r\nCSeq: 1\r\n\r\n\
         DESCRIBE {base} RTSP/1.0\r\nCSeq: 2\r\nAccept: application/sdp\r\n\r\n\
         SETUP {base}/track1 RTSP/1.0\r\nCSeq: 3\r\nTransport: RTP/AVP;unicast;client_port=5000-5001,RTP/AVP/TCP;unicast;interleaved=4-5\r\n\r\n\
         GET_PARAMETER {base} RTSP/1.0\r\nCSeq: 4\r\n\r\n"
    );
    c.write_all(batch.as_bytes()).await?;
    let mut buf = Vec::new();
    let r1 = read_response(&mut c, &mut buf).await?;
    assert!(r1.starts_with("RTSP/1.0 200 OK\r\n"), "{r1}");
    assert_eq!(header(&r1, "CSeq"), Some("1"));
    let public = header(&r1, "Public").unwrap_or("");
    for m in ["DESCRIBE", "SETUP", "PLAY", "TEARDOWN", "GET_PARAMETER"] {
        assert!(public.contains(m), "{public}");
    }
    let r2 = read_response(&mut c, &mut buf).await?;
    assert_eq!(header(&r2, "CSeq"), Some("2"));
    assert_eq!(header(&r2, "Content-Type"), Some("application/sdp"));
    assert_eq!(
        header(&r2, "Content-Base"),
        Some(format!("{base}/").as_str())
    );
    for needle in [
        "m=video 0 RTP/AVP 96\r\n",
        "a=rtpmap:96 H264/90000\r\n",
        "a=fmtp:96 packetization-mode=1;profile-level-id=",
        "sprop-parameter-sets=",
        "a=control:track1\r\n",
        &format!("a=control:{base}/\r\n"),
    ] {
        assert!(r2.contains(needle), "missing {needle:?} in {r2}");
    }
    let r3 = read_response(&mut c, &mut buf).await?;
    assert_eq!(header(&r3, "CSeq"), Some("3"));
    assert!(r3.starts_with("RTSP/1.0 200"), "{r3}");
    let transport = header(&r3, "Transport").unwrap_or("");
    assert!(
        transport.starts_with("RTP/AVP/TCP;unicast;interleaved=4-5;ssrc="),
        "{transport}"
    );
    let session = header(&r3, "Session").unwrap_or("").to_owned();
    assert!(session.ends_with(";timeout=60"), "{session}");
    let session_id = session.split(';').next().unwrap_or("").to_owned();
    let r4 = read_response(&mut c, &mut buf).await?;
    assert_eq!(header(&r4, "CSeq"), Some("4"));
    assert!(r4.starts_with("RTSP/1.0 200"), "{r4}");

    // PLAY with a wrong session, then the right one.
    c.write_all(
        format!(
            "PLAY {base}/ RTSP/1.0\r\nCSeq: 5\r\nSession: nope\r\n\r\n\
             PLAY {base}/ RTSP/1.0\r\nCSeq: 6\r\nSession: {session_id}\r\nRange: npt=0.000-\r\n\r\n"
        )
        .as_bytes(),
    )
    .await?;
    let r5 = read_response(&mut c, &mut buf).await?;
    assert!(r5.starts_with("RTSP/1.0 454"), "{r5}");
    let r6 = read_response(&mut c, &mut buf).await?;
    assert!(r6.starts_with("RTSP/1.0 200"), "{r6}");
    assert_eq!(
        header(&r6, "Session").map(|v| v.split(';').next()),
        Some(Some(session_id.as_str()))
    );
    let rtp_info = header(&r6, "RTP-Info").unwrap_or("").to_owned();
    assert!(
        rtp_info.starts_with(&format!("url={base}/track1;seq=")),
        "{rtp_info}"
    );
    let seq: u16 = rtp_info
        .split(";seq=")
        .nth(1)
        .and_then(|v| v.split(';').next())
        .and_then(|v| v.parse().ok())
        .ok_or("no seq")?;
    let rtptime: u32 = rtp_info
        .split(";rtptime=")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .ok_or("no rtptime")?;

    // Media follows on channel 4 (RTP) and 5 (RTCP): the first packet carries the announced seq and
    // rtptime; every frame (marker-terminated) has exactly one stamp SEI, with consecutive sequence
    // numbers.
    let mut stamps_in_frame = 0;
    let mut stamps: Vec<FrameStamp> = Vec::new();
    let mut saw_rtcp = false;
    let mut rtp_packets = 0;
    let mut markers = 0;
    while rtp_packets < 300 || !saw_rtcp {
        while buf.len() < 4 {
            let mut chunk = [0u8; 65536];
            let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut chunk)).await??;
            assert!(n > 0, "server closed");
            buf.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(buf[0], b'$', "interleaved frame expected");
        let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        while buf.len() < 4 + len {
            let mut chunk = [0u8; 65536];
            let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut chunk)).await??;
            assert!(n > 0, "server closed");
            buf.extend_from_slice(&chunk[..n]);
        }
        let pkt: Vec<u8> = buf.drain(..4 + len).skip(4).collect();
        if pkt[1] == 200 {
            saw_rtcp = true;
            continue;
        }
        if rtp_packets == 0 {
            assert_eq!(u16::from_be_bytes([pkt[2], pkt[3]]), seq);
            assert_eq!(
                u32::from_be_bytes([pkt[4], pkt[5], pkt[6], pkt[7]]),
                rtptime
            );
        }
        assert_eq!(pkt[1] & 0x7f, 96);
        if let Some(stamp) = parse_sei(&pkt[12..]) {
            assert_eq!(pkt[1] & 0x80, 0, "no marker on the stamp packet");
            stamps.push(stamp);
            stamps_in_frame += 1;
        }
        if pkt[1] & 0x80 != 0 {
            markers += 1;
            assert_eq!(stamps_in_frame, 1, "one stamp per frame");
            stamps_in_frame = 0;
        }
        rtp_packets += 1;
    }
    assert!(markers >= 2, "{markers}");
    for w in stamps.windows(2) {
        assert_eq!(w[1].seq, w[0].seq + 1, "{stamps:?}");
    }

    c.write_all(
        format!("TEARDOWN {base}/ RTSP/1.0\r\nCSeq: 7\r\nSession: {session_id}\r\n\r\n").as_bytes(),
    )
    .await?;
    let r7 = read_response(&mut c, &mut buf).await?;
    assert!(r7.starts_with("RTSP/1.0 200"), "{r7}");
    assert_eq!(header(&r7, "CSeq"), Some("7"));
    s.stop().await;
    Ok(())
}

#[tokio::test]
async fn camsim_error_statuses() -> TestResult {
    let s = Server::start(2, None).await;
    let a = s.addr;
    let cases: &[(String, &str)] = &[
        (format!("DESCRIBE rtsp://{a}/cam3 RTSP/1.0\r\nCSeq: 1\r\n\r\n"), "404"),
        (format!("DESCRIBE rtsp://{a}/cam0 RTSP/1.0\r\nCSeq: 1\r\n\r\n"), "404"),
        (format!("DESCRIBE rtsp://{a}/other RTSP/1.0\r\nCSeq: 1\r\n\r\n"), "404"),
        (format!("DESCRIBE rtsp://{a}/cam1 RTSP/1.0\r\nCSeq: 1\r\n\r\n"), "200"),
        (
            format!(
                "SETUP rtsp://{a}/cam1/track1 RTSP/1.0\r\nCSeq: 1\r\nTransport: RTP/AVP;unicast;client_port=5000-5001\r\n\r\n"
            ),
            "461",
        ),
        (
            format!(
                "SETUP rtsp://{a}/cam1/track1 RTSP/1.0\r\nCSeq: 1\r\nTransport: RTP/AVP/UDP;unicast;client_port=5000-5001\r\n\r\n"
            ),
            "461",
        ),
        (format!("SETUP rtsp://{a}/cam1/track1 RTSP/1.0\r\nCSeq: 1\r\n\r\n"), "400"),
        (format!("PLAY rtsp://{a}/cam1 RTSP/1.0\r\nCSeq: 1\r\n\r\n"), "454"),
        (format!("PLAY rtsp://{a}/cam1 RTSP/1.0\r\nCSeq: 1\r\nSession: 42\r\n\r\n"), "454"),
        (format!("TEARDOWN rtsp://{a}/cam1 RTSP/1.0\r\nCSeq: 1\r\nSession: 42\r\n\r\n"), "454"),
        (format!("FROBNICATE rtsp://{a}/cam1 RTSP/1.0\r\nCSeq: 1\r\n\r\n"), "501"),
        (format!("RECORD rtsp://{a}/cam1 RTSP/1.0\r\nCSeq: 1\r\n\r\n"), "405"),
        ("OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nRequire: funky\r\n\r\n".to_owned(), "551"),
        ("OPTIONS * RTSP/2.0\r\nCSeq: 1\r\n\r\n".to_owned(), "505"),
        ("OPTIONS * RTSP/1.0\r\n\r\n".to_owned(), "400"),
    ];
    for (req, want) in cases {
        let resp = exchange(a, req.as_bytes()).await?;
        assert!(
            resp.starts_with(&format!("RTSP/1.0 {want} ")),
            "request {req:?} got {resp:?}"
        );
        if resp.contains("CSeq") {
            assert_eq!(header(&resp, "CSeq"), Some("1"));
        }
    }
    s.stop().await;
    Ok(())
}

/// Sends `bytes` and expects a 400 response or a closed connection (never a hang).
async fn expect_rejected(addr: SocketAddr, bytes: &[u8]) -> TestResult {
    let mut c = TcpStream::connect(addr).await?;
    // The server may close before everything is written; that is an acceptable rejection.
    let _ = c.write_all(bytes).await;
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut got)).await;
    let Ok(read) = read else {
        return Err(format!(
            "server neither answered nor closed for {:?}",
            &bytes[..bytes.len().min(40)]
        )
        .into());
    };
    if read.is_ok() && !got.is_empty() {
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("RTSP/1.0 400 "), "{text}");
    }
    Ok(())
}

#[tokio::test]
async fn camsim_malformed_requests_do_not_hurt_other_clients() -> TestResult {
    let s = Server::start(1, None).await;
    let url = s.urls[0].clone();
    // A healthy client playing throughout.
    let healthy = tokio::spawn(receive_frames(url.clone(), 75));
    let mut garbage: Vec<u8> = (0..4000u32).map(|i| (i * 7919 % 251) as u8).collect();
    garbage.extend_from_slice(b"\r\n\r\n");
    expect_rejected(s.addr, &garbage).await?;
    expect_rejected(s.addr, b"\x00\x01\x02\x03 nonsense\r\n\r\n").await?;
    expect_rejected(s.addr, b"OPTIONS\r\nCSeq: 1\r\n\r\n").await?;
    expect_rejected(s.addr, b"OPTIONS * RTSP/1.0\r\nCSeq 1\r\n\r\n").await?;
    let mut huge = b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nX-Huge: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 100_000));
    huge.extend_from_slice(b"\r\n\r\n");
    expect_rejected(s.addr, &huge).await?;
    let mut long_line = b"DESCRIBE rtsp://x/".to_vec();
    long_line.extend(std::iter::repeat_n(b'b', 50_000));
    expect_rejected(s.addr, &long_line).await?;
    expect_rejected(
        s.addr,
        b"SET_PARAMETER * RTSP/1.0\r\nCSeq: 1\r\nContent-Length: -3\r\n\r\n",
    )
    .await?;
    // Unknown method: a well-formed request, so an error status and the connection stays usable.
    let mut c = TcpStream::connect(s.addr).await?;
    c.write_all(b"BREW * RTSP/1.0\r\nCSeq: 8\r\n\r\nOPTIONS * RTSP/1.0\r\nCSeq: 9\r\n\r\n")
        .await?;
    let mut buf = Vec::new();
    let r = read_response(&mut c, &mut buf).await?;
    assert!(r.starts_with("RTSP/1.0 501 "), "{r}");
    let r = read_response(&mut c, &mut buf).await?;
    assert!(
        r.starts_with("RTSP/1.0 200 ") && r.contains("CSeq: 9"),
        "{r}"
    );

    let frames = healthy.await??;
    assert!(frames.len() >= 75);
    // And new clients are still served.
    let frames = receive_frames(url, 5).await?;
    assert_eq!(frames.len(), 5);
    s.stop().await;
    Ok(())
}

#[tokio::test]
async fn camsim_silent_session_times_out_and_keepalive_prevents_it() -> TestResult {
    let s = Server::start(1, Some(Duration::from_secs(1))).await;
    let base = format!("rtsp://{}/cam1", s.addr);
    let play = |c: TcpStream| {
        let base = base.clone();
        async move {
            let mut c = c;
            let mut buf = Vec::new();
            let session = setup_and_play(&mut c, &mut buf, &base).await?;
            assert!(session.ends_with(";timeout=1"), "{session}");
            let id = session.split(';').next().unwrap_or("").to_owned();
            read_response(&mut c, &mut buf).await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((c, id))
        }
    };
    // Silent client: dropped after ~1 s.
    let (mut silent, _) = play(TcpStream::connect(s.addr).await?).await?;
    let start = std::time::Instant::now();
    let mut sink = vec![0u8; 65536];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), silent.read(&mut sink)).await {
            Err(_) => return Err("silent session was not dropped".into()),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) => {}
        }
    }
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(4),
        "{elapsed:?}"
    );

    // Client sending GET_PARAMETER every 400 ms stays for 3 s.
    let (mut kept, id) = play(TcpStream::connect(s.addr).await?).await?;
    let start = std::time::Instant::now();
    let mut next_keepalive = start;
    let mut cseq = 3;
    while start.elapsed() < Duration::from_secs(3) {
        if std::time::Instant::now() >= next_keepalive {
            kept.write_all(
                format!("GET_PARAMETER {base}/ RTSP/1.0\r\nCSeq: {cseq}\r\nSession: {id}\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
            cseq += 1;
            next_keepalive += Duration::from_millis(400);
        }
        match tokio::time::timeout(Duration::from_millis(100), kept.read(&mut sink)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Err("kept-alive session was dropped".into()),
            _ => {}
        }
    }
    s.stop().await;
    Ok(())
}

/// One received frame: RTP timestamp (unwrapped, relative to the session's first), key frame flag, the
/// camsim stamp found in its NAL units.
#[derive(Debug)]
struct Frame {
    timestamp: i64,
    key: bool,
    stamp: Option<FrameStamp>,
    dimensions: Option<(u32, u32)>,
    codec: Option<String>,
}

/// Plays `url` with retina over TCP and returns the first `count` frames.
async fn receive_frames(
    url: url::Url,
    count: usize,
) -> Result<Vec<Frame>, Box<dyn std::error::Error + Send + Sync>> {
    let step = Duration::from_secs(10);
    let mut session = tokio::time::timeout(
        step,
        retina::client::Session::describe(url, SessionOptions::default()),
    )
    .await??;
    let video_i = session
        .streams()
        .iter()
        .position(|s| s.media() == "video" && s.encoding_name() == "h264")
        .ok_or("no H.264 stream")?;
    tokio::time::timeout(
        step,
        session.setup(
            video_i,
            SetupOptions::default()
                .transport(Transport::Tcp(TcpTransportOptions::default()))
                .frame_format(FrameFormat::MP4),
        ),
    )
    .await??;
    let mut demuxed = tokio::time::timeout(step, session.play(PlayOptions::default()))
        .await??
        .demuxed()?;
    let mut frames = Vec::new();
    while frames.len() < count {
        let item = tokio::time::timeout(Duration::from_secs(5), demuxed.next())
            .await?
            .ok_or("stream ended")??;
        if let CodecItem::VideoFrame(f) = item {
            let (dimensions, codec) = match demuxed.streams()[video_i].parameters() {
                Some(ParametersRef::Video(v)) => (
                    Some(v.pixel_dimensions()),
                    Some(v.rfc6381_codec().to_owned()),
                ),
                _ => (None, None),
            };
            assert_eq!(f.loss(), 0, "packet loss reported");
            frames.push(Frame {
                timestamp: f.timestamp().elapsed(),
                key: f.is_random_access_point(),
                stamp: find_in_length_prefixed(f.data()),
                dimensions,
                codec,
            });
        }
    }
    Ok(frames)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn camsim_retina_client_gets_key_frames_and_steady_timestamps() -> TestResult {
    let s = Server::start(4, None).await;
    let start = std::time::Instant::now();
    // 60 frames at 25 fps from an IDR covers at least two key frames (GOP 50).
    // 110 frames: the session starts at the live frame, wherever in the GOP (50) that is, so at least
    // two key frames follow.
    let frames = receive_frames(s.urls[2].clone(), 110).await?;
    let elapsed = start.elapsed();
    let keys: Vec<usize> = frames
        .iter()
        .enumerate()
        .filter(|(_, f)| f.key)
        .map(|(i, _)| i)
        .collect();
    assert!(keys.len() >= 2, "key frames at {keys:?}");
    assert_eq!(keys[1] - keys[0], 50, "{keys:?}");
    for f in &frames {
        assert_eq!(f.dimensions, Some((1280, 720)));
        assert!(
            f.codec.as_deref().is_some_and(|c| c.starts_with("avc1.")),
            "{:?}",
            f.codec
        );
    }
    for w in frames.windows(2) {
        assert_eq!(w[1].timestamp - w[0].timestamp, 3600);
    }
    // Real-time pacing: 110 frames take about 4.4 s (not a burst).
    assert!(elapsed >= Duration::from_millis(4200), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(9), "{elapsed:?}");
    s.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn camsim_fifty_concurrent_retina_clients() -> TestResult {
    let s = Server::start(50, None).await;
    // A client that sets up and plays but never reads must not disturb the others.
    let mut stalled = TcpStream::connect(s.addr).await?;
    let base = format!("rtsp://{}/cam1", s.addr);
    setup_and_play(&mut stalled, &mut Vec::new(), &base).await?;

    let clients: Vec<_> = s
        .urls
        .iter()
        .map(|u| tokio::spawn(receive_frames(u.clone(), 50)))
        .collect();
    for (i, c) in clients.into_iter().enumerate() {
        let frames = c.await?.map_err(|e| format!("client {i}: {e}"))?;
        assert_eq!(frames.len(), 50);
        // A GOP is 50 frames: whichever frame the session joined at, one key frame is among them.
        assert_eq!(frames.iter().filter(|f| f.key).count(), 1, "client {i}");
        for w in frames.windows(2) {
            assert_eq!(w[1].timestamp - w[0].timestamp, 3600);
            assert_eq!(
                w[1].stamp.map(|s| s.seq),
                w[0].stamp.map(|s| s.seq + 1),
                "client {i}"
            );
        }
    }
    drop(stalled);
    s.stop().await;
    Ok(())
}

/// Two sessions of one stream, the second joining ~1 s later, see one live source: the frames both get
/// carry the same stamps (sequence number and send time) with equal RTP timestamp deltas, and neither
/// session skips a sequence number. The send times follow the frame rate and the wall clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn camsim_two_sessions_of_a_stream_see_the_same_stamped_frames() -> TestResult {
    let s = Server::start(3, None).await;
    let url = s.urls[1].clone();
    let first = tokio::spawn(receive_frames(url.clone(), 100));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let second = receive_frames(url, 50).await?;
    let first = first.await??;
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_micros() as u64;
    for (name, frames) in [("first", &first), ("second", &second)] {
        let stamps: Vec<FrameStamp> = frames
            .iter()
            .map(|f| f.stamp.ok_or(format!("{name}: frame without stamp")))
            .collect::<Result<_, _>>()?;
        for w in stamps.windows(2) {
            assert_eq!(w[1].seq, w[0].seq + 1, "{name}: gap or repeat");
            assert_eq!(w[1].send_time_us - w[0].send_time_us, 40_000, "{name}");
        }
        let last = stamps[stamps.len() - 1];
        assert!(
            last.send_time_us <= now_us && now_us - last.send_time_us < 2_000_000,
            "{name}: send time {} vs now {now_us}",
            last.send_time_us
        );
    }
    let first_by_seq: std::collections::HashMap<u64, &Frame> = first
        .iter()
        .filter_map(|f| Some((f.stamp?.seq, f)))
        .collect();
    let common: Vec<(&Frame, &Frame)> = second
        .iter()
        .filter_map(|f| Some((*first_by_seq.get(&f.stamp?.seq)?, f)))
        .collect();
    // The second session joined ~25 frames into the first's 100 and received 50.
    assert!(common.len() >= 40, "only {} common frames", common.len());
    let (a0, b0) = common[0];
    assert!(
        b0.stamp.map(|s| s.seq) > first[0].stamp.map(|s| s.seq),
        "the second session starts at the live frame, not the first's start"
    );
    for (a, b) in &common {
        assert_eq!(a.stamp, b.stamp, "same frame, same send time");
        assert_eq!(a.key, b.key);
        assert_eq!(
            a.timestamp - a0.timestamp,
            b.timestamp - b0.timestamp,
            "RTP timestamp deltas differ"
        );
    }
    s.stop().await;
    Ok(())
}

const FFPROBE: &str = "/usr/bin/ffprobe";
const FFMPEG: &str = "/usr/bin/ffmpeg";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn camsim_ffprobe_sees_720p_h264() -> TestResult {
    let s = Server::start(2, None).await;
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(FFPROBE)
            .args([
                "-v",
                "error",
                "-rtsp_transport",
                "tcp",
                // The session joins the live stream mid-GOP, as with a real camera; ffprobe's decoder
                // would report the missing references of the P-frames before the first key frame.
                "-skip_frame",
                "nokey",
                "-show_streams",
                "-of",
                "flat",
            ])
            .arg(s.urls[1].as_str())
            .kill_on_drop(true)
            .output(),
    )
    .await??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ffprobe failed: {stderr}");
    for needle in [
        "codec_name=\"h264\"",
        "width=1280",
        "height=720",
        "r_frame_rate=\"25/1\"",
    ] {
        assert!(stdout.contains(needle), "missing {needle} in {stdout}");
    }
    assert!(stderr.trim().is_empty(), "ffprobe errors: {stderr}");
    s.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn camsim_ffmpeg_decodes_five_seconds_without_errors() -> TestResult {
    let s = Server::start(1, None).await;
    let dir = tempfile::tempdir()?;
    let ts = dir.path().join("five-seconds.ts");
    // The session joins the live stream mid-GOP, as with a real camera. Decoding the P-frames before the
    // first key frame makes ffmpeg's decoder report missing references (seen in CI, depending on where in
    // the GOP the session joins), which says nothing about the stream. So the stream is first copied:
    // ffmpeg's stream copy drops the packets before the first key frame. Then every copied frame is decoded.
    let copy = tokio::time::timeout(
        Duration::from_secs(40),
        tokio::process::Command::new(FFMPEG)
            .args(["-nostdin", "-v", "error", "-rtsp_transport", "tcp", "-i"])
            .arg(s.urls[0].as_str())
            .args(["-t", "5", "-c", "copy", "-f", "mpegts"])
            .arg(&ts)
            .kill_on_drop(true)
            .output(),
    )
    .await??;
    let copy_stderr = String::from_utf8_lossy(&copy.stderr);
    assert!(copy.status.success(), "ffmpeg copy failed: {copy_stderr}");
    assert!(
        copy_stderr.trim().is_empty(),
        "ffmpeg copy errors: {copy_stderr}"
    );
    s.stop().await;
    let out = tokio::time::timeout(
        Duration::from_secs(40),
        tokio::process::Command::new(FFMPEG)
            .args(["-nostdin", "-v", "error", "-i"])
            .arg(&ts)
            .args(["-f", "null", "-progress", "pipe:1", "-"])
            .kill_on_drop(true)
            .output(),
    )
    .await??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ffmpeg failed: {stderr}");
    assert!(stderr.trim().is_empty(), "decode errors: {stderr}");
    let frames: u32 = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("frame="))
        .next_back()
        .and_then(|v| v.trim().parse().ok())
        .ok_or("no frame count in ffmpeg progress")?;
    // 5 s at 25 fps, less the frames before the first key frame (up to 49: the session joins the live
    // stream wherever its GOP of 50 is); ffmpeg's -t cut may be off by a frame or two.
    assert!((70..=130).contains(&frames), "decoded {frames} frames");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn camsim_stalled_client_is_dropped_after_write_timeout() -> TestResult {
    let mut sim = CamSim::bind(([127, 0, 0, 1], 0).into(), 1, Clip::embedded()).await?;
    sim.set_write_timeout(Duration::from_secs(1));
    let addr = sim.local_addr();
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(sim.run(async move {
        let _ = rx.await;
    }));
    // A tiny receive buffer, so the server's writes block soon after the client stops reading.
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.set_recv_buffer_size(4096)?;
    let mut c = sock.connect(addr).await?;
    let base = format!("rtsp://{addr}/cam1");
    setup_and_play(&mut c, &mut Vec::new(), &base).await?;
    // Stall long enough for the buffers to fill and the 1 s write timeout to pass.
    tokio::time::sleep(Duration::from_secs(5)).await;
    // Draining now must reach the end of the stream quickly; a live session would keep sending.
    let start = std::time::Instant::now();
    let mut sink = vec![0u8; 65536];
    let mut drained_bytes = 0usize;
    loop {
        match tokio::time::timeout(Duration::from_secs(2), c.read(&mut sink)).await {
            Err(_) => return Err("no end of stream after stall".into()),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => drained_bytes += n,
        }
        if start.elapsed() > Duration::from_secs(3) {
            return Err(
                format!("still streaming after stall ({drained_bytes} bytes drained)").into(),
            );
        }
    }
    // Other clients are still served.
    let frames = receive_frames(url::Url::parse(&base)?, 3).await?;
    assert_eq!(frames.len(), 3);
    let _ = tx.send(());
    server.await??;
    Ok(())
}

/// `nvr camsim --clip`: a missing or malformed file is refused at start naming it and the reason; an
/// ffmpeg-encoded clip is served instead of the embedded one (ffprobe sees its size).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn camsim_cli_serves_a_clip_file_and_refuses_bad_ones() -> TestResult {
    let nvr_path = testkit::nvr_bin();
    let nvr = nvr_path.as_path();
    let dir = tempfile::tempdir()?;
    let run_bad = |clip: std::path::PathBuf| async move {
        let out = tokio::process::Command::new(nvr)
            .args(["camsim", "--listen", "127.0.0.1:0", "--clip"])
            .arg(&clip)
            .kill_on_drop(true)
            .output()
            .await?;
        assert!(!out.status.success(), "a bad clip must not be served");
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let missing = dir.path().join("missing.h264");
    let err = run_bad(missing.clone()).await?;
    assert!(
        err.contains(&format!("reading clip {}", missing.display())),
        "{err}"
    );
    let garbage = dir.path().join("garbage.h264");
    std::fs::write(&garbage, b"this is not H.264")?;
    let err = run_bad(garbage.clone()).await?;
    assert!(
        err.contains(&garbage.display().to_string()) && err.contains("start code"),
        "{err}"
    );

    let clip = dir.path().join("small.h264");
    let encode = camsim::ffmpeg_clip_command(&clip, (320, 240), 2, 25, None);
    let st = tokio::process::Command::from(encode).status().await?;
    assert!(st.success(), "ffmpeg could not encode the test clip");
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut sim = tokio::process::Command::new(nvr)
        .args([
            "camsim",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--streams",
            "1",
        ])
        .arg("--clip")
        .arg(&clip)
        .args(["--fps", "25"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = sim.stdout.take().ok_or("no stdout")?;
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let first = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await??
        .unwrap_or_default();
    assert!(first.contains("camsim serving 1 streams"), "{first}");
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(FFPROBE)
            .args(["-v", "error", "-rtsp_transport", "tcp"])
            .args(["-show_streams", "-of", "flat"])
            .arg(format!("rtsp://127.0.0.1:{port}/cam1"))
            .kill_on_drop(true)
            .output(),
    )
    .await??;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ffprobe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("width=320") && text.contains("height=240"),
        "{text}"
    );
    sim.kill().await?;
    Ok(())
}
