"""
prom.py - a strict reader of the Prometheus text format (0.0.4) for the metrics tests: every
sample line must parse, label values are unescaped, and # TYPE lines are checked against the
samples that follow (a histogram's _bucket/_sum/_count, a counter's or gauge's bare name).
"""

import re

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{(.*)\}})? (\S+)$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(,|$)')


def _unescape(v):
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), v)


def _labels(text):
    out, pos = {}, 0
    while pos < len(text):
        m = _LABEL.match(text, pos)
        if not m:
            raise ValueError(f"bad label set at {text[pos:]!r}")
        if m.group(1) in out:
            raise ValueError(f"label {m.group(1)} twice in {text!r}")
        out[m.group(1)] = _unescape(m.group(2))
        pos = m.end()
    return out


class Metrics:
    def __init__(self, text):
        self.types = {}
        self.samples = []  # (name, labels dict, value)
        seen = set()
        for ln in text.splitlines():
            if not ln:
                continue
            if ln.startswith("# TYPE "):
                _, _, name, kind = ln.split(" ", 3)
                if name in self.types:
                    raise ValueError(f"TYPE of {name} twice")
                self.types[name] = kind
                continue
            if ln.startswith("#"):
                continue
            m = _SAMPLE.match(ln)
            if not m:
                raise ValueError(f"not a sample line: {ln!r}")
            name, labels, value = m.group(1), _labels(m.group(2) or ""), float(m.group(3))
            key = (name, tuple(sorted(labels.items())))
            if key in seen:
                raise ValueError(f"duplicate series {ln!r}")
            seen.add(key)
            fam = self.family(name)
            if fam is None:
                raise ValueError(f"sample {name} without a TYPE line")
            self.samples.append((name, labels, value))

    def family(self, name):
        if name in self.types:
            return name
        for suffix in ("_bucket", "_sum", "_count"):
            base = name[: -len(suffix)] if name.endswith(suffix) else None
            if base and self.types.get(base) == "histogram":
                return base
        return None

    def select(self, name, **labels):
        return [(lb, v) for n, lb, v in self.samples
                if n == name and all(lb.get(k) == str(x) for k, x in labels.items())]

    def sum(self, name, **labels):
        return sum(v for _, v in self.select(name, **labels))

    def names(self):
        return set(self.types)
