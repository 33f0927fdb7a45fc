#!/usr/bin/env python3
"""A Parca stand-in for the end-to-end tests: the gRPC method
/parca.profilestore.v1alpha1.ProfileStoreService/WriteRaw served by grpcio (Debian's
python3-grpcio) through a generic handler that takes the request as raw bytes, so no code is
generated from the .proto: the WriteRawRequest is decoded by hand (receivers/wire.py) and
recorded (receivers/common.py). Answers as scripted: a JSON list of {"code", "message"} (gRPC
status names) used one per call, OK after that. Cleartext HTTP/2, or TLS with --cert/--key.

    parca_receiver.py --port P --out DIR [--script JSON] [--cert PEM --key PEM]

Prints "listening PORT" once it accepts connections."""
import argparse
import os
import sys
import time
from concurrent import futures

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wire  # noqa: E402
from common import Recorder, load_script  # noqa: E402

SERVICE = "parca.profilestore.v1alpha1.ProfileStoreService"


def make_handler(recorder):
    def write_raw(request, context):
        seq, scripted = recorder.next_answer()
        entry = {"path": f"/{SERVICE}/WriteRaw",
                 "headers": {k.lower(): v for k, v in context.invocation_metadata()},
                 "error": None, "tenant": None, "normalized": None}
        series = []
        try:
            series, entry["tenant"], entry["normalized"] = wire.write_raw_request(request)
        except (ValueError, UnicodeDecodeError) as e:
            entry["error"] = f"cannot decode WriteRawRequest: {e}"
        code, message = "OK", ""
        if entry["error"]:
            code, message = "INVALID_ARGUMENT", entry["error"]
        elif scripted:
            code, message = scripted.get("code", "OK"), scripted.get("message", "")
        entry["status"] = code
        recorder.record(seq, entry, series)
        if code != "OK":
            context.abort(getattr(grpc.StatusCode, code), message)
        return b""  # WriteRawResponse has no fields

    return write_raw


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--script", default="")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    args = parser.parse_args()

    recorder = Recorder(args.out, load_script(args.script))
    handler = grpc.method_handlers_generic_handler(SERVICE, {
        "WriteRaw": grpc.unary_unary_rpc_method_handler(make_handler(recorder)),
    })
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    address = f"127.0.0.1:{args.port}"
    if args.cert:
        with open(args.key, "rb") as k, open(args.cert, "rb") as c:
            creds = grpc.ssl_server_credentials([(k.read(), c.read())])
        port = server.add_secure_port(address, creds)
    else:
        port = server.add_insecure_port(address)
    server.start()
    print(f"listening {port}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop(0)


if __name__ == "__main__":
    main()
