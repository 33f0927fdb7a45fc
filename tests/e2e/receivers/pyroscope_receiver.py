#!/usr/bin/env python3
"""A Pyroscope stand-in for the end-to-end tests: the Connect unary endpoint
POST /push.v1.PusherService/Push over HTTP/1.1 (optionally TLS, optionally requiring a client
certificate), decoding each PushRequest by hand and recording it (receivers/common.py), and
answering as scripted: a JSON list of {"status", "headers", "body"} used one per request, 200
after that.

    pyroscope_receiver.py --port P --out DIR [--script JSON]
                          [--cert PEM --key PEM [--client-ca PEM]]

Prints "listening PORT" once it accepts connections."""
import argparse
import json
import os
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wire  # noqa: E402
from common import Recorder, load_script  # noqa: E402

PUSH_PATH = "/push.v1.PusherService/Push"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    recorder = None

    def log_message(self, fmt, *args):
        pass

    def answer(self, status, body=b"", headers=None, content_type="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        seq, scripted = self.recorder.next_answer()
        entry = {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                 "error": None}
        series = []
        if self.path != PUSH_PATH:
            entry["error"] = f"wrong path {self.path}"
        else:
            try:
                series = wire.push_request(body)
            except (ValueError, UnicodeDecodeError) as e:
                entry["error"] = f"cannot decode PushRequest: {e}"
        if entry["error"]:
            status, headers = 400, {}
            reply = json.dumps({"code": "invalid_argument", "message": entry["error"]})
        elif scripted:
            status = scripted.get("status", 200)
            headers = scripted.get("headers", {})
            reply = scripted.get("body", "")
            if not isinstance(reply, str):
                reply = json.dumps(reply)
        else:
            status, headers, reply = 200, {}, "{}"
        entry["status"] = status
        self.recorder.record(seq, entry, series)
        self.answer(status, reply.encode(), headers)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--script", default="")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--client-ca")
    args = parser.parse_args()

    Handler.recorder = Recorder(args.out, load_script(args.script))
    ThreadingHTTPServer.allow_reuse_address = True
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    if args.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.cert, args.key)
        ctx.set_alpn_protocols(["http/1.1"])
        if args.client_ca:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(args.client_ca)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print(f"listening {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
