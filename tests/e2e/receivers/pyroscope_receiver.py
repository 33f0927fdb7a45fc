#!/usr/bin/env python3
"""A Pyroscope stand-in for the end-to-end tests: the Connect unary endpoint
POST /push.v1.PusherService/Push over HTTP/1.1 (optionally TLS, optionally requiring a client
certificate), decoding each PushRequest by hand and recording it (receivers/common.py).

Each request is first judged as Grafana Pyroscope v2.2.1 would judge it (pyroscope_rules.py:
label and profile validation, sample and size limits, the per-tenant ingestion rate limiter,
the ingestion window): a request the real server refuses is refused the same way (400
invalid_argument or 429 resource_exhausted, with Pyroscope's message), and the record's
"outcome" says why, or, for an accepted one, what ingestion dropped (numeric labels, samples)
and which frames have no name. --limits JSON overrides the server's limits (pyroscope_rules
LIMITS), as its flags would.

A request the rules accept is then answered as scripted: a JSON list of {"status", "headers",
"body"} used one per request, 200 after that. An entry with "sticky": true answers every later
request for the same profile (same ID) the same way too: a profile refused for ever.

    pyroscope_receiver.py --port P --out DIR [--script JSON] [--limits JSON]
                          [--cert PEM --key PEM [--client-ca PEM]]

Prints "listening PORT" once it accepts connections."""
import argparse
import json
import os
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pyroscope_rules  # noqa: E402
import wire  # noqa: E402
from common import Recorder, load_script  # noqa: E402

PUSH_PATH = "/push.v1.PusherService/Push"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    recorder = None
    limits = pyroscope_rules.LIMITS
    limiter = None
    sticky = {}  # profile ID -> the scripted answer it gets for ever
    check_lock = threading.Lock()

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
        seq = self.recorder.next_seq()
        entry = {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                 "error": None}
        series = []
        if self.path != PUSH_PATH:
            entry["error"] = f"wrong path {self.path}"
        else:
            try:
                series = wire.push_request(body, raw=True)
            except (ValueError, UnicodeDecodeError) as e:
                entry["error"] = f"cannot decode PushRequest: {e}"
        ids = [s["id"] for one in series for s in one["samples"]]
        if entry["error"]:
            status, headers = 400, {}
            reply = json.dumps({"code": "invalid_argument", "message": entry["error"]})
        else:
            # Pyroscope keys its limits by tenant: X-Scope-OrgID, "anonymous" without it.
            tenant = self.headers.get("X-Scope-OrgID") or "anonymous"
            with self.check_lock:
                outcome = pyroscope_rules.check(series, tenant, self.limiter, self.limits)
                stuck = next((self.sticky[i] for i in ids if i in self.sticky), None)
            entry["outcome"] = outcome
            scripted = None
            if outcome["status"] != 200:
                status, headers = outcome["status"], {}
                reply = json.dumps({"code": outcome["code"], "message": outcome["message"]})
            else:
                scripted = stuck or self.recorder.take_answer()
            if scripted:
                status = scripted.get("status", 200)
                headers = scripted.get("headers", {})
                reply = scripted.get("body", "")
                if not isinstance(reply, str):
                    reply = json.dumps(reply)
                if scripted.get("sticky"):
                    with self.check_lock:
                        for i in ids:
                            self.sticky[i] = scripted
            elif outcome["status"] == 200:
                status, headers, reply = 200, {}, "{}"
        for one in series:
            one["labels"] = [[pyroscope_rules.text(n), pyroscope_rules.text(v)]
                             for n, v in one["labels"]]
        entry["status"] = status
        self.recorder.record(seq, entry, series)
        self.answer(status, reply.encode(), headers)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--script", default="")
    parser.add_argument("--limits", default="")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--client-ca")
    args = parser.parse_args()

    Handler.recorder = Recorder(args.out, load_script(args.script))
    limits = dict(pyroscope_rules.LIMITS)
    for name, value in (json.loads(args.limits) if args.limits else {}).items():
        if name not in limits:
            parser.error(f"--limits: no limit called {name}; see pyroscope_rules.LIMITS")
        limits[name] = value
    Handler.limits = limits
    Handler.limiter = pyroscope_rules.RateLimiter(limits)
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
