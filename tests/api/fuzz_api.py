#!/usr/bin/python3
"""Property-based fuzzer of the REST API (python3-hypothesis), against a live
server: requests over every route with random methods, paths, query strings,
headers and bodies (deep, long, invalid UTF-8 JSON among them). Properties:
no answer is a 5xx, every error answer has a JSON body, the server never
stops answering and never hangs (each request has a time limit, and the
server must answer /status/ after every example).

Usage: fuzz_api.py --url http://127.0.0.1:PORT [--seconds 60] [--seed N]
The run is bounded in time: a phase with a fixed seed, then one with a
random seed (printed, so a failure can be replayed with --seed).
"""
import argparse
import json
import os
import random
import socket
import sys
import tempfile
import time
import urllib.parse

# Hypothesis keeps a cache (unicode data) in ./.hypothesis: not in the checkout.
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY",
                      os.path.join(tempfile.gettempdir(), "taskmill-hypothesis"))

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

ROOT = "/pulp/api/v3/"
UUID = "00000000-0000-4000-8000-000000000000"
ROUTES = [
    ROOT + "tasks/",
    ROOT + "tasks/purge/",
    ROOT + "tasks/{id}/",
    ROOT + "workers/",
    ROOT + "workers/{id}/",
    ROOT + "task-groups/",
    ROOT + "task-groups/{id}/",
    ROOT + "status/",
    "/metrics",
    "/api/pulp/test/tasks/",
    "/",
    "/pulp/api/v3",
]
METHODS = ["GET", "POST", "PATCH", "PUT", "DELETE", "OPTIONS", "HEAD", "TRACE", "BREW"]
PARAMS = ["state", "state__in", "name", "name__contains", "limit", "offset", "ordering",
          "fields", "exclude_fields", "minimal", "pulp_created__gte", "task_group",
          "reserved_resources", "worker", "online", "timeout", "x"]
FIELDS = ["name", "args", "kwargs", "exclusive_resources", "shared_resources", "immediate",
          "deferred", "task_group", "state", "description", "finished_before", "states"]
FUNCTIONS = ["taskmill.noop", "taskmill.echo", "taskmill.fail", "no.such", ""]


class Failure(AssertionError):
    pass


def raw_bytes():
    return st.binary(max_size=64)


def text_or_bytes():
    return st.one_of(st.text(max_size=40), raw_bytes().map(lambda b: b.decode("latin-1")),
                     st.sampled_from([UUID, "..", "%00", "%FF%FE", "\u2603", "a" * 3000]))


def json_values():
    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                        st.text(max_size=30))
    return st.recursive(scalars, lambda c: st.one_of(st.lists(c, max_size=4),
                                                      st.dictionaries(st.text(max_size=8), c,
                                                                      max_size=4)),
                        max_leaves=20)


@st.composite
def bodies(draw):
    kind = draw(st.sampled_from(["none", "object", "dispatch", "deep", "long", "badutf8",
                                 "garbage", "wide"]))
    if kind == "none":
        return None
    if kind == "object":
        keys = draw(st.lists(st.sampled_from(FIELDS), max_size=4, unique=True))
        return json.dumps({k: draw(json_values()) for k in keys}).encode()
    if kind == "dispatch":
        body = {"name": draw(st.sampled_from(FUNCTIONS))}
        if draw(st.booleans()):
            body["args"] = draw(st.lists(json_values(), max_size=3))
        if draw(st.booleans()):
            body["kwargs"] = draw(st.dictionaries(st.text(max_size=5), json_values(), max_size=3))
        if draw(st.booleans()):
            body["exclusive_resources"] = draw(st.lists(st.text(max_size=10), max_size=3))
        if draw(st.booleans()):
            body["task_group"] = draw(st.sampled_from([UUID, "x" * 40000, "/a/" + UUID + "/"]))
        # Immediate tasks would run here; the fuzzer sticks to deferred ones.
        return json.dumps(body).encode()
    if kind == "deep":
        n = draw(st.sampled_from([65, 1000, 30000, 60000]))
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
        inner = opener * n + ("1" if opener != "[" else "") + closer * n
        return ('{"name": "taskmill.echo", "args": [' + inner + "]}").encode()
    if kind == "long":
        n = draw(st.sampled_from([70000, 300000]))
        return json.dumps({"name": "taskmill.echo", "args": ["y" * n]}).encode()
    if kind == "badutf8":
        return b'{"name": "taskmill.echo", "args": ["' + draw(raw_bytes()) + b'\xff\xfe"]}'
    if kind == "wide":
        return json.dumps({"name": "taskmill.echo", "args": list(range(20000))}).encode()
    return draw(raw_bytes())


@st.composite
def requests(draw):
    route = draw(st.sampled_from(ROUTES))
    route = route.replace("{id}", draw(st.one_of(st.just(UUID), text_or_bytes())))
    if draw(st.booleans()):
        route += draw(text_or_bytes())
    path = urllib.parse.quote(route.encode("latin-1", "replace"), safe="/%")
    params = draw(st.lists(st.tuples(st.one_of(st.sampled_from(PARAMS), text_or_bytes()),
                                     text_or_bytes()), max_size=4))
    if params:
        path += "?" + "&".join(urllib.parse.quote(k.encode("latin-1", "replace"), safe="%")
                               + "=" + urllib.parse.quote(v.encode("latin-1", "replace"), safe="%")
                               for k, v in params)
    headers = {}
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(["Range", "Host", "Authorization", "Content-Type",
                                     "Correlation-ID", "Accept", "X-Junk", "Expect"]))
        value = draw(st.one_of(st.sampled_from(["bytes=0-5", "evil.example", "Bearer x",
                                                "basic Og==", "application/x-www-form-urlencoded",
                                                "100-continue", "a" * 5000]),
                               st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126),
                                       max_size=30)))
        headers[name] = value
    return draw(st.sampled_from(METHODS)), path, headers, draw(bodies())


def exchange(host, port, method, path, headers, body, timeout=30):
    """One request on a new connection; returns (status, headers dict, body bytes)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
    for k, v in headers.items():
        if k == "Host":
            lines[1] = f"Host: {v}"
        else:
            lines.append(f"{k}: {v}")
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")
    with socket.create_connection((host, port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered early (413, 431); read what it said
        chunks = []
        deadline = time.monotonic() + timeout
        while True:
            if time.monotonic() > deadline:
                raise Failure(f"no complete answer within {timeout} s: {method} {path[:200]}")
            try:
                c = s.recv(65536)
            except ConnectionResetError:
                break
            if not c:
                break
            chunks.append(c)
    raw = b"".join(chunks)
    while raw.startswith(b"HTTP/1.1 100 "):  # an interim answer to Expect: 100-continue
        raw = raw.partition(b"\r\n\r\n")[2]
    head, _, rest = raw.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 "):
        raise Failure(f"no HTTP answer to {method} {path[:200]}: {raw[:200]!r}")
    status = int(head[9:12])
    hdrs = {}
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        hdrs[k.strip().lower().decode("latin-1")] = v.strip().decode("latin-1")
    return status, hdrs, rest


def check(host, port, req):
    method, path, headers, body = req
    status, hdrs, content = exchange(host, port, method, path, headers, body)
    if status >= 500:
        raise Failure(f"{status} for {method} {path[:200]} {headers} body {str(body)[:200]}: "
                      f"{content[:300]!r}")
    if any(k.startswith("exception") for k in hdrs):
        raise Failure(f"internal exception header for {method} {path[:200]}: {hdrs}")
    if status >= 400 and method != "HEAD":
        try:
            j = json.loads(content)
        except ValueError:
            raise Failure(f"{status} without a JSON body for {method} {path[:200]}: "
                          f"{content[:300]!r}")
        if not isinstance(j, dict) or "detail" not in j:
            raise Failure(f"{status} body is not {{'detail': ...}}: {content[:300]!r}")
    # The server is still there and answers.
    s2, _, _ = exchange(host, port, "GET", ROOT + "status/", {}, None, timeout=30)
    if s2 != 200:
        raise Failure(f"/status/ answered {s2} after {method} {path[:200]}")


def run_phase(host, port, the_seed, seconds):
    """Batches of examples, each batch seeded from `the_seed` and its number
    (so a seed replays the same requests), until `seconds` have passed."""
    start = time.monotonic()
    count = [0]
    batch = 0
    while time.monotonic() - start < seconds:
        @seed(the_seed * 100003 + batch)
        @settings(max_examples=20, deadline=None, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(requests())
        def prop(req):
            count[0] += 1
            check(host, port, req)

        prop()
        batch += 1
    return count[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--seed", type=int, default=None, help="replay one seed only")
    a = ap.parse_args()
    u = urllib.parse.urlparse(a.url)
    host, port = u.hostname, u.port
    if a.seed is not None:
        phases = [(a.seed, a.seconds)]
    else:
        random_seed = random.SystemRandom().randrange(2**32)
        phases = [(20261201, a.seconds / 2), (random_seed, a.seconds / 2)]
    for the_seed, secs in phases:
        print(f"fuzz_api: seed {the_seed} for {secs:.0f} s (replay: --seed {the_seed})",
              flush=True)
        try:
            n = run_phase(host, port, the_seed, secs)
        except Failure as e:
            print(f"fuzz_api: FAILED with seed {the_seed}: {e}", flush=True)
            return 1
        print(f"fuzz_api: seed {the_seed}: {n} requests, every property held", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
