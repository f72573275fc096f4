"""`capid map` end to end as real processes (docs/CLI.md, SPEC 8, 9): the
--explain format on the seed example, stdout/stderr split, one line per input
line and destination, bad lines, line numbers, several files, stdin, BOM, CRLF,
exit status 2 for bad configurations and unreadable files, --now and the
deterministic event id."""
import json
import os
import subprocess

import lib

NOW = 1764000000
TS_MS = 1763996400000
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0 Safari/537.36"
ENV = {"CAPID_TEST_TOKEN": "test-token-not-a-secret"}


def event(name="page_view", eid="ev-1", ts=TS_MS, **extra):
    e = {"event_name": name,
         "context": {"event_timestamp": ts, "page": {"url": "https://shop.example/p"},
                     "device": {"ip": "203.0.113.7", "user_agent": UA}},
         "user": {"email": "Jane.Doe@Example.com"}}
    if eid is not None:
        e["context"]["event_id"] = eid
    if ts is None:
        del e["context"]["event_timestamp"]
    e.update(extra)
    return e


def line(obj):
    return json.dumps(obj, separators=(",", ":"))


def write(path, data):
    with open(path, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    return path


def config(d, dests=None, text=None):
    """Writes a YAML config with the given destinations (dicts of settings)."""
    if text is None:
        dests = dests or [{"name": "main"}]
        out = ["# capid map integration test", "destinations:"]
        for x in dests:
            x = dict(x)
            out.append(f"  - name: {x.pop('name')}")
            out.append('    pixel_id: "1234567890"')
            out.append("    access_token_env: CAPID_TEST_TOKEN")
            for k, v in x.items():
                out.append(f"    {k}: {json.dumps(v)}")
        text = "\n".join(out) + "\n"
    return write(os.path.join(d, "capid.yaml"), text)


def capid_map(args, stdin=b"", timeout=30):
    env = dict(os.environ)
    env.update(ENV)
    p = subprocess.run([lib.CAPID, "map"] + list(args), input=stdin, capture_output=True,
                       timeout=timeout, env=env)
    return p.returncode, p.stdout.decode("utf-8"), p.stderr.decode("utf-8", "replace")


def jlines(text):
    """Parses JSON lines; every non-empty line must be one JSON object."""
    out = []
    for ln in text.splitlines():
        assert ln.strip(), f"blank output line in {text!r}"
        v = json.loads(ln)
        assert isinstance(v, dict), ln
        out.append(v)
    return out


def keys_in_order(text_line):
    return [k for k, _ in json.loads(text_line, object_pairs_hook=lambda kv: kv)]


def test_explain_seed_example_is_first_mapping_vector():
    with open(os.path.join(lib.SHARED, "vectors", "mapping.json")) as f:
        first = json.load(f)[0]
    d = lib.tmpdir()
    cfg = config(d, [dict({"name": "seed"}, **first["settings"])])
    inp = write(os.path.join(d, "seed.ndjson"), json.dumps(first["input"]) + "\n")
    rc, out, err = capid_map(["--config", cfg, "--explain", "--now", str(first["now"]), inp])
    assert rc == 0, err
    got = jlines(out)
    assert got == [{"line": 1, "destination": "seed", "event": first["expect"]}], out
    assert keys_in_order(out.splitlines()[0]) == ["line", "destination", "event"]
    # the bundled example of the repository is the same event
    rc, out2, err = capid_map(["--config", cfg, "--explain", "--now", str(first["now"]),
                               os.path.join(lib.ROOT, "examples", "seed-event.ndjson")])
    assert rc == 0, err
    assert jlines(out2) == got


def test_without_explain_events_on_stdout_skips_on_stderr():
    d = lib.tmpdir()
    cfg = config(d)
    inp = "\n".join([line(event()),
                     line(event(user={})),          # only ip + ua: insufficient
                     "{not json",
                     line(event("purchase", eid="ev-2", value=5, currency="eur"))]) + "\n"
    rc, out, err = capid_map(["--config", cfg, "--now", str(NOW)], inp.encode())
    assert rc == 0, err
    events = jlines(out)
    assert [e["event_name"] for e in events] == ["PageView", "Purchase"], out
    assert [e["event_id"] for e in events] == ["ev-1", "ev-2"]
    assert "line" not in events[0] and "destination" not in events[0], "bare CAPI events"
    assert events[1]["custom_data"] == {"value": 5, "currency": "EUR"}
    skips = jlines(err)
    assert [(s["line"], s["destination"], s["skipped"]) for s in skips] == [
        (2, "main", "insufficient_match_keys"), (3, "main", "invalid_json")], err
    for s, text in zip(skips, err.splitlines()):
        assert set(s) == {"line", "destination", "skipped", "detail"}, s
        assert isinstance(s["detail"], str) and s["detail"], s
        assert keys_in_order(text) == ["line", "destination", "skipped", "detail"]


def test_explain_puts_every_outcome_on_stdout():
    d = lib.tmpdir()
    cfg = config(d)
    inp = line(event()) + "\n" + line(event(user={})) + "\n[1]\n"
    rc, out, err = capid_map(["--config", cfg, "--explain", "--now", str(NOW)], inp.encode())
    assert rc == 0, err
    got = jlines(out)
    assert [(g["line"], "event" in g, g.get("skipped")) for g in got] == [
        (1, True, None), (2, False, "insufficient_match_keys"), (3, False, "invalid_event")], out
    assert all(set(g) == {"line", "destination", "skipped", "detail"} for g in got[1:])
    assert not jlines(err), f"nothing expected on stderr with --explain: {err!r}"


def test_one_line_per_input_line_per_destination_and_filter():
    d = lib.tmpdir()
    cfg = config(d, [{"name": "open"}, {"name": "strict", "consent_category": "9"}])
    inp = "\n".join([line(event()), "not json",
                     line(event(eid="ev-2", user={"email": "a@b.co",
                                                  "consent_categories": [9]}))]) + "\n"
    rc, out, err = capid_map(["--config", cfg, "--explain", "--now", str(NOW)], inp.encode())
    assert rc == 0, err
    got = jlines(out)
    assert len(got) == 6, out
    outcome = {(g["line"], g["destination"]): g.get("skipped", "sent") for g in got}
    assert outcome == {(1, "open"): "sent", (1, "strict"): "no_consent",
                       (2, "open"): "invalid_json", (2, "strict"): "invalid_json",
                       (3, "open"): "sent", (3, "strict"): "sent"}, out
    assert [g["line"] for g in got] == sorted(g["line"] for g in got), "input order kept"

    rc, out, err = capid_map(["--config", cfg, "--explain", "--now", str(NOW),
                              "--destination", "strict"], inp.encode())
    assert rc == 0, err
    got = jlines(out)
    assert [(g["line"], g["destination"], g.get("skipped", "sent")) for g in got] == [
        (1, "strict", "no_consent"), (2, "strict", "invalid_json"), (3, "strict", "sent")], out

    # without --explain: the two destinations split over stdout and stderr
    rc, out, err = capid_map(["--config", cfg, "--now", str(NOW)], inp.encode())
    assert rc == 0, err
    assert [e["event_id"] for e in jlines(out)] == ["ev-1", "ev-2", "ev-2"], out
    assert sorted((s["line"], s["destination"]) for s in jlines(err)) == [
        (1, "strict"), (2, "open"), (2, "strict")], err


def test_bad_lines_are_reported_and_processing_goes_on():
    d = lib.tmpdir()
    cfg = config(d)
    ok = line(event())
    lines = [
        (b"this is not json", "invalid_json"),
        (b'[{"event_name":"page_view"}]', "invalid_event"),
        (ok[:40].encode(), "invalid_json"),                      # truncated
        (b'{"event_name":""}', "invalid_event"),
        (b'{"user":{"email":"a@b.co"}}', "invalid_event"),       # no event_name
        (b'{"event_name":"a","x":1,"x":2}', "invalid_event"),    # duplicate key
        (b'{"event_name":"page_view","note":"caf\xe9"}', "invalid_json"),  # Latin-1 byte
        (b'{"event_name":"page_view","note":"a\x00b"}', "invalid_json"),    # raw NUL
        (b'{"event_name":"page_view","context":{"event_timestamp":"soon"}}', "invalid_event"),
        (b'"just a string"', "invalid_event"),
        (b'{"event_name":"page_view","d":' + b'[' * 40 + b']' * 40 + b'}', "invalid_json"),
        (b'{"event_name":"page_view","blob":"' + b"x" * 33000 + b'"}', "too_large"),
        (b'{"event_name":"page_view","blob":"' + b"x" * (2 << 20) + b'"}', "too_large"),
        (ok.encode(), None),
    ]
    data = b"\n".join(x for x, _ in lines) + b"\n"
    rc, out, err = capid_map(["--config", cfg, "--explain", "--now", str(NOW)], data)
    assert rc == 0, err
    got = jlines(out)
    assert [(g["line"], g.get("skipped")) for g in got] == [
        (i + 1, want) for i, (_, want) in enumerate(lines)], out
    assert got[-1]["event"]["event_id"] == "ev-1"


def test_line_numbers_count_from_one_and_include_blank_lines():
    d = lib.tmpdir()
    cfg = config(d)
    inp = "\n".join(["", line(event(eid="a")), "   ", "\t", line(event(eid="b")), "",
                     "nope"])  # no final newline
    rc, out, err = capid_map(["--config", cfg, "--explain", "--now", str(NOW)], inp.encode())
    assert rc == 0, err
    got = jlines(out)
    assert [(g["line"], g.get("event", {}).get("event_id"), g.get("skipped")) for g in got] == [
        (2, "a", None), (5, "b", None), (7, None, "invalid_json")], out


def test_several_files_add_file_and_restart_line_numbers():
    d = lib.tmpdir()
    cfg = config(d)
    f1 = write(os.path.join(d, "one.ndjson"), line(event(eid="1a")) + "\n" + "{bad\n")
    f2 = write(os.path.join(d, "two.ndjson"), "\n" + line(event(eid="2b")) + "\n")
    rc, out, err = capid_map(["--config", cfg, "--explain", "--now", str(NOW), f1, f2])
    assert rc == 0, err
    got = jlines(out)
    assert [(g["file"], g["line"], g.get("skipped", "sent")) for g in got] == [
        (f1, 1, "sent"), (f1, 2, "invalid_json"), (f2, 2, "sent")], out
    for text in out.splitlines():
        assert keys_in_order(text)[:3] == ["line", "file", "destination"], text
    # without --explain the skip lines on stderr carry the file too
    rc, out, err = capid_map(["--config", cfg, "--now", str(NOW), f1, f2])
    assert rc == 0, err
    assert [e["event_id"] for e in jlines(out)] == ["1a", "2b"]
    assert [(s["file"], s["line"], s["skipped"]) for s in jlines(err)] == [
        (f1, 2, "invalid_json")], err
    # one file: no "file" key
    rc, out, err = capid_map(["--config", cfg, "--explain", "--now", str(NOW), f1])
    assert rc == 0, err
    assert all("file" not in g for g in jlines(out)), out


def test_stdin_and_dash():
    d = lib.tmpdir()
    cfg = config(d)
    inp = (line(event(eid="s1")) + "\n" + "[]\n").encode()
    f = write(os.path.join(d, "in.ndjson"), inp)
    results = []
    for extra in ([], ["-"], [f]):
        rc, out, err = capid_map(["--config", cfg, "--explain", "--now", str(NOW)] + extra,
                                 inp if extra != [f] else b"")
        assert rc == 0, err
        results.append(jlines(out))
    assert results[0] == results[1] == results[2], results
    assert [(g["line"], g.get("skipped", "sent")) for g in results[0]] == [
        (1, "sent"), (2, "invalid_event")]


def test_bom_on_first_line_is_ignored():
    d = lib.tmpdir()
    cfg = config(d)
    inp = b"\xef\xbb\xbf" + (line(event(eid="bom")) + "\n" + line(event(eid="two"))).encode()
    rc, out, err = capid_map(["--config", cfg, "--explain", "--now", str(NOW)], inp)
    assert rc == 0, err
    got = jlines(out)
    assert [(g["line"], g.get("event", {}).get("event_id")) for g in got] == [
        (1, "bom"), (2, "two")], out
    f = write(os.path.join(d, "bom.ndjson"), inp)
    rc, out2, err = capid_map(["--config", cfg, "--explain", "--now", str(NOW), f])
    assert rc == 0, err
    assert jlines(out2) == got
    # the BOM of each file's first line, with several files
    f2 = write(os.path.join(d, "bom2.ndjson"), b"\xef\xbb\xbf" + line(event(eid="f2")).encode())
    rc, out3, err = capid_map(["--config", cfg, "--explain", "--now", str(NOW), f, f2])
    assert rc == 0, err
    assert [(g["file"], g["line"], g.get("event", {}).get("event_id")) for g in jlines(out3)] == [
        (f, 1, "bom"), (f, 2, "two"), (f2, 1, "f2")], out3


def test_crlf_line_endings():
    d = lib.tmpdir()
    cfg = config(d)
    inp = (line(event(eid="c1")) + "\r\n\r\n" + "oops\r\n" + line(event(eid="c2")) + "\r\n").encode()
    rc, out, err = capid_map(["--config", cfg, "--explain", "--now", str(NOW)], inp)
    assert rc == 0, err
    got = jlines(out)
    assert [(g["line"], g.get("event", {}).get("event_id"), g.get("skipped")) for g in got] == [
        (1, "c1", None), (3, None, "invalid_json"), (4, "c2", None)], out
    # the CR is not part of any value
    assert got[0]["event"]["user_data"]["client_user_agent"] == UA


def _exit2(args, must_name, stdin=b""):
    rc, out, err = capid_map(args, stdin)
    assert rc == 2, (rc, out, err)
    assert out == "", f"nothing on stdout expected: {out!r}"
    assert err.strip(), "a message on stderr"
    for s in must_name:
        assert s in err, f"{s!r} not in the message: {err!r}"
    return err


def test_exit2_missing_config_option():
    err = _exit2([], ["--config"], line(event()).encode())
    assert "config" in err


def test_exit2_unreadable_config():
    d = lib.tmpdir()
    missing = os.path.join(d, "nope.yaml")
    _exit2(["--config", missing], [missing], line(event()).encode())
    _exit2(["--config", d], [d], line(event()).encode())   # a directory


def test_exit2_yaml_errors_name_file_and_line():
    d = lib.tmpdir()
    # unknown key on line 5
    cfg = config(d, text='destinations:\n  - name: main\n    pixel_id: "1"\n'
                         '    access_token_env: CAPID_TEST_TOKEN\n    colour: blue\n')
    err = _exit2(["--config", cfg], [cfg, "colour", "5"], line(event()).encode())
    # YAML syntax error on line 4 (unclosed flow sequence / bad indentation)
    cfg = config(d, text='destinations:\n  - name: main\n    pixel_id: "1"\n'
                         '    access_token_env: [CAPID_TEST_TOKEN\n')
    err = _exit2(["--config", cfg], [cfg], line(event()).encode())
    assert any(n in err for n in ("4", "5")), err
    # bad value: content_type not among the choices, line 5
    cfg = config(d, text='destinations:\n  - name: main\n    pixel_id: "1"\n'
                         '    access_token_env: CAPID_TEST_TOKEN\n    content_type: sku\n')
    err = _exit2(["--config", cfg], [cfg, "content_type", "5"], line(event()).encode())
    assert "product_group" in err, f"valid choices listed: {err!r}"


def test_exit2_unknown_destination():
    d = lib.tmpdir()
    cfg = config(d, [{"name": "main"}])
    _exit2(["--config", cfg, "--destination", "elsewhere"], ["elsewhere"],
           line(event()).encode())


def test_exit2_unreadable_input_file_before_any_output():
    d = lib.tmpdir()
    cfg = config(d)
    good = write(os.path.join(d, "good.ndjson"), line(event()) + "\n")
    missing = os.path.join(d, "missing.ndjson")
    _exit2(["--config", cfg, "--explain", "--now", str(NOW), good, missing], [missing])
    _exit2(["--config", cfg, "--now", str(NOW), missing], [missing])


def test_exit2_directory_as_input_file():
    """A directory opens but cannot be read: CLI.md's 'unreadable file'."""
    d = lib.tmpdir()
    cfg = config(d)
    good = write(os.path.join(d, "good.ndjson"), line(event()) + "\n")
    sub = os.path.join(d, "subdir")
    os.mkdir(sub)
    _exit2(["--config", cfg, "--now", str(NOW), sub], [sub])
    _exit2(["--config", cfg, "--now", str(NOW), good, sub], [sub])


def test_exit0_when_everything_is_skipped():
    d = lib.tmpdir()
    cfg = config(d)
    rc, out, err = capid_map(["--config", cfg, "--now", str(NOW)], b"x\n[]\n{}\n")
    assert rc == 0, err
    assert out == ""
    assert [s["skipped"] for s in jlines(err)] == ["invalid_json", "invalid_event",
                                                   "invalid_event"]
    rc, out, err = capid_map(["--config", cfg, "--now", str(NOW)], b"")
    assert (rc, out) == (0, ""), err


def test_now_drives_the_age_gates():
    d = lib.tmpdir()
    cfg = config(d)
    inp = (line(event()) + "\n").encode()

    def outcome(now):
        args = ["--config", cfg, "--explain"] + (["--now", str(now)] if now else [])
        rc, out, err = capid_map(args, inp)
        assert rc == 0, err
        (g,) = jlines(out)
        return g.get("skipped", "sent")

    assert outcome(NOW) == "sent"
    assert outcome(TS_MS // 1000 + 7 * 86400) == "sent"
    assert outcome(TS_MS // 1000 + 7 * 86400 + 1) == "event_too_old"
    assert outcome(TS_MS // 1000 - 600) == "sent"
    assert outcome(TS_MS // 1000 - 601) == "event_in_future"
    assert outcome(None) == "event_too_old", "wall clock: this 2025 event is old"
    # an event without a timestamp takes --now as its time
    rc, out, err = capid_map(["--config", cfg, "--explain", "--now", "1800000000"],
                             (line(event(ts=None)) + "\n").encode())
    assert jlines(out)[0]["event"]["event_time"] == 1800000000, out


def test_deterministic_id_is_stable_across_runs_and_key_orders():
    d = lib.tmpdir()
    cfg = config(d, [{"name": "a"}, {"name": "b"}])
    e = event(eid=None, value=3, tag="x")
    reordered = {"tag": "x", "user": e["user"], "value": 3,
                 "context": dict(reversed(list(e["context"].items()))),
                 "event_name": "page_view"}
    assert list(reordered) != list(e) and reordered == e
    spaced = json.dumps(e, indent=None, separators=(" , ", " : "))
    inp = "\n".join([line(e), line(reordered), spaced, line(e)]) + "\n"

    def ids(now):
        rc, out, err = capid_map(["--config", cfg, "--explain", "--now", str(now)],
                                 inp.encode())
        assert rc == 0, err
        return [g["event"]["event_id"] for g in jlines(out)]

    first = ids(NOW)
    assert len(first) == 8 and len(set(first)) == 1, first
    assert len(first[0]) == 64 and all(c in "0123456789abcdef" for c in first[0]), first[0]
    assert ids(NOW + 60) == first, "same id in another run with another clock"
    # another event gets another id
    other = dict(e, tag="y")
    rc, out, err = capid_map(["--config", cfg, "--explain", "--now", str(NOW),
                              "--destination", "a"], (line(other) + "\n").encode())
    assert jlines(out)[0]["event"]["event_id"] != first[0]
    # without a timestamp, the id does not depend on the clock
    nots = line(event(eid=None, ts=None)) + "\n"
    got = set()
    for now in (NOW, NOW + 3600):
        rc, out, err = capid_map(["--config", cfg, "--explain", "--now", str(now),
                                  "--destination", "a"], nots.encode())
        got.add(jlines(out)[0]["event"]["event_id"])
    assert len(got) == 1, got


def test_deterministic_id_ignores_number_and_string_spelling():
    d = lib.tmpdir()
    cfg = config(d)
    base = ('{"event_name":"page_view","value":%s,"note":"%s","context":{"event_timestamp":%s,'
            '"page":{"url":"https://shop.example/p"},"device":{"ip":"203.0.113.7",'
            '"user_agent":"%s"}},"user":{"email":"a@b.co"}}')
    variants = [base % ("1", "caf\u00e9 a/b", "1763996400000", UA),
                base % ("1.0", "caf\\u00e9 a\\/b", "1763996400000", UA),
                base % ("1e0", "caf\\u00E9 a/b", "1.7639964e12", UA)]
    assert all(json.loads(v) == json.loads(variants[0]) for v in variants), "same JSON value"
    rc, out, err = capid_map(["--config", cfg, "--explain", "--now", str(NOW)],
                             ("\n".join(variants) + "\n").encode())
    assert rc == 0, err
    ids = [g["event"]["event_id"] for g in jlines(out)]
    assert len(ids) == 3 and len(set(ids)) == 1, ids
