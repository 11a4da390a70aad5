"""
The blog's first two Redis steps end to end: upstream AUTH done by meltemi from a Secret
(RedisDestination), then a client password of its own (RedisService), with redis-cli and
redis-py against a redis-server that has requirepass set.
"""

import base64
import re
import threading

import pytest
import redis

import configs
from harness import RespConn, RespError, cli_lines, redis_cli, redis_py


def test_upstream_really_requires_a_password(redis_factory):
    # Without meltemi the blog's first transcript: the server refuses an unauthenticated client.
    srv = redis_factory(password=configs.UPSTREAM_PASSWORD)
    out = redis_cli(srv.host, srv.port, "set", "a", "a")
    assert cli_lines(out) == ["NOAUTH Authentication required."]


def test_step1_blog_yaml_verbatim(blog_env):
    # The blog's Secret is "testredis\n"; as in the blog's cluster, the server was given the
    # same bytes. meltemi must send them unchanged.
    env = blog_env(files={"redis-single.yaml": configs.BLOG_STEP1},
                   redis_password=configs.BLOG_SECRET_PASSWORD)
    out = redis_cli(env.host, env.port, "set", "foo", "bar")
    assert cli_lines(out) == ["OK"], out.stderr
    assert env.redis.client().get("foo") == b"bar"


def test_step1_set_foo_bar_without_client_password(blog_env):
    env = blog_env(step=1)
    out = redis_cli(env.host, env.port, "set", "foo", "bar")
    assert cli_lines(out) == ["OK"], out.stderr
    # It reached the real server, which meltemi authenticated to with the Secret's password.
    assert env.redis.client().get("foo") == b"bar"


def test_step1_secret_string_data(blog_env):
    files = {
        "secret.yaml": configs.secret_string_data("redis-service-secret",
                                                  configs.UPSTREAM_PASSWORD),
        "dest.yaml": configs.STEP1.split("---\n", 1)[1],
    }
    env = blog_env(files=files)
    assert cli_lines(redis_cli(env.host, env.port, "set", "k", "v")) == ["OK"]
    assert cli_lines(redis_cli(env.host, env.port, "get", "k")) == ["v"]


def test_step1_secret_with_username_and_password_fields(blog_env, redis_factory):
    # An ACL user upstream: meltemi must send AUTH <user> <pass>, with the fields the
    # RedisDestination names instead of the default `username` / `password`.
    user, password = "app", "app-pass-42"
    secret = f"""\
apiVersion: v1
kind: Secret
metadata:
  name: app-creds
  namespace: redis
type: Opaque
data:
  login: {base64.b64encode(user.encode()).decode()}
  pw: {base64.b64encode(password.encode()).decode()}
"""
    dest = """\
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
            name: app-creds
            usernameField: login
            passwordField: pw
"""
    env = blog_env(files={"secret.yaml": secret, "dest.yaml": dest})
    admin = env.redis.client()
    assert admin.execute_command("ACL", "SETUSER", user, "on", f">{password}", "~*", "+@all")
    assert cli_lines(redis_cli(env.host, env.port, "set", "acl", "yes")) == ["OK"]
    who = cli_lines(redis_cli(env.host, env.port, "acl", "whoami"))
    assert who == [user]


def test_step2_blog_transcript(blog_env):
    env = blog_env(step=2)
    env.redis.client().set("foo", "bar")
    out = redis_cli(env.host, env.port,
                    stdin="AUTH testredis\nAUTH testredis123!\nget foo\n")
    assert cli_lines(out) == ["ERR invalid password", "OK", "bar"], out.stderr


def test_step2_noauth_before_auth(blog_env):
    env = blog_env(step=2)
    out = redis_cli(env.host, env.port, "get", "foo")
    assert cli_lines(out) == ["NOAUTH Authentication required."]
    # The upstream saw nothing: a refused command is not forwarded.
    assert env.redis.client().get("foo") is None


def test_step2_unknown_command_answered_before_auth(blog_env):
    # Redis itself answers an unknown command before checking auth; clients rely on it.
    env = blog_env(step=2)
    c = RespConn(env.host, env.port)
    reply = c.call("NOSUCHCMD", "x")
    assert isinstance(reply, RespError)
    assert reply.startswith("ERR unknown command 'NOSUCHCMD'")
    assert c.call("GET", "foo") == RespError("NOAUTH Authentication required.")
    c.close()


def test_step2_auth_is_per_connection(blog_env):
    env = blog_env(step=2)
    a = RespConn(env.host, env.port)
    b = RespConn(env.host, env.port)
    assert a.call("AUTH", configs.CLIENT_PASSWORD) == b"OK"
    assert a.call("SET", "x", "1") == b"OK"
    assert b.call("GET", "x") == RespError("NOAUTH Authentication required.")
    a.close()
    b.close()


def test_step2_the_upstream_password_is_not_the_client_password(blog_env):
    env = blog_env(step=2)
    c = RespConn(env.host, env.port)
    reply = c.call("AUTH", configs.UPSTREAM_PASSWORD)
    assert reply == RespError("ERR invalid password")
    assert c.call("AUTH", configs.CLIENT_PASSWORD) == b"OK"
    c.close()


def test_step2_redis_py(blog_env, redis_client):
    env = blog_env(step=2)
    good = redis_client(env.host, env.port, password=configs.CLIENT_PASSWORD)
    assert good.set("foo", "bar") is True
    assert good.get("foo") == b"bar"
    # redis-py maps NOAUTH, "ERR invalid password" and WRONGPASS to AuthenticationError and
    # strips the error code from the message.
    with pytest.raises(redis.exceptions.AuthenticationError) as ei:
        redis_client(env.host, env.port).get("foo")
    assert "Authentication required" in str(ei.value)
    with pytest.raises(redis.exceptions.AuthenticationError) as ei:
        redis_client(env.host, env.port, password="wrong").get("foo")
    assert re.search(r"invalid password|invalid username-password", str(ei.value))


def test_step2_redis_py_pipeline_1000_in_order(blog_env, redis_client):
    env = blog_env(step=2)
    r = redis_client(env.host, env.port, password=configs.CLIENT_PASSWORD)
    p = r.pipeline(transaction=False)
    for i in range(1000):
        p.set(f"k{i}", f"v{i}")
    assert p.execute() == [True] * 1000
    p = r.pipeline(transaction=False)
    for i in range(1000):
        p.get(f"k{i}")
        p.incr("counter")
    replies = p.execute()
    assert replies[0::2] == [f"v{i}".encode() for i in range(1000)]
    assert replies[1::2] == list(range(1, 1001))


def test_wrong_upstream_password_is_a_clear_error_not_a_hang(blog_env):
    wrong = "not-the-password-7f3a"
    env = blog_env(files={"dest.yaml": configs.redis_destination_plain(wrong)})
    c = RespConn(env.host, env.port, timeout=15)  # > connect timeout: a hang fails here
    for _ in range(2):  # the second request must not hang either
        reply = c.call("SET", "foo", "bar")
        assert isinstance(reply, RespError), reply
    c.close()
    assert env.redis.client().get("foo") is None
    log = env.meltemi.output()
    assert re.search(r"auth|password", log, re.I), "the log must say the upstream AUTH failed"
    assert wrong not in log, "a password appeared in the log"


def test_redis_py_through_step1_with_many_clients(blog_env):
    # Many client connections share few upstream connections: every INCR must be counted once.
    env = blog_env(step=1, workers=2)
    errors = []

    def worker():
        try:
            r = redis_py(env.host, env.port)
            for _ in range(200):
                r.incr("shared")
            r.close()
        except Exception as exc:  # reported below; a thread must not die silently
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "client threads hung"
    assert not errors, errors[:3]
    assert env.redis.client().get("shared") == b"4000"
