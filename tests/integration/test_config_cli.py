"""
The command line and the configuration errors a user sees: `meltemi validate`, `meltemi
compile`, `meltemi run` on a bad directory, usage errors. Exit codes: 0 ok, 1 invalid
configuration, 2 usage error. Every problem is reported as `file:line: Kind/name: field: msg`.
"""

import os
import re
import socket
import subprocess

import pytest

import configs
from harness import REPO, VIP, free_port, meltemi_bin, run_meltemi

pytestmark = pytest.mark.usefixtures("meltemi_binary")

SE = configs.service_entry("redis-single", VIP, 6379, 6390)


def blog_dir(config_dir, extra=None):
    files = {"redis-single.yaml": configs.BLOG_STEP1, "redis-service.yaml": configs.BLOG_STEP2,
             "service-entry.yaml": SE}
    files.update(extra or {})
    return config_dir(files)


def problem_lines(output, filename):
    """Lines of the form '<...>filename:LINE: ...' -> [(line, text)]."""
    found = []
    for ln in output.splitlines():
        m = re.search(r"(?:^|/)" + re.escape(filename) + r":(\d+): (.*)$", ln)
        if m:
            found.append((int(m.group(1)), m.group(2)))
    return found


def line_of(text, needle, occurrence=1):
    """1-based line number of the occurrence-th line containing needle."""
    n = 0
    for i, ln in enumerate(text.splitlines(), 1):
        if needle in ln:
            n += 1
            if n == occurrence:
                return i
    raise AssertionError(f"{needle!r} not in text")


# --- the command line ---------------------------------------------------------------------

def test_version_and_help():
    v = run_meltemi("--version")
    assert v.returncode == 0 and re.match(r"meltemi \d+\.\d+\.\d+", v.stdout), v
    h = run_meltemi("--help")
    assert h.returncode == 0
    for word in ("run -c DIR", "validate [DIR]", "compile [DIR]", "meltemi run --help"):
        assert word in h.stdout
    # Every option of run is listed with its environment variable.
    r = run_meltemi("run", "--help")
    assert r.returncode == 0, r
    for flag, env in (("--config", "MELTEMI_CONFIG"), ("--admin", "MELTEMI_ADMIN"),
                      ("--admin-token-file", "MELTEMI_ADMIN_TOKEN_FILE"),
                      ("--workers", "MELTEMI_WORKERS"), ("--log-level", "MELTEMI_LOG_LEVEL"),
                      ("--drain-timeout", "MELTEMI_DRAIN_TIMEOUT"),
                      ("--capture-outbound", "MELTEMI_CAPTURE_OUTBOUND"),
                      ("--capture-inbound", "MELTEMI_CAPTURE_INBOUND")):
        assert re.search(rf"{flag} \S+  \[{env}\]", r.stdout), (flag, r.stdout)
    for cmd in ("validate", "compile"):
        r = run_meltemi(cmd, "--help")
        assert r.returncode == 0 and f"usage: meltemi {cmd} [DIR]" in r.stdout, r


def test_run_options_from_the_environment_flag_wins(tmp_path):
    env = {**os.environ, "MELTEMI_LOG_LEVEL": "loud"}
    r = subprocess.run([str(meltemi_bin()), "run", "-c", str(tmp_path)], env=env,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "MELTEMI_LOG_LEVEL: unknown log level 'loud'" in r.stderr, r
    # The flag replaces the variable, whose bad value is then not read: the run fails on the
    # missing directory (exit 1), not on usage (exit 2).
    r = subprocess.run([str(meltemi_bin()), "run", "-c", str(tmp_path / "missing"),
                        "--log-level", "error"], env=env, capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 1, r
    env = {**os.environ, "MELTEMI_WORKERS": "many"}
    r = subprocess.run([str(meltemi_bin()), "run", "-c", "."], env=env, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 2 and "MELTEMI_WORKERS needs a number" in r.stderr, r
    # validate takes its directory from MELTEMI_CONFIG too.
    env = {**os.environ, "MELTEMI_CONFIG": str(REPO / "examples" / "redis-demo")}
    r = subprocess.run([str(meltemi_bin()), "validate"], env=env, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.startswith("ok: "), r


@pytest.mark.parametrize("args", [
    [], ["run"], ["run", "-c"], ["frobnicate"], ["validate"], ["compile", "a", "b"],
    ["run", "-c", ".", "--workers", "many"], ["run", "-c", ".", "--log-level", "loud"],
    ["run", "-c", ".", "--bogus"],
])
def test_usage_errors_exit_2(args):
    r = run_meltemi(*args)
    assert r.returncode == 2, (args, r.returncode, r.stderr)
    assert r.stderr.strip(), "a usage error says what is wrong"


# --- valid configuration --------------------------------------------------------------------

def test_validate_blog_yaml_ok_with_newline_warning(config_dir):
    r = run_meltemi("validate", blog_dir(config_dir))
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    # dGVzdHJlZGlzCg== is "testredis\n": the trailing newline is almost always a mistake.
    warn = [t for _, t in problem_lines(out, "redis-single.yaml")]
    assert any("Secret/redis-service-secret" in t and "newline" in t.lower() for t in warn), out
    assert "testredis" not in out, "validate must not print a secret"


def test_validate_accepts_multi_document_files_and_ignores_other_files(config_dir):
    multi = "---\n" + configs.BLOG_STEP1 + "---\n---\n" + configs.BLOG_STEP2 + "---\n" + SE
    d = config_dir({"all-in-one.yml": multi, "README.txt": "not: [yaml"})
    r = run_meltemi("validate", d)
    assert r.returncode == 0, r.stdout + r.stderr


def test_compile_prints_the_snapshot(config_dir):
    r = run_meltemi("compile", blog_dir(config_dir))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "127.0.0.10:6379" in out  # the listener: the ServiceEntry's address and port
    assert "outbound|6379||redis-single.redis.svc.cluster.local" in out  # its cluster
    assert "6390" in out  # the endpoint port, mapped by port name
    assert re.search(r"protocol\s*=\s*\"redis\"", out)


# --- invalid configuration: one problem per case --------------------------------------------

DEST_MISSING_SECRET = """\
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
            name: no-such-secret
"""

SERVICE_UNKNOWN_FIELD = """\
apiVersion: redis.aeraki.io/v1alpha1
kind: RedisService
metadata:
  name: redis-single
  namespace: redis
spec:
  host:
  - redis-single.redis.svc.cluster.local
  settings:
    opTimeout: 1s
    bogusField: 3
"""

DEST_BAD_ENUM = """\
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
        mode: SOMETIMES
"""

SE_WRONG_TYPE = SE.replace("number: 6379", "number: not-a-port")

SERVICE_MISSING_HOST = """\
apiVersion: redis.aeraki.io/v1alpha1
kind: RedisService
metadata:
  name: redis-single
  namespace: redis
spec:
  settings:
    opTimeout: 1s
"""

UNKNOWN_KIND = """\
apiVersion: example.com/v1
kind: Frobnicator
metadata:
  name: frob
spec: {}
"""

SECRET_BAD_BASE64 = """\
apiVersion: v1
kind: Secret
metadata:
  name: redis-service-secret
  namespace: redis
type: Opaque
data:
  password: "!!not base64!!"
"""

YAML_SYNTAX = """\
apiVersion: v1
kind: Secret
metadata:
  name: broken
data: {password: [unclosed
"""

# (file name, text, "Kind/name" expected or None, needle on the offending line, words the
#  message must contain)
CASES = [
    ("dest.yaml", DEST_MISSING_SECRET, "RedisDestination/redis-single", "no-such-secret",
     ["no-such-secret"]),
    ("svc.yaml", SERVICE_UNKNOWN_FIELD, "RedisService/redis-single", "bogusField",
     ["bogusField"]),
    ("dest.yaml", DEST_BAD_ENUM, "RedisDestination/redis-single", "SOMETIMES", ["mode"]),
    ("service-entry.yaml", SE_WRONG_TYPE, "ServiceEntry/redis-single", "not-a-port",
     ["number"]),
    ("svc.yaml", SERVICE_MISSING_HOST, "RedisService/redis-single", "opTimeout", ["host"]),
    ("frob.yaml", UNKNOWN_KIND, None, "kind: Frobnicator", ["Frobnicator"]),
    ("secret.yaml", SECRET_BAD_BASE64, "Secret/redis-service-secret", "password:",
     ["password"]),
    ("broken.yaml", YAML_SYNTAX, None, None, []),
]


@pytest.mark.parametrize("fname,text,who,needle,words", CASES,
                         ids=[c[0] + ":" + (c[2] or c[3] or "syntax") for c in CASES])
def test_validate_reports_file_line_kind_name(config_dir, fname, text, who, needle, words):
    files = {"service-entry.yaml": SE}
    files[fname] = text
    d = config_dir(files)
    r = run_meltemi("validate", d)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    problems = problem_lines(out, fname)
    assert problems, f"no '{fname}:LINE:' message in:\n{out}"
    if who:
        problems = [(n, t) for n, t in problems if t.startswith(who + ": ")]
        assert problems, f"no '{fname}:LINE: {who}: ' message in:\n{out}"
    for w in words:
        assert any(w in t for _, t in problems), f"{w!r} not in {problems}"
    if needle:
        # The line points into the offending document, at or before the offending field.
        doc_start, bad = 1, line_of(text, needle)
        assert any(doc_start <= n <= bad for n, _ in problems), (bad, problems)


def test_validate_reports_every_problem_at_once(config_dir):
    d = config_dir({"service-entry.yaml": SE, "a.yaml": DEST_BAD_ENUM,
                    "b.yaml": SERVICE_UNKNOWN_FIELD, "c.yaml": UNKNOWN_KIND})
    r = run_meltemi("validate", d)
    out = r.stdout + r.stderr
    assert r.returncode == 1
    for f in ("a.yaml", "b.yaml", "c.yaml"):
        assert problem_lines(out, f), f"{f} missing from:\n{out}"


def test_two_services_on_one_address_and_port(config_dir):
    one = configs.service_entry("one", VIP, 7001, 6390, host="one.redis.svc.cluster.local")
    two = configs.service_entry("two", VIP, 7001, 6391, host="two.redis.svc.cluster.local")
    d = config_dir({"one.yaml": one, "two.yaml": two})
    r = run_meltemi("validate", d)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    problems = problem_lines(out, "one.yaml") + problem_lines(out, "two.yaml")
    assert any("ServiceEntry/" in t and "7001" in t for _, t in problems), out


def test_validate_second_document_line_numbers(config_dir):
    # Line numbers count from the top of the file, not of the document.
    text = configs.BLOG_STEP1 + "---\n" + DEST_BAD_ENUM.replace("name: redis-single",
                                                                "name: other", 1)
    d = config_dir({"service-entry.yaml": SE, "multi.yaml": text})
    r = run_meltemi("validate", d)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    second_doc = line_of(text, "kind: RedisDestination", occurrence=2) - 1
    bad = line_of(text, "SOMETIMES")
    problems = [(n, t) for n, t in problem_lines(out, "multi.yaml")
                if t.startswith("RedisDestination/other")]
    assert problems and all(second_doc <= n <= bad for n, _ in problems), (problems, out)


def test_validate_missing_directory():
    r = run_meltemi("validate", "/nonexistent/meltemi-config")
    assert r.returncode != 0
    assert "/nonexistent/meltemi-config" in r.stdout + r.stderr


def test_run_on_invalid_config_exits_1_and_binds_nothing(config_dir, tmp_path):
    port = free_port(VIP)
    se = configs.service_entry("redis-single", VIP, port, 6390)
    d = config_dir({"service-entry.yaml": se, "dest.yaml": DEST_MISSING_SECRET})
    admin = free_port()
    try:
        r = subprocess.run([str(meltemi_bin()), "run", "-c", str(d), "--admin",
                            f"127.0.0.1:{admin}", "--workers", "1"],
                           capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("meltemi run kept running on an invalid configuration")
    assert r.returncode == 1, r.stderr
    assert problem_lines(r.stdout + r.stderr, "dest.yaml"), r.stderr
    with socket.socket() as s:
        s.bind((VIP, port))  # nothing kept the listener port


def test_shipped_kubernetes_config_validates_without_a_warning():
    # deploy/kubernetes/sidecar-overlay/meltemi-config becomes the sidecar's ConfigMap.
    r = run_meltemi("validate", REPO / "deploy" / "kubernetes" / "sidecar-overlay" / "meltemi-config")
    assert r.returncode == 0 and r.stdout.startswith("ok: "), r
    assert r.stderr == "", r.stderr
