#!/usr/bin/env python3
"""Hostile RTSP "camera" for robustness tests. Plain sockets, standard library only.

    python3 tests/hostile_camera.py --port P --mode MODE

Modes:
  silent               accept TCP connections, read and discard, never answer
  garbage-after-play   answer OPTIONS/DESCRIBE (valid H.264 SDP)/SETUP (TCP interleaved)/PLAY
                       properly, then send random garbage and malformed `$` interleaved frames
                       forever, paced
  truncated-rtp        like garbage-after-play up to PLAY, then interleaved frames whose RTP
                       headers are truncated or invalid, mixed with H.264 FU-A fragments that
                       never end
  close-after-describe answer OPTIONS and DESCRIBE, then close the connection

Listens on 127.0.0.1 only. Prints exactly `READY <port>` on stdout once listening. Exit codes: 0 on
SIGTERM/SIGINT, 2 when the port is taken. Exits on its own when its parent process goes away.
"""

import argparse
import os
import random
import signal
import socket
import struct
import sys
import threading
import time

MODES = ("silent", "garbage-after-play", "truncated-rtp", "close-after-describe")

# Parameter sets of a 320x240 constrained-baseline stream from x264 (taken from tests/rtsp_server.py).
SPROP = "Z0LADdoFB+wFqDAwNSgAAAMACAAAAwGUeKFV,aM48gA=="
SSRC = 0x1234ABCD
SESSION = "4711DEAD"


def log(msg):
    print(f"hostile_camera.py: {msg}", file=sys.stderr, flush=True)


def sdp(host, port):
    return (
        "v=0\r\n"
        f"o=- 1 1 IN IP4 {host}\r\n"
        "s=hostile camera\r\n"
        "t=0 0\r\n"
        "a=control:*\r\n"
        "a=range:npt=now-\r\n"
        "m=video 0 RTP/AVP 96\r\n"
        "c=IN IP4 0.0.0.0\r\n"
        "a=rtpmap:96 H264/90000\r\n"
        f"a=fmtp:96 packetization-mode=1;sprop-parameter-sets={SPROP};profile-level-id=42c00d\r\n"
        "a=framerate:25\r\n"
        "a=control:stream=0\r\n"
    )


class Conn:
    """One client connection: a tiny RTSP request reader on top of a socket."""

    def __init__(self, sock, port, stop):
        self.sock = sock
        self.port = port
        self.stop = stop
        self.buf = b""

    def read_request(self):
        """Returns (method, url, headers) or None on EOF/stop. Skips interleaved `$` frames."""
        while not self.stop.is_set():
            if self.buf.startswith(b"$"):
                if len(self.buf) >= 4:
                    (n,) = struct.unpack(">H", self.buf[2:4])
                    if len(self.buf) >= 4 + n:
                        self.buf = self.buf[4 + n:]
                        continue
            else:
                end = self.buf.find(b"\r\n\r\n")
                if end >= 0:
                    head = self.buf[:end].decode("latin-1")
                    lines = head.split("\r\n")
                    headers = {}
                    for line in lines[1:]:
                        k, _, v = line.partition(":")
                        headers[k.strip().lower()] = v.strip()
                    body_len = int(headers.get("content-length", "0") or 0)
                    if len(self.buf) >= end + 4 + body_len:
                        self.buf = self.buf[end + 4 + body_len:]
                        parts = lines[0].split(" ")
                        if len(parts) < 2:
                            return ("", "", headers)
                        return (parts[0], parts[1], headers)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return None
            if not data:
                return None
            self.buf += data
        return None

    def reply(self, headers, extra=(), body=""):
        cseq = headers.get("cseq", "0")
        lines = ["RTSP/1.0 200 OK", f"CSeq: {cseq}", "Server: hostile-camera"]
        lines += list(extra)
        raw_body = body.encode()
        if raw_body:
            lines.append(f"Content-Length: {len(raw_body)}")
        msg = ("\r\n".join(lines) + "\r\n\r\n").encode() + raw_body
        self.sock.sendall(msg)


def handshake(conn, mode):
    """Answers requests until PLAY (returns True) or the mode says stop (returns False)."""
    base = f"rtsp://127.0.0.1:{conn.port}/"
    while True:
        req = conn.read_request()
        if req is None:
            return False
        method, url, h = req
        if method == "OPTIONS":
            conn.reply(h, ["Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER"])
        elif method == "DESCRIBE":
            content_base = url if url.endswith("/") else url + "/"
            if not content_base.startswith("rtsp://"):
                content_base = base
            conn.reply(h, ["Content-Type: application/sdp", f"Content-Base: {content_base}"],
                       sdp("127.0.0.1", conn.port))
            if mode == "close-after-describe":
                log("DESCRIBE answered, closing")
                return False
        elif method == "SETUP":
            transport = h.get("transport", "")
            if "interleaved" not in transport:
                transport = "RTP/AVP/TCP;unicast;interleaved=0-1"
            conn.reply(h, [f"Transport: {transport};ssrc={SSRC:08X}", f"Session: {SESSION};timeout=60"])
        elif method == "PLAY":
            conn.reply(h, [f"Session: {SESSION}", f"RTP-Info: url={url};seq=1000;rtptime=0",
                           "Range: npt=now-"])
            log(f"PLAY answered, mode {mode}")
            return True
        elif method == "TEARDOWN":
            conn.reply(h, [f"Session: {SESSION}"])
            return False
        else:
            conn.reply(h, [f"Session: {SESSION}"])


def interleaved(channel, payload):
    return b"$" + bytes([channel]) + struct.pack(">H", len(payload)) + payload


def rtp_header(seq, ts, marker=False, pt=96):
    return struct.pack(">BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF,
                       SSRC)


def garbage_chunks(rng):
    """Yields byte strings: random bytes and malformed `$` frames, forever."""
    while True:
        kind = rng.randrange(5)
        if kind == 0:
            yield bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 512)))
        elif kind == 1:
            # A `$` frame announcing more bytes than follow (the rest is more garbage).
            yield b"$\x00" + struct.pack(">H", 60000) + bytes(rng.getrandbits(8) for _ in range(64))
        elif kind == 2:
            # A `$` frame on a channel nobody set up.
            yield interleaved(rng.randrange(2, 256), bytes(rng.getrandbits(8) for _ in range(100)))
        elif kind == 3:
            # A zero-length frame on the RTP channel.
            yield b"$\x00\x00\x00"
        else:
            # A `$` frame holding random bytes that claim to be RTP.
            yield interleaved(0, bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 1500))))


def truncated_chunks(rng):
    """Yields interleaved frames: invalid RTP headers mixed with FU-A fragments that never end."""
    seq = 1000
    ts = 0
    fu_indicator = 0x7C  # NRI=3, type 28 (FU-A)
    nal_type = 5  # IDR slice
    started = False
    while True:
        for _ in range(20):
            if not started:
                fu_header = 0x80 | nal_type  # S bit
                started = True
            else:
                fu_header = nal_type  # middle fragment: never E
            payload = bytes([fu_indicator, fu_header]) + bytes(rng.getrandbits(8) for _ in range(1200))
            yield interleaved(0, rtp_header(seq, ts) + payload)
            seq += 1
        bad = rng.randrange(5)
        if bad == 0:
            pkt = rtp_header(seq, ts)[: rng.randrange(1, 12)]  # truncated fixed header
        elif bad == 1:
            pkt = struct.pack(">BBHII", 0x00, 96, seq & 0xFFFF, ts, SSRC) + b"\x7c\x05" * 10  # version 0
        elif bad == 2:
            pkt = struct.pack(">BBHII", 0x8F, 96, seq & 0xFFFF, ts, SSRC) + b"\x00" * 8  # 15 CSRCs claimed
        elif bad == 3:
            pkt = struct.pack(">BBHII", 0x90, 96, seq & 0xFFFF, ts, SSRC) + b"\xbe\xde"  # X bit, no ext
        else:
            pkt = struct.pack(">BBHII", 0xA0, 96, seq & 0xFFFF, ts, SSRC) + b"\x7c\x05\xff"  # padding > len
        yield interleaved(0, pkt)
        seq += 1
        if rng.randrange(10) == 0:
            ts += 3600  # a new "frame" starts while the old FU-A never ended
            started = False


def drain(conn):
    """Reads and discards whatever the client sends (keepalives, RTCP) so it never blocks on us."""
    while not conn.stop.is_set():
        try:
            data = conn.sock.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            return
        if not data:
            return


def serve(sock, port, mode, stop):
    sock.settimeout(0.5)
    conn = Conn(sock, port, stop)
    try:
        if mode == "silent":
            drain(conn)
            return
        if not handshake(conn, mode):
            return
        threading.Thread(target=drain, args=(conn,), daemon=True).start()
        rng = random.Random(port)
        chunks = garbage_chunks(rng) if mode == "garbage-after-play" else truncated_chunks(rng)
        sent = 0
        window = time.monotonic()
        for chunk in chunks:
            if stop.is_set():
                return
            sock.sendall(chunk)
            sent += len(chunk)
            if sent >= 16384:  # pace at ~320 KiB/s
                window += 0.05
                delay = window - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                else:
                    window = time.monotonic()
                sent = 0
    except (OSError, socket.timeout) as e:
        log(f"connection ended: {e}")
    finally:
        try:
            sock.close()
        except OSError:
            pass


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--mode", choices=MODES, required=True)
    a = p.parse_args()

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("127.0.0.1", a.port))
        listener.listen(128)
    except OSError as e:
        log(f"cannot listen on 127.0.0.1:{a.port} (port taken?): {e}")
        sys.exit(2)
    listener.settimeout(0.5)

    stop = threading.Event()

    def on_signal(*_):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    parent = os.getppid()

    print(f"READY {a.port}", flush=True)
    last_parent_check = time.monotonic()
    while not stop.is_set():
        try:
            sock, _ = listener.accept()
        except socket.timeout:
            sock = None
        except OSError:
            continue
        if sock is not None:
            threading.Thread(target=serve, args=(sock, a.port, a.mode, stop), daemon=True).start()
        if time.monotonic() - last_parent_check > 1:
            last_parent_check = time.monotonic()
            if os.getppid() != parent:
                log("parent went away, exiting")
                break
    stop.set()
    listener.close()
    sys.exit(0)


if __name__ == "__main__":
    main()
