#!/usr/bin/python3
"""
k8s-dry-run.py - `kubectl apply --dry-run=client --validate=false -f` on every manifest of
deploy/kubernetes, and `kubectl kustomize` on the overlay, on a machine without a cluster.

kubectl's client-side dry run changes nothing and sends no object anywhere, but it still asks
an API server two things: which kinds exist (discovery: /api, /apis, /api/v1, /apis/apps/v1)
and whether each object exists already (a GET, to choose between create and patch). This
script answers exactly those on 127.0.0.1, from the discovery documents of the Kubernetes
versions meltemi's manifests target (core/v1 and apps/v1 kinds only) and "404 Not Found" for
every object, so that kubectl parses, defaults and prints each manifest as it would for a new
object; a manifest kubectl cannot map or decode fails the run. Nothing here validates field
schemas (--validate=false, as the issue asks): that needs a real API server.

    tools/k8s-dry-run.py [--kubectl PATH] [DIR]      (default DIR: deploy/kubernetes)

Exit 0 when every manifest passes, 1 otherwise (each failure printed).
"""

import argparse
import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def resource(name, kind, namespaced=True, short=()):
    return {"name": name, "singularName": "", "namespaced": namespaced, "kind": kind,
            "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
            "shortNames": list(short)}


DISCOVERY = {
    "/version": {"major": "1", "minor": "20", "gitVersion": "v1.20.2"},
    "/api": {"kind": "APIVersions", "versions": ["v1"],
             "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                             "serverAddress": "127.0.0.1"}]},
    "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
        {"name": "apps", "versions": [{"groupVersion": "apps/v1", "version": "v1"}],
         "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"}}]},
    "/api/v1": {"kind": "APIResourceList", "groupVersion": "v1", "resources": [
        resource("configmaps", "ConfigMap", short=("cm",)),
        resource("secrets", "Secret"),
        resource("services", "Service", short=("svc",)),
        resource("serviceaccounts", "ServiceAccount", short=("sa",)),
        resource("pods", "Pod", short=("po",)),
        resource("namespaces", "Namespace", namespaced=False, short=("ns",))]},
    "/apis/apps/v1": {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "apps/v1",
                      "resources": [resource("deployments", "Deployment", short=("deploy",)),
                                    resource("daemonsets", "DaemonSet", short=("ds",)),
                                    resource("statefulsets", "StatefulSet", short=("sts",))]},
}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):  # quiet
        pass

    def _send(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path in DISCOVERY:
            self._send(200, DISCOVERY[path])
            return
        # Every object is new: what a client-side dry run of a first apply sees.
        self._send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                         "reason": "NotFound", "code": 404, "message": f"{path} not found"})

    def do_POST(self):  # nothing is ever created: a dry run must not get here
        self._send(405, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                         "reason": "MethodNotAllowed", "code": 405,
                         "message": "k8s-dry-run.py accepts no writes"})

    do_PUT = do_PATCH = do_DELETE = do_POST


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kubectl", default="kubectl")
    ap.add_argument("dir", nargs="?", default=str(REPO / "deploy" / "kubernetes"))
    args = ap.parse_args()
    root = Path(args.dir)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    kube = [args.kubectl, f"--server={url}", "--kubeconfig=/dev/null"]

    failures = 0
    # Kubernetes manifests: every *.yaml but the kustomizations and meltemi's own
    # configuration (meltemi-config/: Istio and Aeraki kinds, for `meltemi validate`).
    manifests = sorted(p for p in root.rglob("*.yaml") if p.name != "kustomization.yaml"
                       and "meltemi-config" not in p.relative_to(root).parts)
    for m in manifests:
        r = subprocess.run([*kube, "apply", "--dry-run=client", "--validate=false", "-f", str(m)],
                           capture_output=True, text=True, timeout=60)
        rel = m.relative_to(root)
        if r.returncode != 0 or "(dry run)" not in r.stdout:
            failures += 1
            print(f"FAIL {rel}: {r.stdout.strip()} {r.stderr.strip()}")
        else:
            print(f"ok   {rel}: " + "; ".join(r.stdout.strip().splitlines()))
    for k in sorted(root.rglob("kustomization.yaml")):
        d = k.parent
        r = subprocess.run([*kube, "kustomize", str(d)], capture_output=True, text=True,
                           timeout=60)
        if r.returncode != 0:
            failures += 1
            print(f"FAIL kustomize {d.relative_to(root)}: {r.stderr.strip()}")
            continue
        a = subprocess.run([*kube, "apply", "--dry-run=client", "--validate=false", "-f", "-"],
                           input=r.stdout, capture_output=True, text=True, timeout=60)
        if a.returncode != 0:
            failures += 1
            print(f"FAIL kustomize {d.relative_to(root)} | apply: {a.stderr.strip()}")
        else:
            print(f"ok   kustomize {d.relative_to(root)}: " +
                  "; ".join(a.stdout.strip().splitlines()))
    server.shutdown()
    if not manifests:
        print(f"no manifests under {root}")
        return 1
    print(f"k8s-dry-run: {len(manifests)} manifests, {failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
