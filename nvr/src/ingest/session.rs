//! The RTSP side of a stream: [`connect`] opens a retina session (every step under a timeout) and
//! returns the demuxed frame stream; helpers turn retina's parameters into MP4 track descriptions.

use std::time::Duration;

use retina::client::{PlayOptions, SessionOptions, SetupOptions};
use retina::codec::FrameFormat;

use super::{AudioTrack, IngestError, IngestSettings, StreamSpec, VideoTrack};
use crate::config::Transport;

/// An open, playing RTSP session.
pub(super) struct Connected {
    pub demuxed: retina::client::Demuxed,
    pub video_i: usize,
    pub audio_i: Option<usize>,
    /// Audio as recorded (`aac`, `alaw`, `ulaw`, `opus`) or why not.
    pub audio_note: Option<String>,
    pub h265: bool,
    /// The transport in use (`tcp` or `udp`).
    pub transport: &'static str,
    /// The video RTP socket's receive buffer as the kernel reports it (UDP only).
    pub udp_recv_buffer_bytes: Option<usize>,
}

/// RTSP status of a SETUP whose transport the server does not offer.
const UNSUPPORTED_TRANSPORT: u16 = 461;

/// Connects, DESCRIBEs, SETUPs video (and AAC, G.711 or Opus audio) and PLAYs. With `transport = "auto"` a SETUP
/// refused with 461 (Unsupported Transport) over TCP is repeated over UDP.
pub(super) async fn connect(
    spec: &StreamSpec,
    settings: IngestSettings,
) -> Result<Connected, IngestError> {
    let creds = match (&spec.username, &spec.password) {
        (Some(u), Some(p)) => Some(retina::client::Credentials {
            username: u.clone(),
            password: p.0.clone(),
        }),
        (Some(u), None) => Some(retina::client::Credentials {
            username: u.clone(),
            password: String::new(),
        }),
        _ => None,
    };
    let options = SessionOptions::default()
        .creds(creds)
        .user_agent(format!("nvr/{}", env!("CARGO_PKG_VERSION")));
    let mut rtsp = with_timeout(
        "connect/DESCRIBE",
        settings.ingest.connect_timeout_ms,
        retina::client::Session::describe(spec.url.clone(), options),
    )
    .await?;

    let streams = rtsp.streams();
    let video_i = streams
        .iter()
        .position(|s| s.media() == "video" && matches!(s.encoding_name(), "h264" | "h265"))
        .ok_or_else(|| {
            IngestError::NoVideo(
                streams
                    .iter()
                    .map(|s| format!("{}/{}", s.media(), s.encoding_name()))
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        })?;
    let audio = streams.iter().position(|s| s.media() == "audio");
    let (audio_i, audio_note) = match audio {
        Some(i) => match streams[i].encoding_name() {
            "mpeg4-generic" => (Some(i), Some("aac".to_owned())),
            "pcma" => (
                Some(i),
                Some("pcma (G.711 A-law): recorded as alaw".to_owned()),
            ),
            "pcmu" => (
                Some(i),
                Some("pcmu (G.711 µ-law): recorded as ulaw".to_owned()),
            ),
            "opus" => (Some(i), Some("opus: recorded as Opus".to_owned())),
            other => (
                None,
                Some(format!(
                    "{other}: not recorded (AAC, G.711 PCMA/PCMU and Opus audio are recorded)"
                )),
            ),
        },
        None => (None, None),
    };
    let (first, fallback) = match spec.transport {
        Transport::Tcp => (Transport::Tcp, None),
        Transport::Udp => (Transport::Udp, None),
        Transport::Auto => (Transport::Tcp, Some(Transport::Udp)),
    };
    let mut transport = first;
    let setup = |t: Transport| {
        let transport = match t {
            Transport::Udp => retina::client::Transport::Udp(udp_options(spec, &settings)),
            _ => retina::client::Transport::Tcp(Default::default()),
        };
        SetupOptions::default()
            .transport(transport)
            .frame_format(FrameFormat::MP4)
    };
    let video_setup = tokio::time::timeout(
        Duration::from_millis(settings.ingest.connect_timeout_ms),
        rtsp.setup(video_i, setup(first)),
    )
    .await;
    match (video_setup, fallback) {
        (Ok(Err(e)), Some(other)) if e.status_code() == Some(UNSUPPORTED_TRANSPORT) => {
            tracing::info!(url = %spec.url, refused = first.as_str(), trying = other.as_str(), "camera refuses the transport");
            transport = other;
            with_timeout(
                "SETUP",
                settings.ingest.connect_timeout_ms,
                rtsp.setup(video_i, setup(other)),
            )
            .await?;
        }
        (Ok(r), _) => r.map_err(|e| IngestError::rtsp("SETUP", e))?,
        (Err(_), _) => {
            return Err(IngestError::Timeout {
                step: "SETUP",
                timeout_ms: settings.ingest.connect_timeout_ms,
            })
        }
    }
    let setup = || setup(transport);
    if let Some(i) = audio_i {
        with_timeout(
            "SETUP",
            settings.ingest.connect_timeout_ms,
            rtsp.setup(i, setup()),
        )
        .await?;
    }
    let playing = with_timeout(
        "PLAY",
        settings.ingest.connect_timeout_ms,
        rtsp.play(PlayOptions::default()),
    )
    .await?;
    let demuxed = playing
        .demuxed()
        .map_err(|e| IngestError::rtsp("PLAY", e))?;
    let h265 = demuxed.streams()[video_i].encoding_name() == "h265";
    let udp_recv_buffer_bytes = demuxed.streams()[video_i].udp_recv_buffer_bytes();
    if let Some(granted) = udp_recv_buffer_bytes {
        log_udp_buffer(spec, settings.ingest.udp_recv_buffer_bytes, granted);
    }
    Ok(Connected {
        demuxed,
        video_i,
        audio_i,
        audio_note,
        h265,
        transport: transport.as_str(),
        udp_recv_buffer_bytes,
    })
}

/// UDP options: the receive buffer and the port range of the configuration, and the camera's
/// reorder window.
fn udp_options(
    spec: &StreamSpec,
    settings: &IngestSettings,
) -> retina::client::UdpTransportOptions {
    let mut o = retina::client::UdpTransportOptions::default()
        .recv_buffer_bytes(
            usize::try_from(settings.ingest.udp_recv_buffer_bytes).unwrap_or(usize::MAX),
        )
        .reorder_window(
            usize::try_from(spec.udp_reorder.max_packets).unwrap_or(usize::MAX),
            Duration::from_millis(spec.udp_reorder.max_delay_ms),
        );
    if let Some((first, last)) = settings.ingest.udp_port_range {
        o = o.port_range(first..last.saturating_add(1));
    }
    o
}

/// Logs the receive buffer the kernel granted; warns when it is less than asked for (Linux caps it
/// at `net.core.rmem_max` and reports twice the usable size).
fn log_udp_buffer(spec: &StreamSpec, requested: u64, granted: usize) {
    let usable = if cfg!(target_os = "linux") {
        granted / 2
    } else {
        granted
    };
    let stream = format!("{}/{}", spec.camera, spec.kind.as_str());
    if (usable as u64) < requested {
        tracing::warn!(stream, requested_bytes = requested, granted_bytes = granted,
            "UDP receive buffer smaller than requested: a large key frame may be dropped by the kernel; raise net.core.rmem_max (docs/configuration.md)");
    } else {
        tracing::info!(
            stream,
            requested_bytes = requested,
            granted_bytes = granted,
            "UDP receive buffer"
        );
    }
}

/// Runs blocking storage work without stalling the runtime's other tasks.
pub(super) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

async fn with_timeout<T>(
    step: &'static str,
    timeout_ms: u64,
    fut: impl std::future::Future<Output = Result<T, retina::Error>>,
) -> Result<T, IngestError> {
    match tokio::time::timeout(Duration::from_millis(timeout_ms), fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(IngestError::rtsp(step, e)),
        Err(_) => Err(IngestError::Timeout { step, timeout_ms }),
    }
}

pub(super) fn video_track(v: &retina::codec::VideoParameters) -> Result<VideoTrack, IngestError> {
    let (width, height) = v.pixel_dimensions();
    let sample_entry = v
        .mp4_sample_entry()
        .build()
        .map_err(|e| IngestError::BadData(format!("video parameters: {e}")))?;
    Ok(VideoTrack {
        codec: v.rfc6381_codec().to_owned(),
        width,
        height,
        clock_rate: 90_000,
        sample_entry,
    })
}

/// The MP4 track of an audio stream: AAC from retina's parameters, G.711 (`pcma`, `pcmu`) as
/// `alaw`/`ulaw` and Opus as `Opus` sample entries (retina builds entries for AAC only). `None`
/// while the stream's parameters are not known.
pub(super) fn audio_track(
    stream: &retina::client::Stream,
) -> Result<Option<AudioTrack>, IngestError> {
    let Some(retina::codec::ParametersRef::Audio(a)) = stream.parameters() else {
        return Ok(None);
    };
    let channels = a.channels().get();
    let (codec, sample_entry) = match stream.encoding_name() {
        "pcma" => (
            "alaw".to_owned(),
            store::mp4::g711_sample_entry(store::mp4::G711::ALaw, channels, a.clock_rate()),
        ),
        "pcmu" => (
            "ulaw".to_owned(),
            store::mp4::g711_sample_entry(store::mp4::G711::MuLaw, channels, a.clock_rate()),
        ),
        "opus" => (
            "opus".to_owned(),
            store::mp4::opus_sample_entry(channels)
                .map_err(|e| IngestError::BadData(format!("Opus audio parameters: {e}")))?,
        ),
        _ => (
            a.rfc6381_codec().unwrap_or("mp4a").to_owned(),
            a.mp4_sample_entry()
                .build()
                .map_err(|e| IngestError::BadData(format!("audio parameters: {e}")))?,
        ),
    };
    Ok(Some(AudioTrack {
        codec,
        channels,
        clock_rate: a.clock_rate(),
        sample_entry,
    }))
}
