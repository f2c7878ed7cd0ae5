#!/usr/bin/python3
"""A gRPC test app on Debian's python3-grpcio (a real implementation), with
raw-bytes messages (no protobuf): the server says who it is in every answer
and trailer; the client runs every kind of call against a target and prints
what it saw as one JSON object.

  grpc_app.py serve NAME HOST:PORT
  grpc_app.py check HOST:PORT [KEY=VALUE...]     metadata sent with every call
  grpc_app.py unary HOST:PORT COUNT [KEY=VALUE...]   COUNT unary calls; prints the servers' names

Service czctl.Test: Unary (echo), ServerStream (3 answers), ClientStream
(counts), Bidi (echo per message), Fail (NOT_FOUND with a trailer), Sleep
(answers after 5 s, or when the call ends), Deadline (the time the server
has left, from the grpc-timeout the client's deadline set).
"""
import json
import sys
import time
from concurrent import futures

import grpc

SERVICE = "czctl.Test"


def serve(name, address):
    me = name.encode()

    def trailer(ctx):
        ctx.set_trailing_metadata((("x-served-by", name),))

    def unary(req, ctx):
        trailer(ctx)
        seen = dict(ctx.invocation_metadata()).get("x-tenant", "")
        return me + b":" + req + b":" + seen.encode()

    def server_stream(req, ctx):
        trailer(ctx)
        for i in range(3):
            yield me + b":" + req + b":" + str(i).encode()

    def client_stream(reqs, ctx):
        trailer(ctx)
        got = [r for r in reqs]
        return me + b":" + str(len(got)).encode() + b":" + b"+".join(got)

    def bidi(reqs, ctx):
        trailer(ctx)
        for r in reqs:
            yield me + b":" + r

    def fail(req, ctx):
        trailer(ctx)
        ctx.abort(grpc.StatusCode.NOT_FOUND, "nothing here, said " + name)

    def sleep(req, ctx):
        end = time.monotonic() + 5
        while ctx.is_active() and time.monotonic() < end:
            time.sleep(0.02)
        return me

    def deadline(req, ctx):
        trailer(ctx)
        left = ctx.time_remaining()
        return me + b":" + (b"none" if left is None else str(round(left, 3)).encode())

    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
        "Sleep": grpc.unary_unary_rpc_method_handler(sleep),
        "Deadline": grpc.unary_unary_rpc_method_handler(deadline),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    if server.add_insecure_port(address) == 0:
        sys.exit("cannot listen on " + address)
    server.start()
    print("serving", name, address, flush=True)
    server.wait_for_termination()


def metadata_of(args):
    return tuple(tuple(a.split("=", 1)) for a in args)


def check(target, meta):
    out = {}
    with grpc.insecure_channel(target) as ch:
        grpc.channel_ready_future(ch).result(timeout=10)

        def method(kind, name):
            return getattr(ch, kind)("/%s/%s" % (SERVICE, name))

        def served(call):
            return dict(call.trailing_metadata() or ()).get("x-served-by")

        resp, call = method("unary_unary", "Unary").with_call(b"hi", metadata=meta, timeout=10)
        out["unary"] = resp.decode()
        out["unary_trailer"] = served(call)
        stream = method("unary_stream", "ServerStream")(b"s", metadata=meta, timeout=10)
        out["server_stream"] = [m.decode() for m in stream]
        out["server_stream_trailer"] = served(stream)
        resp, call = method("stream_unary", "ClientStream").with_call(iter([b"a", b"b", b"c", b"d"]),
                                                                       metadata=meta, timeout=10)
        out["client_stream"] = resp.decode()
        out["client_stream_trailer"] = served(call)
        stream = method("stream_stream", "Bidi")(iter([b"x", b"y"]), metadata=meta, timeout=10)
        out["bidi"] = [m.decode() for m in stream]
        out["bidi_trailer"] = served(stream)
        try:
            method("unary_unary", "Fail")(b"", metadata=meta, timeout=10)
            out["fail"] = "OK"
        except grpc.RpcError as e:
            out["fail"] = "%s: %s" % (e.code().name, e.details())
            out["fail_trailer"] = dict(e.trailing_metadata() or ()).get("x-served-by")
        # the server's time left, from the grpc-timeout header the deadline set
        name, left = method("unary_unary", "Deadline")(b"", metadata=meta, timeout=3).decode().split(":")
        out["deadline"] = name + (":carried" if left != "none" and 0 < float(left) <= 3.1 else ":" + left)
        started = time.monotonic()
        try:
            method("unary_unary", "Sleep")(b"", metadata=meta, timeout=0.5)
            out["sleep"] = "OK"
        except grpc.RpcError as e:
            out["sleep"] = e.code().name
        out["sleep_ended_within_2s"] = time.monotonic() - started < 2
    print(json.dumps(out, sort_keys=True))


def unary(target, count, meta):
    names = {}
    with grpc.insecure_channel(target) as ch:
        call = ch.unary_unary("/%s/Unary" % SERVICE)
        for _ in range(count):
            name = call(b"u", metadata=meta, timeout=10).decode().split(":")[0]
            names[name] = names.get(name, 0) + 1
    print(json.dumps(names, sort_keys=True))


def main():
    cmd = sys.argv[1]
    if cmd == "serve":
        serve(sys.argv[2], sys.argv[3])
    elif cmd == "check":
        check(sys.argv[2], metadata_of(sys.argv[3:]))
    elif cmd == "unary":
        unary(sys.argv[2], int(sys.argv[3]), metadata_of(sys.argv[4:]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
