"""
What `meltemi validate` / `compile` / `run` may show of files and secrets (issue 13):
a LuaFilter scriptFile cannot read outside the configuration directory, and no password
appears in compile's snapshot, in validation errors, in the log or in a POST /reload body.
"""

import os

import pytest

import configs
from harness import VIP, free_port, run_meltemi

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
