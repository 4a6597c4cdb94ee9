#!/usr/bin/env python3
"""A fake OpenAI-compatible embeddings server for tests/cli/cli_test.sh (stdlib only).

  fake_embeddings_server.py serve --mode MODE [--port P] [--dim D] [--n N] [--require-key KEY]
      Listens on 127.0.0.1 (port P, or a free one when 0) and prints the port on stdout, then
      answers POST /v1/embeddings. The embedding of a text is deterministic (from its SHA-256),
      not normalised, and the "data" items come in reverse order, so clients must order them
      by "index". Modes:
        normal     answer every request
        garbage    answer 200 with a body that is not JSON
        hang       never answer (the client's deadline must fire)
        die-after  answer N requests, then exit at once on the next one (the connections in
                   flight are dropped), as a server that crashed
      --require-key: answer 401 unless "Authorization: Bearer KEY" is sent.
  fake_embeddings_server.py check PROFILES_TSV NPY DIM
      Exits 0 when NPY is float32 [rows of PROFILES_TSV, DIM] and row i is the normalised
      embedding of line i's text; prints what differs otherwise.
"""
import argparse
import hashlib
import http.server
import json
import math
import os
import struct
import sys
import threading
import time


def embedding(text, dim):
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    while len(digest) < dim:
        digest += hashlib.sha256(digest).digest()
    return [(b - 127.5) / 127.5 for b in digest[:dim]]


def serve(args):
    lock = threading.Lock()
    state = {"requests": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *unused):  # stdout carries the port only; keep stderr quiet
            pass

        def reply(self, code, body):
            data = body.encode("utf-8")
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()

        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            request = self.rfile.read(length)
            with lock:
                state["requests"] += 1
                count = state["requests"]
            if args.mode == "die-after" and count > args.n:
                os._exit(0)
            if args.mode == "hang":
                time.sleep(3600)
            if self.path != "/v1/embeddings":
                return self.reply(404, json.dumps({"error": "no route " + self.path}))
            if args.require_key and self.headers.get("Authorization") != "Bearer " + args.require_key:
                return self.reply(401, json.dumps({"error": "bad api key"}))
            if args.mode == "garbage":
                return self.reply(200, "<html>502 Bad Gateway</html>")
            try:
                texts = json.loads(request)["input"]
            except (ValueError, KeyError):
                return self.reply(400, json.dumps({"error": "bad request"}))
            data = [{"object": "embedding", "index": i, "embedding": embedding(t, args.dim)}
                    for i, t in enumerate(texts)]
            data.reverse()
            self.reply(200, json.dumps({"object": "list", "data": data, "model": "fake"}))

    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


def check(args):
    texts = []
    with open(args.profiles, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if line:
                texts.append(line.split("\t", 1)[1])
    with open(args.npy, "rb") as f:
        raw = f.read()
    if raw[:6] != b"\x93NUMPY":
        sys.exit("not an .npy file")
    header_len = struct.unpack("<H", raw[8:10])[0]
    header = raw[10:10 + header_len].decode("latin1")
    want_shape = "(%d, %d)" % (len(texts), args.dim)
    if "'<f4'" not in header or want_shape not in header:
        sys.exit("header %r, want float32 %s" % (header, want_shape))
    values = struct.unpack("<%df" % (len(texts) * args.dim), raw[10 + header_len:])
    for i, text in enumerate(texts):
        want = embedding(text, args.dim)
        norm = math.sqrt(sum(x * x for x in want))
        row = values[i * args.dim:(i + 1) * args.dim]
        if any(abs(a - b / norm) > 1e-6 for a, b in zip(row, want)):
            sys.exit("row %d is not the embedding of line %d's text" % (i, i + 1))


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--mode", choices=["normal", "garbage", "hang", "die-after"], default="normal")
    s.add_argument("--port", type=int, default=0)
    s.add_argument("--dim", type=int, default=12)
    s.add_argument("--n", type=int, default=0)
    s.add_argument("--require-key", default="")
    c = sub.add_parser("check")
    c.add_argument("profiles")
    c.add_argument("npy")
    c.add_argument("dim", type=int)
    args = parser.parse_args()
    serve(args) if args.command == "serve" else check(args)


if __name__ == "__main__":
    main()
