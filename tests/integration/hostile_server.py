#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""A loopback HTTP server that misbehaves on purpose, for ingest tests and
the ingest benchmark. Listens on 127.0.0.1 only, port 0 (the kernel picks);
prints "PORT <n>" on stdout once it accepts connections.

    hostile_server.py --root DIR [--delay-ms N] [--log FILE] [--max-life S]

Routes (query strings ignored):
    /files/NAME       the file ROOT/NAME (Content-Type from its extension),
                      after --delay-ms
    /404              404
    /flaky/NAME       500 on the first request of each path, then /files/NAME
    /stall            headers for 100000 bytes, 10 bytes, then nothing (bounded)
    /big              a body of --big-bytes, streamed chunked (no length announced)
    /big-announced    Content-Length --big-bytes announced, body streamed
    /html.jpg         an HTML page served as image/jpeg
    /truncated/NAME   the first half of ROOT/NAME with an honest Content-Length
    /redirect/NAME    302 to /files/NAME
    /loop/N           302 to /loop/N+1 (forever)
    /to-file          302 to file:///etc/passwd
    /cut/NAME         Content-Length of ROOT/NAME, half the body, then close

Every request line's path is appended to --log (one per line, flushed) so a
test can prove that a URL was never requested. The server stops by itself
after --max-life seconds, on SIGTERM, or when stdin closes.

Also a library for the test scripts: png_bytes() writes small valid PNGs.
"""
import argparse
import http.server
import os
import signal
import socketserver
import struct
import sys
import threading
import zlib

CTYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png",
          ".webp": "image/webp", ".gif": "image/gif", ".bmp": "image/bmp"}


def png_bytes(width, height, seed):
    """An RGB PNG of width x height whose pixels depend on `seed` (distinct
    seeds give distinct files and visibly different pictures)."""
    rows = []
    a, b, c = (seed * 37) % 256, (seed * 91 + 13) % 256, (seed * 53 + 101) % 256
    for y in range(height):
        row = bytearray([0])
        for x in range(width):
            row += bytes(((a + x * (1 + seed % 7)) % 256,
                          (b + y * (1 + seed % 5)) % 256,
                          (c + (x ^ y) * (1 + seed % 3)) % 256))
        rows.append(bytes(row))

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data +
                struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) +
            chunk(b"IDAT", zlib.compress(b"".join(rows), 6)) + chunk(b"IEND", b""))


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        pass  # clients that hang up (killed, or refusing a body) are expected


def make_handler(opts, stop, log_lock, log_file, flaky_seen):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 30  # a silent client cannot hold a thread forever

        def log_message(self, fmt, *args):
            pass

        def note(self):
            if log_file:
                with log_lock:
                    log_file.write(self.path + "\n")
                    log_file.flush()

        def send_body(self, status, body, ctype, headers=()):
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def file_bytes(self, name):
            name = os.path.basename(name)
            path = os.path.join(opts.root, name)
            try:
                with open(path, "rb") as f:
                    return f.read(), CTYPES.get(os.path.splitext(name)[1].lower(),
                                                "application/octet-stream")
            except OSError:
                return None, None

        def redirect(self, where):
            self.send_response(302)
            self.send_header("Location", where)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def sleep(self, seconds):
            return stop.wait(seconds)  # True when the server is stopping

        def do_GET(self):
            self.note()
            path = self.path.split("?", 1)[0]
            if path.startswith("/files/"):
                if opts.delay_ms:
                    self.sleep(opts.delay_ms / 1000.0)
                body, ctype = self.file_bytes(path[7:])
                if body is None:
                    return self.send_body(404, b"not found\n", "text/plain")
                return self.send_body(200, body, ctype)
            if path == "/404":
                return self.send_body(404, b"no such image\n", "text/plain")
            if path.startswith("/flaky/"):
                with log_lock:
                    first = path not in flaky_seen
                    flaky_seen.add(path)
                if first:
                    return self.send_body(500, b"try again\n", "text/plain")
                body, ctype = self.file_bytes(path[7:])
                return self.send_body(200, body, ctype)
            if path == "/stall":
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", "100000")
                self.end_headers()
                self.wfile.write(b"\xff\xd8\xff\xe0" + b"\0" * 6)
                self.wfile.flush()
                self.sleep(opts.stall_s)
                self.close_connection = True
                return
            if path in ("/big", "/big-announced"):
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                if path == "/big":
                    self.send_header("Transfer-Encoding", "chunked")
                else:
                    self.send_header("Content-Length", str(opts.big_bytes))
                self.end_headers()
                block = b"\xff\xd8\xff\xe0" + b"\x55" * (65536 - 4)
                sent = 0
                try:
                    while sent < opts.big_bytes and not stop.is_set():
                        part = block[:min(len(block), opts.big_bytes - sent)]
                        if path == "/big":
                            self.wfile.write(b"%x\r\n" % len(part) + part + b"\r\n")
                        else:
                            self.wfile.write(part)
                        sent += len(part)
                    if path == "/big":
                        self.wfile.write(b"0\r\n\r\n")
                except OSError:
                    pass  # the client gave up: expected
                self.close_connection = True
                return
            if path == "/html.jpg":
                return self.send_body(200, b"<!doctype html><html><body>not an image"
                                      b"</body></html>\n", "image/jpeg")
            if path.startswith("/truncated/"):
                body, ctype = self.file_bytes(path[11:])
                return self.send_body(200, body[:len(body) // 2], ctype)
            if path.startswith("/redirect/"):
                return self.redirect("/files/" + path[10:])
            if path.startswith("/loop/"):
                try:
                    n = int(path[6:])
                except ValueError:
                    n = 0
                return self.redirect("/loop/%d" % (n + 1))
            if path == "/to-file":
                return self.redirect("file:///etc/passwd")
            if path.startswith("/cut/"):
                body, ctype = self.file_bytes(path[5:])
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[:len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            return self.send_body(404, b"unknown route\n", "text/plain")

    return Handler


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--delay-ms", type=int, default=0)
    ap.add_argument("--log")
    ap.add_argument("--stall-s", type=float, default=60)
    ap.add_argument("--big-bytes", type=int, default=21 * 1000 * 1000)
    ap.add_argument("--max-life", type=float, default=300)
    opts = ap.parse_args()
    stop = threading.Event()
    log_file = open(opts.log, "a") if opts.log else None
    srv = Server(("127.0.0.1", 0),
                 make_handler(opts, stop, threading.Lock(), log_file, set()))
    srv.request_queue_size = 128

    def shutdown(*_):
        stop.set()
        threading.Thread(target=srv.shutdown, daemon=True).start()
    signal.signal(signal.SIGTERM, shutdown)
    threading.Timer(opts.max_life, shutdown).start()

    def watch_stdin():
        try:
            sys.stdin.buffer.read()
        except OSError:
            pass
        shutdown()
    if not sys.stdin.isatty():
        threading.Thread(target=watch_stdin, daemon=True).start()
    print("PORT %d" % srv.server_address[1], flush=True)
    srv.serve_forever(poll_interval=0.1)
    stop.set()
    os._exit(0)  # do not wait for handler threads (all daemon, all bounded)


if __name__ == "__main__":
    main()
