#!/usr/bin/env python3
"""A lossy link for RTSP: drops and reorders RTP packets of one interleaved channel or UDP stream.

    python3 tests/lossy_rtsp_proxy.py --port P --upstream-port U [--channel 0] [--udp] \
        [--drop-percent 1.0] [--reorder-percent 0.5] [--reorder-distance 1] [--damage-packets N] \
        [--seed 1] \
        [--stats FILE] [--sdp-trailing-semicolon] [--sdp-drop-sprop]

Listens on 127.0.0.1:P; each client gets its own connection to 127.0.0.1:U. Client-to-server bytes
pass unchanged. Server-to-client bytes are parsed as RTSP messages and `$` interleaved frames
(RFC 2326 section 10.12); frames of `--channel` (0: the RTP of the first stream set up) are
damaged: each is dropped with probability `--drop-percent`, or held back and sent after the next
`--reorder-distance` frames of the channel (default 1) with probability `--reorder-percent` (the
frames after a held one are never damaged). Only the first `--damage-packets` frames of the channel are candidates (0: all), so a
test can wait for the damage to end and compare counts exactly. Decisions come from a random
generator seeded with `--seed`.

`--udp` relays RTP over UDP instead: each `SETUP` asking for `client_port=X-Y` is rewritten to a
port pair of the proxy's, and the answer's `server_port` to the same pair, so the server sends RTP
and RTCP to the proxy and the client takes them from it. The proxy forwards what the server sends
to the client's X and Y (and drops what the client sends, e.g. firewall-punching packets); the RTP
of the first stream set up is damaged as above (a held datagram is sent after the next
`--reorder-distance`).

SDP quirks of real cameras, in the DESCRIBE answer (Content-Length adjusted):
`--sdp-trailing-semicolon` ends every `a=fmtp` line with `;` (an empty parameter),
`--sdp-drop-sprop` removes the `sprop-*` parameters (parameter sets only in band).

`--stats FILE` is rewritten (atomically) after every damaged packet and once the damage window has
passed, as JSON: {"seen": n, "dropped": n, "reordered": n, "done": bool}. Standard library only.
Prints exactly `READY <port>` on stdout once listening; exit code 2 when the port is taken. Exits
on its own when its parent process goes away.
"""

import argparse
import json
import os
import random
import signal
import socket
import struct
import sys
import threading
import time


def log(msg):
    print(f"lossy_rtsp_proxy.py: {msg}", file=sys.stderr, flush=True)


class Damage:
    """Shared counters and the seeded decision source."""

    def __init__(self, a):
        self.a = a
        self.rng = random.Random(a.seed)
        self.lock = threading.Lock()
        self.seen = 0
        self.dropped = 0
        self.reordered = 0
        self.done = False

    def write_stats(self):
        if not self.a.stats:
            return
        tmp = self.a.stats + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"seen": self.seen, "dropped": self.dropped,
                       "reordered": self.reordered, "done": self.done}, f)
        os.replace(tmp, self.a.stats)

    def release_held(self, passed):
        """Whether a held frame is sent now, after `passed` frames went past it."""
        return passed >= self.a.reorder_distance

    def decide(self):
        """'drop', 'hold' or 'pass' for the next frame of the channel."""
        with self.lock:
            limit = self.a.damage_packets
            if limit and self.seen >= limit:
                if not self.done:
                    self.done = True
                    self.write_stats()
                return "pass"
            self.seen += 1
            r = self.rng.random() * 100.0
            if r < self.a.drop_percent:
                self.dropped += 1
                verdict = "drop"
            elif r < self.a.drop_percent + self.a.reorder_percent:
                self.reordered += 1
                verdict = "hold"
            else:
                return "pass"
            self.write_stats()
            return verdict


def pipe_raw(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    for s in (src, dst):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def recv_exact(sock, buf, n):
    while len(buf) < n:
        data = sock.recv(65536)
        if not data:
            return False
        buf.extend(data)
    return True


def rewrite_sdp(body, a):
    lines = body.decode("utf-8", "replace").split("\r\n")
    out = []
    for line in lines:
        if line.startswith("a=fmtp:"):
            head, _, params = line.partition(" ")
            kept = [p.strip() for p in params.split(";") if p.strip()]
            if a.sdp_drop_sprop:
                kept = [p for p in kept if not p.startswith("sprop-")]
            if not kept:
                kept = ["packetization-mode=1"] if "sprop" in params else []
            line = head + " " + ";".join(kept)
            if a.sdp_trailing_semicolon:
                line += ";"
        out.append(line)
    return "\r\n".join(out).encode()


def rewrite_transport(msg, old, new):
    """Replaces the `old=P-Q` parameter of the Transport header with `old=<new>-<new+1>`."""
    end = msg.index(b"\r\n\r\n") + 4
    lines = []
    for line in msg[:end - 4].split(b"\r\n"):
        if line.lower().startswith(b"transport:"):
            params = []
            for param in line.split(b";"):
                if param.strip().startswith(old + b"="):
                    param = old + b"=" + f"{new}-{new + 1}".encode()
                params.append(param)
            line = b";".join(params)
        lines.append(line)
    return b"\r\n".join(lines) + b"\r\n\r\n" + msg[end:]


def transport_port(msg, name):
    """The first port of the Transport header's `name=P-Q` parameter, or None."""
    end = msg.index(b"\r\n\r\n")
    for line in msg[:end].split(b"\r\n"):
        if line.lower().startswith(b"transport:"):
            for param in line.split(b";"):
                key, _, value = param.strip().partition(b"=")
                if key == name:
                    return int(value.split(b"-")[0])
    return None


class UdpRelay:
    """One stream's RTP/RTCP relay: a port pair the server sends to, forwarded to the client."""

    def __init__(self, damage, damaged):
        self.damage = damage
        self.damaged = damaged
        self.client_port = None
        for _ in range(100):
            rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                rtp.bind(("127.0.0.1", 0))
                port = rtp.getsockname()[1]
                if port % 2 == 0 and port < 65535:
                    rtcp.bind(("127.0.0.1", port + 1))
                    self.rtp, self.rtcp, self.port = rtp, rtcp, port
                    return
            except OSError:
                pass
            rtp.close()
            rtcp.close()
        raise OSError("no free UDP port pair")

    def start(self, client_port):
        self.client_port = client_port
        rcvbuf = 8 * 1024 * 1024
        for sock, offset, damaged in ((self.rtp, 0, self.damaged), (self.rtcp, 1, False)):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            threading.Thread(target=self.forward, args=(sock, client_port + offset, damaged),
                             daemon=True).start()

    def forward(self, sock, dst_port, damaged):
        dst = ("127.0.0.1", dst_port)
        held = None
        passed = 0
        try:
            while True:
                data, src = sock.recvfrom(65536)
                if src == dst:
                    continue  # the client's firewall-punching packets
                if not damaged:
                    sock.sendto(data, dst)
                    continue
                if held is not None:
                    sock.sendto(data, dst)
                    passed += 1
                    if self.damage.release_held(passed):
                        sock.sendto(held, dst)
                        held = None
                    continue
                verdict = self.damage.decide()
                if verdict == "pass":
                    sock.sendto(data, dst)
                elif verdict == "hold":
                    held, passed = data, 0
        except OSError:
            pass


def rewrite_message(msg, a, relays=None):
    """Applies the SDP options to an RTSP message carrying an SDP body, and with `--udp` points a
    SETUP answer's `server_port` at the next relay waiting for its answer (`relays`)."""
    if relays and transport_port(msg, b"server_port") is not None:
        relay = relays.pop(0)
        msg = rewrite_transport(msg, b"server_port", relay.port)
        msg = rewrite_transport(msg, b"client_port", relay.client_port)
    end = msg.index(b"\r\n\r\n") + 4
    head, body = msg[:end], msg[end:]
    if not body.startswith(b"v=0") or not (a.sdp_trailing_semicolon or a.sdp_drop_sprop):
        return msg
    body = rewrite_sdp(body, a)
    lines = []
    for line in head[:-4].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            line = b"Content-Length: " + str(len(body)).encode()
        lines.append(line)
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def read_message(src, buf):
    """Reads one RTSP message (headers, then Content-Length bytes) from the front of `buf`."""
    while b"\r\n\r\n" not in buf:
        data = src.recv(65536)
        if not data:
            return None
        buf.extend(data)
    end = buf.index(b"\r\n\r\n") + 4
    length = 0
    for line in bytes(buf[:end]).split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip() or b"0")
    if not recv_exact(src, buf, end + length):
        return None
    msg = bytes(buf[:end + length])
    del buf[:end + length]
    return msg


def pipe_requests(src, dst, damage, relays):
    """Client to server with `--udp`: each SETUP's client ports become a new relay's."""
    buf = bytearray()
    first = True
    try:
        while True:
            msg = read_message(src, buf)
            if msg is None:
                break
            client_port = transport_port(msg, b"client_port")
            if msg.startswith(b"SETUP ") and client_port is not None:
                relay = UdpRelay(damage, damaged=first)
                first = False
                relay.start(client_port)
                relays.append(relay)
                msg = rewrite_transport(msg, b"client_port", relay.port)
            dst.sendall(msg)
    except OSError:
        pass
    for s in (src, dst):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def pipe_damaged(src, dst, damage, channel, relays=None):
    buf = bytearray()
    held = None
    passed = 0
    try:
        while True:
            if not recv_exact(src, buf, 1):
                break
            if buf[0] == 0x24:  # '$': interleaved frame
                if not recv_exact(src, buf, 4):
                    break
                ch = buf[1]
                (length,) = struct.unpack(">H", bytes(buf[2:4]))
                if not recv_exact(src, buf, 4 + length):
                    break
                frame = bytes(buf[:4 + length])
                del buf[:4 + length]
                if ch != channel:
                    dst.sendall(frame)
                    continue
                if held is not None:
                    passed += 1
                    if damage.release_held(passed):
                        dst.sendall(frame + held)
                        held = None
                    else:
                        dst.sendall(frame)
                    continue
                verdict = damage.decide()
                if verdict == "pass":
                    dst.sendall(frame)
                elif verdict == "hold":
                    held, passed = frame, 0
                continue
            msg = read_message(src, buf)
            if msg is None:
                break
            dst.sendall(rewrite_message(msg, damage.a, relays))
    except OSError:
        pass
    for s in (src, dst):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def serve(client, a, damage):
    try:
        upstream = socket.create_connection(("127.0.0.1", a.upstream_port), timeout=5)
        upstream.settimeout(None)
    except OSError as e:
        log(f"upstream: {e}")
        client.close()
        return
    if a.udp:
        relays = []
        threading.Thread(target=pipe_requests, args=(client, upstream, damage, relays),
                         daemon=True).start()
        threading.Thread(target=pipe_damaged, args=(upstream, client, damage, None, relays),
                         daemon=True).start()
        return
    threading.Thread(target=pipe_raw, args=(client, upstream), daemon=True).start()
    threading.Thread(target=pipe_damaged, args=(upstream, client, damage, a.channel),
                     daemon=True).start()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream-port", type=int, required=True)
    p.add_argument("--channel", type=int, default=0)
    p.add_argument("--udp", action="store_true")
    p.add_argument("--drop-percent", type=float, default=1.0)
    p.add_argument("--reorder-percent", type=float, default=0.5)
    p.add_argument("--reorder-distance", type=int, default=1)
    p.add_argument("--damage-packets", type=int, default=0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--stats")
    p.add_argument("--sdp-trailing-semicolon", action="store_true")
    p.add_argument("--sdp-drop-sprop", action="store_true")
    a = p.parse_args()

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind(("127.0.0.1", a.port))
    except OSError as e:
        log(f"cannot listen on 127.0.0.1:{a.port}: {e}")
        sys.exit(2)
    listener.listen(64)
    damage = Damage(a)
    damage.write_stats()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: os._exit(0))
    parent = os.getppid()

    def watch_parent():
        while os.getppid() == parent:
            time.sleep(1)
        log("parent went away, exiting")
        os._exit(0)

    threading.Thread(target=watch_parent, daemon=True).start()
    print(f"READY {a.port}", flush=True)
    while True:
        client, _ = listener.accept()
        serve(client, a, damage)


if __name__ == "__main__":
    main()
