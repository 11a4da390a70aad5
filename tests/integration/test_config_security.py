"""
What `meltemi validate` / `compile` / `run` may show of files and secrets (issue 13):
a LuaFilter scriptFile cannot read outside the configuration directory, and no password
appears in compile's snapshot, in validation errors, in the log or in a POST /reload body.
"""

import base64
import os
import urllib.error
import urllib.request

import pytest
import redis

import configs
from harness import VIP, RespConn, free_port, redis_py, run_meltemi

pytestmark = pytest.mark.usefixtures("meltemi_binary")

SE = configs.service_entry("redis-single", VIP, 6379, 6390)


def lua_filter(script_file):
    return f"""\
apiVersion: meltemi.io/v1alpha1
kind: LuaFilter
metadata:
  name: leak
  namespace: redis
spec:
  hosts: [redis-single]
  scriptFile: "{script_file}"
"""


def passwd_words():
    """Distinctive pieces of /etc/passwd that a leaking error would quote."""
    text = open("/etc/passwd").read()
    first = text.splitlines()[0]
    return [first, first.split(":")[0] + ":", "/bin/", "nologin"]


def assert_no_passwd_content(output):
    for w in passwd_words():
        assert w not in output, f"{w!r} of /etc/passwd is in the output:\n{output}"


@pytest.mark.parametrize("path", ["../../../../../../../../etc/passwd", "/etc/passwd"])
def test_validate_refuses_a_script_file_outside_the_config_dir(config_dir, path):
    conf = config_dir({"se.yaml": SE, "filter.yaml": lua_filter(path)})
    p = run_meltemi("validate", conf)
    out = p.stdout + p.stderr
    assert p.returncode == 1, out
    assert "LuaFilter/leak: spec.scriptFile:" in out
    assert "outside the configuration directory" in out
    assert_no_passwd_content(out)


def test_validate_refuses_a_symlink_that_leads_out(config_dir):
    conf = config_dir({"se.yaml": SE, "filter.yaml": lua_filter("innocent.lua")})
    os.symlink("/etc/passwd", conf / "innocent.lua")
    p = run_meltemi("validate", conf)
    out = p.stdout + p.stderr
    assert p.returncode == 1, out
    assert "spec.scriptFile:" in out and "outside the configuration directory" in out
    assert_no_passwd_content(out)


def test_validate_accepts_a_script_file_inside_the_config_dir(config_dir):
    conf = config_dir({"se.yaml": SE, "filter.yaml": lua_filter("filters/ok.lua")})
    (conf / "filters").mkdir()
    (conf / "filters" / "ok.lua").write_text("return { on_request = function(msg, ctx) end }\n")
    p = run_meltemi("validate", conf)
    assert p.returncode == 0, p.stdout + p.stderr


# --- secrets ---------------------------------------------------------------------------------

def test_compile_prints_no_password(config_dir):
    conf = config_dir({"redis-single.yaml": configs.BLOG_STEP1,
                       "redis-service.yaml": configs.BLOG_STEP2, "service-entry.yaml": SE})
    p = run_meltemi("compile", conf)
    assert p.returncode == 0, p.stderr
    out = p.stdout + p.stderr
    for secret in ("testredis", "dGVzdHJlZGlz"):  # also covers testredis123!
        assert secret not in out, f"{secret!r} printed by meltemi compile"
    assert 'password = "<redacted>"' in out
    assert "127.0.0.10:6379" in out, "the rest of the snapshot is still printed"


NUMERIC_PASSWORD = "90817263"
SERVICE_NUMERIC_PASSWORD = configs.BLOG_STEP2.replace("password: testredis123!",
                                                      f"password: {NUMERIC_PASSWORD}")
SECRET_NUMERIC = f"""\
apiVersion: v1
kind: Secret
metadata:
  name: numeric
  namespace: redis
stringData:
  password: {NUMERIC_PASSWORD}1
data:
  token: {NUMERIC_PASSWORD}2
"""


def test_a_numeric_password_is_not_echoed_by_validate(config_dir):
    conf = config_dir({"redis-single.yaml": configs.STEP1, "service-entry.yaml": SE,
                       "redis-service.yaml": SERVICE_NUMERIC_PASSWORD,
                       "secret.yaml": SECRET_NUMERIC})
    p = run_meltemi("validate", conf)
    out = p.stdout + p.stderr
    assert p.returncode == 1, out
    assert "spec.settings.auth.plain.password: expected a string, got a number" in out, out
    assert "stringData.password: expected a string, got a number" in out, out
    assert "data.token: expected a string, got a number" in out, out
    assert "redacted" in out
    assert NUMERIC_PASSWORD not in out, out


def test_a_numeric_password_is_not_in_the_log_or_the_reload_answer(blog_env):
    env = blog_env(step=2)
    (env.conf / "redis-service.yaml").write_text(SERVICE_NUMERIC_PASSWORD)
    (env.conf / "secret.yaml").write_text(SECRET_NUMERIC)
    status, body = env.meltemi.http_get("/ready")
    assert status == 200
    req = urllib.request.Request(f"http://{env.meltemi.admin}/reload", method="POST", data=b"")
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            status, body = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read().decode()
    assert status == 400, body
    assert "spec.settings.auth.plain.password: expected a string" in body
    assert NUMERIC_PASSWORD not in body, body
    dump_status, dump = env.meltemi.http_get("/config_dump")
    assert dump_status == 200 and "last_reload_error" in dump
    assert NUMERIC_PASSWORD not in dump
    assert env.meltemi.terminate() == 0
    log = env.meltemi.output()
    assert "reload" in log and "rejected" in log
    assert NUMERIC_PASSWORD not in log, log


NUL_PASSWORD = b"pre\x00post-7a1c"


def nul_password_env(blog_env):
    secret = base64.b64encode(NUL_PASSWORD).decode()
    files = {"redis-single.yaml": configs.STEP1, "client-secret.yaml": f"""\
apiVersion: v1
kind: Secret
metadata:
  name: client-secret
  namespace: redis
data:
  password: {secret}
""", "redis-service.yaml": """\
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
      secret:
        name: client-secret
"""}
    return blog_env(files=files)


def test_a_client_password_with_a_nul_byte_is_compared_whole(blog_env):
    env = nul_password_env(blog_env)
    c = RespConn(env.host, env.port)
    try:
        prefix = NUL_PASSWORD.split(b"\x00")[0]
        assert c.call("AUTH", prefix) == "ERR invalid password", "the part before NUL is not it"
        assert c.call("AUTH", prefix + b"\x00") == "ERR invalid password"
        assert c.call("GET", "k") == "NOAUTH Authentication required."
        assert c.call("AUTH", NUL_PASSWORD) == b"OK"
        assert c.call("SET", "k", "v") == b"OK"
    finally:
        c.close()
    r = redis_py(env.host, env.port, password=NUL_PASSWORD)
    try:
        assert r.get("k") == b"v", "redis-py with the whole password"
    finally:
        r.close()
    r = redis_py(env.host, env.port, password=NUL_PASSWORD.split(b"\x00")[0])
    try:
        with pytest.raises(redis.exceptions.AuthenticationError):
            r.get("k")
    finally:
        r.close()


def test_an_upstream_password_with_a_nul_byte_is_sent_whole(redis_factory, config_dir,
                                                            meltemi_factory):
    upstream = b"up\x00stream-93b2"
    srv = redis_factory(password="bootstrap")
    admin = RespConn(srv.host, srv.port)
    try:
        assert admin.call("AUTH", "bootstrap") == b"OK"
        assert admin.call("CONFIG", "SET", "requirepass", upstream) == b"OK"
    finally:
        admin.close()
    port = free_port(VIP)
    secret = configs.STEP1.replace("dGVzdHJlZGlz", base64.b64encode(upstream).decode())
    conf = config_dir({"redis-single.yaml": secret,
                       "service-entry.yaml": configs.service_entry("redis-single", VIP, port,
                                                                   srv.port)})
    meltemi_factory(conf)
    c = RespConn(VIP, port)
    try:
        # Truncated at the NUL, meltemi's AUTH would be refused and so would this command.
        assert c.call("SET", "nul", "ok") == b"OK"
    finally:
        c.close()
    check = RespConn(srv.host, srv.port)
    try:
        assert check.call("AUTH", upstream) == b"OK"
        assert check.call("GET", "nul") == b"ok"
    finally:
        check.close()
