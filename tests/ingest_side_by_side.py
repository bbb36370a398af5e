#!/usr/bin/python3
"""Ingest side by side: the recorder and ffmpeg (-c copy) record the same URLs at the same time.

    /usr/bin/python3 tests/ingest_side_by_side.py [bframes] [lossy] [uhd] [auto] [quirks] [vlc]

Scenarios (all by default), each on loopback with the GStreamer test camera (tests/rtsp_server.py)
and, where a link is damaged or the SDP rewritten, tests/lossy_rtsp_proxy.py:
  bframes  x264 and x265 with bframes=2 (and AAC on the H.264 one), TCP
  lossy    H.264 through a link dropping 1 % and reordering 0.5 % of the RTP packets, TCP
  uhd      3840x2160 H.264, 20 Mbit/s, 5 fps, key frames of about 1.2 MB, UDP
  auto     a camera refusing TCP (461), transport = "auto"; G.711 audio
  quirks   H.265 with B-frames, fmtp ending in ';', parameter sets only in band
  vlc      VLC 3's own RTSP server (cvlc, as nobody when run as root; UDP only) serving clips made
           with ffmpeg: H.264, H.264 with B-frames + AAC, H.265 (x265 open GOPs) with B-frames + AAC
Prints, per stream, the recorder's frames, media duration, reconnects and loss counters, and
ffmpeg's duration and frame count. RUN_S (default 30) sets the length; NVR_BIN the recorder
(default target/debug/nvr). Needs the test dependencies (tests/run installs them). Docs:
docs/performance.md, "Ingest side by side with ffmpeg".
"""
import json, os, signal, socket, sqlite3, subprocess, sys, tempfile, time

WT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NVR = os.environ.get("NVR_BIN", WT + "/target/debug/nvr")
RUN_S = int(os.environ.get("RUN_S", "30"))


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def start(args, log):
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=open(log, "w"), stdin=subprocess.DEVNULL,
                            start_new_session=True, text=True)


def wait_ready(p, port):
    while True:
        line = p.stdout.readline()
        if not line:
            raise SystemExit(f"not ready: {p.args}")
        if line.strip() == f"READY {port}":
            return


def camera(mounts, extra):
    port = free_port()
    args = ["/usr/bin/python3", WT + "/tests/rtsp_server.py", "--port", str(port)]
    for m in mounts:
        args += ["--mount", m]
    p = start(args + extra, os.path.join(tempfile.gettempdir(), f"side-by-side-cam-{port}.log"))
    wait_ready(p, port)
    return p, port


def proxy(up, extra):
    port = free_port()
    p = start(["python3", WT + "/tests/lossy_rtsp_proxy.py", "--port", str(port), "--upstream-port", str(up)] + extra,
              os.path.join(tempfile.gettempdir(), f"side-by-side-proxy-{port}.log"))
    wait_ready(p, port)
    return p, port


VLC_CLIPS = {  # name: ffmpeg video options (and whether the clip has AAC audio)
    "h264": (["-c:v", "libx264", "-preset", "ultrafast", "-bf", "0"], False),
    "h264-bframes-aac": (["-c:v", "libx264", "-preset", "ultrafast", "-bf", "2"], True),
    "h265-bframes-aac": (["-c:v", "libx265", "-preset", "ultrafast", "-x265-params",
                          "keyint=25:min-keyint=25:bframes=2:log-level=error"], True),
}


def vlc(clip):
    """VLC's RTSP server serving an MPEG-TS clip looped (see testkit/src/vlc.rs); returns (process,
    port) once it answers a DESCRIBE."""
    d = tempfile.mkdtemp(prefix="side-by-side-vlc-")
    os.chmod(d, 0o755)
    video, audio = VLC_CLIPS[clip]
    f = d + "/clip.ts"
    args = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-map", "0:v"]
    if audio:
        args += ["-map", "1:a", "-c:a", "aac", "-b:a", "64k"]
    subprocess.run(args + ["-t", str(RUN_S + 60), "-g", "25"] + video + ["-pix_fmt", "yuv420p", f], check=True)
    os.chmod(f, 0o644)
    port = free_port()
    user = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"] if os.geteuid() == 0 else []
    p = subprocess.Popen(user + ["cvlc", "-q", "--loop", f, "--sout", f"#gather:rtp{{sdp=rtsp://127.0.0.1:{port}/x}}",
                                 "--sout-keep"], stdout=subprocess.DEVNULL, stderr=open(d + "/vlc.log", "w"),
                         stdin=subprocess.DEVNULL, start_new_session=True, env=dict(os.environ, HOME=d))
    for _ in range(300):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(f"DESCRIBE rtsp://127.0.0.1:{port}/x RTSP/1.0\r\nCSeq: 1\r\n\r\n".encode())
                if b"m=video" in s.recv(65536):
                    return p, port
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"VLC not ready: {d}/vlc.log")


def scenario(name, cams, ingest=""):
    """cams: list of (camera name, url, transport, ffmpeg transport)."""
    d = tempfile.mkdtemp(prefix="side-by-side-")
    os.makedirs(d + "/identity")
    open(d + "/identity/identity.toml", "w").write('node = "a"\n')
    cfg = f'identity_dir = "{d}/identity"\n[recording]\nsegment_duration_s = 10\n[ingest]\n{ingest}\n' \
          f'[[nodes]]\nname = "a"\nrole = "primary"\ndata_dir = "{d}/data"\n'
    for c, url, tr, _ in cams:
        cfg += f'[[cameras]]\nname = "{c}"\nnode = "a"\ntransport = "{tr}"\n[cameras.streams.main]\nurl = "{url}"\n'
    open(d + "/nvr.toml", "w").write(cfg)
    nvr = subprocess.Popen([NVR, "run", "--config", d + "/nvr.toml"], stderr=open(d + "/nvr.log", "w"),
                           stdout=subprocess.DEVNULL, start_new_session=True)
    ffs = []
    for c, url, _, ftr in cams:
        ffs.append(subprocess.Popen(["ffmpeg", "-nostdin", "-v", "error", "-rtsp_transport", ftr, "-i", url,
                                     "-map", "0:v", "-c", "copy", "-y", f"{d}/ff-{c}.mp4"],
                                    stderr=open(f"{d}/ff-{c}.log", "w"), start_new_session=True))
    time.sleep(RUN_S + 2)
    st = json.load(open(d + "/data/status.json"))
    nvr.send_signal(signal.SIGTERM)
    for f in ffs:
        f.send_signal(signal.SIGINT)
    nvr.wait(30)
    for f in ffs:
        f.wait(20)
    db = sqlite3.connect(d + "/data/catalog.db")
    for c, url, _, _ in cams:
        s = next(x for x in st["streams"] if x["camera"] == c)
        frames = db.execute("select coalesce(sum(frames),0), count(*), coalesce(sum(media_duration_ms),0) from segments join streams on "
                            "streams.id = segments.stream_id where streams.camera = ?", (c,)).fetchone()
        out = subprocess.run(["ffprobe", "-v", "error", "-count_packets", "-select_streams", "v:0", "-show_entries",
                              "stream=nb_read_packets,duration", "-of", "csv=p=0", f"{d}/ff-{c}.mp4"],
                             capture_output=True, text=True).stdout.strip()
        fferr = open(f"{d}/ff-{c}.log").read().strip().splitlines()
        print(f"{name} | {c}: nvr frames {frames[0]} ({frames[2] / 1000:.2f} s) in {frames[1]} segments, reconnects {s['reconnects']}, "
              f"rtp lost {s['rtp_packets_lost']}, bad packets {s['packet_errors']}, skipped {s['frames_skipped']}, "
              f"transport {s.get('transport')}, udp buffer {s.get('udp_recv_buffer_bytes')} | ffmpeg (duration s, frames) {out or 0}, "
              f"{len(fferr)} error lines {fferr[:1]}", flush=True)
    print(f"  (dir {d})", flush=True)


def main():
    which = sys.argv[1:]
    procs = []
    try:
        if not which or "bframes" in which:
            cam, port = camera(["/h264=h264+aac", "/h265=h265"], ["--bframes", "2"]); procs.append(cam)
            scenario("GStreamer B-frames (x264/x265 bframes=2), TCP",
                     [("b264", f"rtsp://127.0.0.1:{port}/h264", "tcp", "tcp"),
                      ("b265", f"rtsp://127.0.0.1:{port}/h265", "tcp", "tcp")])
        if not which or "lossy" in which:
            cam, port = camera(["/cam=h264"], []); procs.append(cam)
            px, pport = proxy(port, ["--drop-percent", "1", "--reorder-percent", "0.5"]); procs.append(px)
            scenario("H.264 through a link dropping 1 % and reordering 0.5 % of RTP packets, TCP",
                     [("lossy", f"rtsp://127.0.0.1:{pport}/cam", "tcp", "tcp")])
        if not which or "uhd" in which:
            cam, port = camera(["/cam=h264"], ["--width", "3840", "--height", "2160", "--fps", "5",
                                               "--gop-frames", "5", "--bitrate", "20000", "--pattern", "snow"])
            procs.append(cam)
            scenario("GStreamer 4K H.264 20 Mbit/s, 1.2 MB key frames, UDP",
                     [("uhd", f"rtsp://127.0.0.1:{port}/cam", "udp", "udp")])
        if not which or "auto" in which:
            cam, port = camera(["/cam=h264+pcma"], ["--protocols", "udp"]); procs.append(cam)
            scenario("camera refusing TCP (461), transport auto; G.711 audio",
                     [("auto", f"rtsp://127.0.0.1:{port}/cam", "auto", "udp")])
        if not which or "quirks" in which:
            cam, port = camera(["/h265=h265"], ["--bframes", "2"]); procs.append(cam)
            px, pport = proxy(port, ["--drop-percent", "0", "--reorder-percent", "0", "--sdp-trailing-semicolon",
                                     "--sdp-drop-sprop"]); procs.append(px)
            scenario("H.265 B-frames, fmtp ending in ';', parameter sets only in band",
                     [("q265", f"rtsp://127.0.0.1:{pport}/h265", "tcp", "tcp")])
        if not which or "vlc" in which:
            cams = []
            for clip in VLC_CLIPS:
                p, port = vlc(clip); procs.append(p)
                cams.append((clip, f"rtsp://127.0.0.1:{port}/x", "udp", "udp"))
            scenario("VLC 3 RTSP server, UDP", cams)
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


main()
