#!/usr/bin/python3
"""Capture real Thrift frames for the codec unit tests
(tests/unit/protocols/thrift/fixtures/*.bin).

Frames come from Apache Thrift's own Python library and generated code (Debian packages
python3-thrift and thrift-compiler), so the tests check meltemi's codec against what a real
client and server put on the wire, not against our reading of the spec.

For every protocol/transport pair it writes:
  <combo>_call.bin       Echo.echo(payload) from a generated client, seq id 42
  <combo>_reply.bin      the generated processor's reply to that call
  <combo>_declared.bin   a reply carrying the declared exception Oops (type REPLY)
  <combo>_internal.bin   the processor's TApplicationException for a failing handler
  <combo>_oneway.bin     Echo.fire("x") (oneway), seq id 7
  <combo>_appex.bin      a TApplicationException(UNKNOWN_METHOD, "meltemi: no route")
                         reply to the echo call, written by the library: the reference
                         for the codec's on_error
THeader calls carry the info headers x-request-id=abc-123 and env=canary.

Run with Debian's python (the PATH python3 may not see Debian packages):
    /usr/bin/python3 tools/gen_thrift_fixtures.py [outdir]
"""
import io
import logging
import os
import subprocess
import sys
import tempfile

from thrift.Thrift import TApplicationException, TMessageType
from thrift.protocol.TBinaryProtocol import TBinaryProtocol
from thrift.protocol.TCompactProtocol import TCompactProtocol
from thrift.protocol.THeaderProtocol import THeaderProtocol
from thrift.transport import TTransport
from thrift.transport.THeaderTransport import THeaderClientType, THeaderSubprotocolID

IDL = """
namespace py fixture
enum Color { RED = 1, GREEN = 2 }
struct Point { 1: i32 x, 2: i32 y }
struct Payload {
  1: string name,
  2: list<Point> points,
  3: map<string, i64> counts,
  4: set<i16> tags,
  5: bool flag,
  6: double ratio,
  7: binary blob,
  8: byte b,
  9: optional Payload child,
  10: list<list<string>> nested,
  11: map<i32, Point> by_id,
  12: list<bool> bools,
  13: Color color,
  14: i64 big,
  15: map<string, list<map<i32, string>>> deep,
  200: bool far_flag,
}
exception Oops { 1: string why }
service Echo {
  Payload echo(1: Payload p) throws (1: Oops oops),
  oneway void fire(1: string what),
  void ping(),
}
"""

ALL_CLIENT_TYPES = [
    THeaderClientType.HEADERS,
    THeaderClientType.FRAMED_BINARY,
    THeaderClientType.UNFRAMED_BINARY,
    THeaderClientType.FRAMED_COMPACT,
    THeaderClientType.UNFRAMED_COMPACT,
]


class Pipe(TTransport.TTransportBase):
    """Reads from one byte string, collects writes in another."""

    def __init__(self, data=b""):
        self.r = io.BytesIO(data)
        self.w = io.BytesIO()

    def isOpen(self):
        return True

    def read(self, sz):
        return self.r.read(sz)

    def write(self, buf):
        self.w.write(buf)

    def flush(self):
        pass


class OldBinaryProtocol(TBinaryProtocol):
    """Non-strict binary. The library returns a non-strict message name as bytes, which its
    own processor cannot look up or write back; decode it as the strict path does."""

    def readMessageBegin(self):
        name, mtype, seqid = TBinaryProtocol.readMessageBegin(self)
        return (name.decode() if isinstance(name, bytes) else name), mtype, seqid


def make_protocol(combo, pipe):
    """Protocol object for one side of a connection in the given dialect."""
    proto, transport = combo.split("_")
    if transport == "header":
        sub = THeaderSubprotocolID.COMPACT if proto == "compact" else THeaderSubprotocolID.BINARY
        return THeaderProtocol(pipe, ALL_CLIENT_TYPES, default_protocol=sub)
    trans = TTransport.TFramedTransport(pipe) if transport == "framed" else \
        TTransport.TBufferedTransport(pipe)
    if proto == "compact":
        return TCompactProtocol(trans)
    if proto == "binaryold":
        return OldBinaryProtocol(trans, strictRead=False, strictWrite=False)
    return TBinaryProtocol(trans, strictRead=False, strictWrite=True)


COMBOS = [
    "binary_unframed", "binary_framed", "binary_header",
    "binaryold_unframed", "binaryold_framed",
    "compact_unframed", "compact_framed", "compact_header",
]


def payload(fixture):
    P = fixture.ttypes
    child = P.Payload(name="child", points=[], counts={}, tags=set(), flag=False)
    return P.Payload(
        name="hello \u00e9t\u00e9",
        points=[P.Point(x=i, y=-i) for i in range(5)],
        counts={"a": 1, "b": -2, "c": 1 << 40},
        tags={1, 2, 300},
        flag=True,
        ratio=3.25,
        blob=bytes(range(40)),
        b=-7,
        child=child,
        nested=[["x", "y"], [], ["z" * 20]],
        by_id={7: P.Point(x=1, y=2)},
        bools=[True, False, True],
        color=P.Color.GREEN,
        big=-(1 << 50),
        deep={"k": [{1: "one"}, {}], "empty": []},
        far_flag=True,
    )


def capture_call(fixture, combo, method, seqid, args, headers):
    pipe = Pipe()
    prot = make_protocol(combo, pipe)
    for k, v in headers.items():
        prot.set_header(k, v)
    client = fixture.Echo.Client(prot)
    client._seqid = seqid
    getattr(client, "send_" + method)(*args)
    return pipe.w.getvalue()


class Handler:
    def echo(self, p):
        if p.name == "oops":
            raise Handler.fixture.ttypes.Oops(why="asked for it")
        return p

    def fire(self, what):
        pass

    def ping(self):
        raise RuntimeError("handler failure")


def serve(fixture, combo, call):
    pipe = Pipe(call)
    prot = make_protocol(combo, pipe)
    fixture.Echo.Processor(Handler()).process(prot, prot)
    return pipe.w.getvalue()


def app_exception_reply(combo, call):
    """What a server built on the library sends for an unknown method."""
    pipe = Pipe(call)
    prot = make_protocol(combo, pipe)
    name, _, seqid = prot.readMessageBegin()
    prot.skip(12)  # TType.STRUCT
    prot.readMessageEnd()
    prot.writeMessageBegin(name, TMessageType.EXCEPTION, seqid)
    TApplicationException(TApplicationException.UNKNOWN_METHOD, "meltemi: no route").write(prot)
    prot.writeMessageEnd()
    prot.trans.flush()
    return pipe.w.getvalue()


def load_fixture_module(workdir):
    idl = os.path.join(workdir, "fixture.thrift")
    with open(idl, "w") as f:
        f.write(IDL)
    subprocess.run(["thrift", "--gen", "py", "-out", workdir, idl], check=True)
    sys.path.insert(0, workdir)
    import fixture.Echo  # noqa: F401  (generated)
    import fixture.ttypes  # noqa: F401
    return sys.modules["fixture"]


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "tests", "unit", "protocols", "thrift",
        "fixtures")
    os.makedirs(outdir, exist_ok=True)
    logging.disable(logging.CRITICAL)  # the processor logs the failing handler
    with tempfile.TemporaryDirectory() as work:
        fixture = load_fixture_module(work)
        Handler.fixture = fixture
        P = fixture.ttypes
        for combo in COMBOS:
            headers = {b"x-request-id": b"abc-123", b"env": b"canary"} \
                if combo.endswith("header") else {}
            call = capture_call(fixture, combo, "echo", 42, (payload(fixture),), headers)
            oops = capture_call(fixture, combo, "echo", 43, (P.Payload(name="oops"),), headers)
            ping = capture_call(fixture, combo, "ping", 44, (), headers)
            frames = {
                "call": call,
                "reply": serve(fixture, combo, call),
                "declared": serve(fixture, combo, oops),
                "oneway": capture_call(fixture, combo, "fire", 7, ("x",), headers),
                "appex": app_exception_reply(combo, call),
                "internal": serve(fixture, combo, ping),
            }
            for kind, data in frames.items():
                with open(os.path.join(outdir, "%s_%s.bin" % (combo, kind)), "wb") as f:
                    f.write(data)
    print("wrote %d fixtures to %s" % (len(COMBOS) * 6, os.path.normpath(outdir)))


if __name__ == "__main__":
    main()
