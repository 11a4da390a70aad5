// hello.thrift - the service the Thrift integration tests call through meltemi.
// Code is generated from this file at test time (thrift --gen py into a temporary
// directory, see thrift_peers.py), never committed.
namespace py meltemi_hello

// What a server answers: who it is, what it was asked and which THeader info headers it
// received, so a test can see routing, mutation and mirroring from the client side too.
struct Reply {
  1: string server,
  2: string method,
  3: string arg,
  4: map<string, string> headers,
}

service Hello {
  Reply hello(1: string name),
  Reply greet(1: string name),
  oneway void notify(1: string what),
}
