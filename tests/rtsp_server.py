#!/usr/bin/python3
"""Real RTSP test camera: GStreamer's gst-rtsp-server on 127.0.0.1.

Run with Debian's /usr/bin/python3 (it has `gi`). Example:

    /usr/bin/python3 tests/rtsp_server.py --port 18554 \
        --mount /cam1=h264 --mount /cam2=h265 --mount /cam3=h264+aac

Prints exactly `READY <port>` on stdout once the server listens. Exit codes:
0 after SIGTERM/SIGINT, 2 when the port is taken (or on bad arguments),
1 on other start-up errors. The process also exits on its own when its parent
goes away, so a crashed test run leaves no camera behind.
"""

import argparse
import os
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
gi.require_version("GstSdp", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer, GstSdp  # noqa: E402

KINDS = ("h264", "h265", "h264+aac", "h264+pcma", "h264+pcmu", "h264+opus")


def b_frame_options(a, pyramid):
    # Options after the speed preset (ultrafast turns B-frames off, so the element property would not
    # do): a fixed pattern of --bframes B-frames between reference frames, no pyramid (a reorder
    # depth of one frame).
    if a.bframes == 0:
        return ":bframes=0"
    return f":bframes={a.bframes}:{pyramid}:b-adapt=0"


def latency_tune(a):
    # tune=zerolatency turns B-frames off.
    return "tune=zerolatency " if a.bframes == 0 else ""


def inband_h264(a):
    # Parameter sets in band before every key frame (config-interval=-1), or only in the SDP: in
    # length-prefixed form (stream-format=avc) they are in the caps' codec_data, whence the SDP's
    # sprop-parameter-sets; the encoder's in-band copies are cut out (strip_parameter_sets) and the
    # payloader inserts none (config-interval=0).
    if a.no_inband_parameter_sets:
        return (
            "! video/x-h264,stream-format=avc,alignment=au ! identity name=strip "
            "! rtph264pay name=pay0 pt=96 config-interval=0"
        )
    return "! rtph264pay name=pay0 pt=96 config-interval=-1"


def inband_h265(a):
    if a.no_inband_parameter_sets:
        return (
            "! h265parse ! video/x-h265,stream-format=hvc1,alignment=au ! identity name=strip "
            "! rtph265pay name=pay0 pt=96 config-interval=0"
        )
    return "! rtph265pay name=pay0 pt=96 config-interval=-1"


PARAMETER_SET_NAL_TYPES = {"h264": (7, 8), "h265": (32, 33, 34)}


def without_parameter_sets(data, kind):
    """The length-prefixed (4-byte) NAL units of `data` less the parameter sets, or None when it
    has none."""
    out = bytearray()
    i = 0
    cut = False
    while i + 4 < len(data):
        n = int.from_bytes(data[i:i + 4], "big")
        first = data[i + 4]
        nal_type = (first >> 1) & 0x3F if kind == "h265" else first & 0x1F
        if nal_type in PARAMETER_SET_NAL_TYPES[kind]:
            cut = True
        else:
            out += data[i:i + 4 + n]
        i += 4 + n
    return bytes(out) if cut else None


def strip_parameter_sets(media, kind):
    """Cuts the parameter sets out of the video before the payloader (see inband_h264)."""
    strip = media.get_element().get_by_name("strip")
    if strip is None:
        return
    sink = strip.get_static_pad("sink")
    src = strip.get_static_pad("src")

    def probe(_pad, info):
        buf = info.get_buffer()
        data = without_parameter_sets(buf.extract_dup(0, buf.get_size()), kind)
        if data is None:
            return Gst.PadProbeReturn.OK
        new = Gst.Buffer.new_wrapped(data)
        new.pts, new.dts, new.duration = buf.pts, buf.dts, buf.duration
        new.set_flags(buf.get_flags())
        src.push(new)
        return Gst.PadProbeReturn.DROP

    sink.add_probe(Gst.PadProbeType.BUFFER, probe)


def trailing_semicolon_media():
    """A media type whose SDP ends every `a=fmtp` with `;` (an empty parameter), as some cameras
    do. Defined after Gst.init (the base type's signals need GStreamer's types registered)."""

    class TrailingSemicolonMedia(GstRtspServer.RTSPMedia):
        def do_setup_sdp(self, sdp, info):
            if not GstRtspServer.RTSPMedia.do_setup_sdp(self, sdp, info):
                return False
            for i in range(sdp.medias_len()):
                media = sdp.get_media(i)
                for j in range(media.attributes_len()):
                    attr = media.get_attribute(j)
                    if attr.key == "fmtp" and not attr.value.endswith(";"):
                        new = GstSdp.SDPAttribute()
                        new.set("fmtp", attr.value + ";")
                        media.replace_attribute(j, new)
            return True

    return TrailingSemicolonMedia


def video_h264(a):
    # scenecut=0: no extra key frames on the test pattern. sliced-threads=0: tune=zerolatency would
    # split frames into slices, and ffmpeg's RTP demuxer then splits each IDR access unit in two.
    return (
        f"videotestsrc is-live=true pattern={a.pattern} "
        f"! video/x-raw,format=I420,width={a.width},height={a.height},framerate={a.fps}/1 "
        f"! x264enc {latency_tune(a)}speed-preset=ultrafast key-int-max={a.gop_frames} "
        f"bitrate={a.bitrate} option-string=scenecut=0:sliced-threads=0"
        f"{b_frame_options(a, 'b-pyramid=none')}{':rc-lookahead=0' if a.bframes else ''} "
        # Without a profile the server's negotiation picks constrained baseline (no B-frames).
        f"{'! video/x-h264,profile=main ' if a.bframes else ''}"
        f"{inband_h264(a)}"
    )


def video_h265(a):
    g = a.gop_frames
    return (
        f"videotestsrc is-live=true pattern={a.pattern} "
        f"! video/x-raw,format=I420,width={a.width},height={a.height},framerate={a.fps}/1 "
        f"! x265enc speed-preset=ultrafast {latency_tune(a)}key-int-max={g} bitrate={a.bitrate} "
        f"option-string=scenecut=0:open-gop=0:keyint={g}:min-keyint={g}"
        f"{b_frame_options(a, 'b-pyramid=0')} "
        f"{inband_h265(a)}"
    )


AUDIO_AAC = (
    "audiotestsrc is-live=true wave=sine freq=440 volume=0.3 "
    "! audioconvert ! audioresample ! audio/x-raw,rate=16000,channels=1 "
    "! voaacenc ! rtpmp4gpay name=pay1 pt=97"
)

AUDIO_PCMA = (
    "audiotestsrc is-live=true wave=sine freq=440 volume=0.3 "
    "! audioconvert ! audioresample ! audio/x-raw,rate=8000,channels=1 "
    "! alawenc ! rtppcmapay name=pay1 pt=8"
)


AUDIO_PCMU = (
    "audiotestsrc is-live=true wave=sine freq=440 volume=0.3 "
    "! audioconvert ! audioresample ! audio/x-raw,rate=8000,channels=1 "
    "! mulawenc ! rtppcmupay name=pay1 pt=0"
)

# Opus over RTP (RFC 7587): 48 kHz clock, 20 ms packets.
AUDIO_OPUS = (
    "audiotestsrc is-live=true wave=sine freq=440 volume=0.3 "
    "! audioconvert ! audioresample ! audio/x-raw,rate=48000,channels=1 "
    "! opusenc frame-size=20 ! rtpopuspay name=pay1 pt=98"
)


def launch_line(kind, a):
    if kind == "h264":
        parts = [video_h264(a)]
    elif kind == "h265":
        parts = [video_h265(a)]
    elif kind == "h264+aac":
        parts = [video_h264(a), AUDIO_AAC]
    elif kind == "h264+pcma":
        parts = [video_h264(a), AUDIO_PCMA]
    elif kind == "h264+pcmu":
        parts = [video_h264(a), AUDIO_PCMU]
    elif kind == "h264+opus":
        parts = [video_h264(a), AUDIO_OPUS]
    else:  # argparse validated already
        raise ValueError(kind)
    return "( " + " ".join(parts) + " )"


def parse_mount(text):
    path, sep, kind = text.partition("=")
    if not sep or not path or kind not in KINDS:
        raise argparse.ArgumentTypeError(
            f"expected PATH=KIND with KIND one of {', '.join(KINDS)}, got {text!r}"
        )
    if not path.startswith("/"):
        path = "/" + path
    return path, kind


def parse_auth(text):
    method, _, rest = text.partition(":")
    user, sep, password = rest.partition(":")
    if method not in ("basic", "digest") or not sep or not user:
        raise argparse.ArgumentTypeError(
            f"expected digest:USER:PASS or basic:USER:PASS, got {text!r}"
        )
    return method, user, password


def positive(text):
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def setup_auth(server, factories, method, user, password):
    """One method per server. No default token: unauthenticated clients get 401."""
    auth = GstRtspServer.RTSPAuth()
    token = GstRtspServer.RTSPToken()
    token.set_string("media.factory.role", user)
    if method == "basic":
        auth.set_supported_methods(GstRtsp.RTSPAuthMethod.BASIC)
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
    else:
        auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
        auth.add_digest(user, password, token)
    server.set_auth(auth)
    role = Gst.Structure.new_from_string(
        f"{user}, media.factory.access=(boolean)true, media.factory.construct=(boolean)true"
    )
    for factory in factories:
        factory.add_role_from_structure(role)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--mount", type=parse_mount, action="append", default=[],
                   metavar="PATH=KIND", help=f"KIND: {', '.join(KINDS)}")
    p.add_argument("--width", type=positive, default=320)
    p.add_argument("--height", type=positive, default=240)
    p.add_argument("--fps", type=positive, default=25)
    p.add_argument("--gop-frames", type=positive, default=25)
    p.add_argument("--bitrate", type=positive, default=512, help="kbit/s")
    p.add_argument("--bframes", type=int, choices=range(0, 4), default=0,
                   help="B-frames between reference frames (0: none, the default)")
    p.add_argument("--pattern", choices=("ball", "snow", "smpte"), default="ball",
                   help="test picture; snow (noise) makes key frames of about 1.2 MB at 3840x2160")
    p.add_argument("--protocols", choices=("any", "udp", "tcp"), default="any",
                   help="lower transports offered: a camera limited to udp answers 461 to TCP "
                        "interleaving (as VLC's server does)")
    p.add_argument("--auth", type=parse_auth, metavar="digest:USER:PASS|basic:USER:PASS")
    p.add_argument("--no-inband-parameter-sets", action="store_true",
                   help="video parameter sets (SPS/PPS, VPS) only in the SDP, never in the stream")
    p.add_argument("--sdp-fmtp-trailing-semicolon", action="store_true",
                   help="every a=fmtp line of the SDP ends with ';' (an empty parameter)")
    a = p.parse_args()
    if not a.mount:
        p.error("at least one --mount PATH=KIND is required")

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(a.port))
    server.set_backlog(1024)
    pool = GstRtspServer.RTSPThreadPool()
    pool.set_max_threads(16)
    server.set_thread_pool(pool)

    mounts = server.get_mount_points()
    factories = []
    media_type = trailing_semicolon_media() if a.sdp_fmtp_trailing_semicolon else None
    for path, kind in a.mount:
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(launch_line(kind, a))
        factory.set_shared(True)
        if a.sdp_fmtp_trailing_semicolon:
            factory.set_media_gtype(media_type)
        if a.no_inband_parameter_sets:
            video = "h265" if kind == "h265" else "h264"
            factory.connect("media-configure", lambda _f, m, v=video: strip_parameter_sets(m, v))
        if a.protocols == "udp":
            factory.set_protocols(GstRtsp.RTSPLowerTrans.UDP)
        elif a.protocols == "tcp":
            factory.set_protocols(GstRtsp.RTSPLowerTrans.TCP)
        mounts.add_factory(path, factory)
        factories.append(factory)
    if a.auth:
        setup_auth(server, factories, *a.auth)

    if server.attach(None) == 0:
        print(f"rtsp_server.py: cannot listen on 127.0.0.1:{a.port} (port taken?)",
              file=sys.stderr, flush=True)
        sys.exit(2)

    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, lambda *_: loop.quit() or False)

    parent = os.getppid()

    def parent_alive():
        if os.getppid() != parent:
            print("rtsp_server.py: parent went away, exiting", file=sys.stderr, flush=True)
            loop.quit()
            return False
        return True

    GLib.timeout_add_seconds(1, parent_alive)

    print(f"READY {a.port}", flush=True)
    loop.run()
    sys.exit(0)


if __name__ == "__main__":
    main()
