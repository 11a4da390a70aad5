"""
configs.py - the YAML the integration tests apply, as a user would `kubectl apply` it.

The blog's documents (../../shared/seed/aeraki-blog.txt, steps "Redis server authentication"
and "Client-side authentication") are kept verbatim, with the indentation the extraction lost
restored. The blog never shows the ServiceEntry for redis-single; service_entry() writes the
one a local setup needs: the VIP the listener binds and the redis-server endpoint.
"""

from pathlib import Path

HOST = "redis-single.redis.svc.cluster.local"

# The blog's Secret data.password, dGVzdHJlZGlzCg==, is base64 of "testredis\n" (made with
# `echo testredis | base64`). meltemi keeps Secret bytes as Kubernetes does (and warns about
# the newline), so a redis-server behind the verbatim blog YAML needs exactly these bytes.
BLOG_SECRET_PASSWORD = "testredis\n"
# Everywhere else (and in examples/redis-demo) the Secret holds "testredis", no newline.
UPSTREAM_PASSWORD = "testredis"
CLIENT_PASSWORD = "testredis123!"

BLOG_STEP1 = """\
apiVersion: v1
kind: Secret
metadata:
  name: redis-service-secret
  namespace: redis
type: Opaque
data:
  password: dGVzdHJlZGlzCg==
---
apiVersion: redis.aeraki.io/v1alpha1
kind: RedisDestination
metadata:
  name: redis-single
  namespace: redis
spec:
  host: redis-single.redis.svc.cluster.local
  trafficPolicy:
    connectionPool:
      redis:
        auth:
          secret:
            name: redis-service-secret
"""

# The demo's step 1: the blog's RedisDestination, the Secret without the trailing newline.
STEP1 = BLOG_STEP1.replace("dGVzdHJlZGlzCg==", "dGVzdHJlZGlz")

BLOG_STEP2 = """\
apiVersion: redis.aeraki.io/v1alpha1
kind: RedisService
metadata:
  name: redis-single
  namespace: redis
spec:
  host:
  - redis-single.redis.svc.cluster.local
  settings:
    auth:
      plain:
        password: testredis123!
"""


def service_entry(name, vip, port, endpoint_port, port_name="tcp-redis", host=None,
                  endpoint_address="127.0.0.1", namespace="redis"):
    """A ServiceEntry whose listener is vip:port and whose one endpoint is
    endpoint_address:endpoint_port (mapped by port name, as Istio does)."""
    host = host or f"{name}.{namespace}.svc.cluster.local"
    return f"""\
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata:
  name: {name}
  namespace: {namespace}
spec:
  hosts:
  - {host}
  addresses:
  - {vip}
  ports:
  - number: {port}
    name: {port_name}
    protocol: TCP
  location: MESH_INTERNAL
  resolution: STATIC
  endpoints:
  - address: {endpoint_address}
    ports:
      {port_name}: {endpoint_port}
"""


def redis_destination_plain(password, name="redis-single", host=HOST, username=None):
    user = f"\n            username: {username}" if username else ""
    return f"""\
apiVersion: redis.aeraki.io/v1alpha1
kind: RedisDestination
metadata:
  name: {name}
  namespace: redis
spec:
  host: {host}
  trafficPolicy:
    connectionPool:
      redis:
        auth:
          plain:{user}
            password: "{password}"
"""


def redis_get_fault(name, host, gateways=None, namespace="redis"):
    """A RedisService answering every GET to host with "Fault Injected: Error" (100%): a
    policy whose effect shows from any client. gateways: its gateways[] (None: the mesh)."""
    gw = "".join(f"  - {g}\n" for g in gateways or ())
    return f"""\
apiVersion: redis.aeraki.io/v1alpha1
kind: RedisService
metadata:
  name: {name}
  namespace: {namespace}
spec:
""" + (f"  gateways:\n{gw}" if gw else "") + f"""\
  host:
  - {host}
  faults:
  - type: ERROR
    percentage:
      value: 100
    commands:
    - GET
"""


def secret_string_data(name, password):
    return f"""\
apiVersion: v1
kind: Secret
metadata:
  name: {name}
  namespace: redis
type: Opaque
stringData:
  password: "{password}"
"""


def write_config(directory, files):
    """Writes {filename: yaml text} into directory (created); returns its Path."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (d / name).write_text(text)
    return d


def max_connections_rule(n, host=HOST, namespace="redis", name="leases"):
    """A DestinationRule bounding host's exclusive upstream connections (the leases of
    transactions, blocking commands and SELECT) to n per endpoint and worker."""
    return f"""\
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata:
  name: {name}
  namespace: {namespace}
spec:
  host: {host}
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: {n}
"""
