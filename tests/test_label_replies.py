"""Structured replies: requests ask for the reply model's JSON schema (``response_format``), an API
that refuses it is asked without it, and a reply that breaks the schema is quarantined with its
reason, against the loopback OpenAI-compatible server (tests/openai_server.py); and the lenient
parsing and strict validation of a reply, and the Retry-After rules, without a server.

    .venv/bin/python -m pytest tests/test_label_replies.py
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
from labeling import KEY, PRICES, label, write_posts
from openai_replies import expected_score
from openai_server import FakeOpenAI

CAPTIONS = [f"a structured post {i}" for i in range(7)] + ["a post scored off the scale #wild"]


def run(folder, server, address):
    return label(
        str(folder),
        "--base-url",
        server.url,
        *PRICES,
        "--rps",
        "20",
        "--concurrency",
        "4",
        "--actors",
        "2",
        "--max-retries",
        "1",
        "--timeout",
        "10",
        "--backoff",
        "0.05",
        address=address,
    )


def outputs(folder):
    out, read = folder / "labeled", {"dtype": {"post_id": str}}
    return (
        pd.read_csv(out / "labels.csv", **read),
        pd.read_csv(out / "quarantine.csv", **read),
        json.loads((out / "ledger.json").read_text()),
    )


@pytest.fixture(scope="module")
def structured(tmp_path_factory, ray_address):
    folder = write_posts(tmp_path_factory.mktemp("structured"), CAPTIONS)
    with FakeOpenAI(key=KEY, latency=0.05, script={"#wild": ["out_of_range", "out_of_range"]}) as server:
        result = run(folder, server, ray_address)
        calls = list(server.calls)
    assert result.returncode == 0, result.stderr[-3000:]
    return (*outputs(folder), calls)


def test_requests_ask_for_the_reply_models_schema_and_replies_are_read_through_it(structured):
    labels, _quarantine, _ledger, calls = structured
    assert all(c["response_format"] for c in calls)
    assert {(c["response_format"]["type"], c["response_format"]["json_schema"]["strict"]) for c in calls} == {("json_schema", True)}
    from trainables.gender_bias.labeling import Reply

    schema = Reply.model_json_schema()
    assert schema["additionalProperties"] is False and schema["required"] == ["score", "reason"]
    assert all(c["response_format"]["json_schema"]["schema"] == schema for c in calls)
    assert len(labels) == 7 and (labels["prompt_version"] == "gender-bias-v2").all()
    for row in labels.itertuples():
        assert row.score == expected_score(row.caption) and row.reason == f"caption checksum {row.score:g}"


def test_a_structured_reply_out_of_range_is_quarantined_with_its_reason(structured):
    _labels, quarantine, ledger, calls = structured
    assert quarantine[["post_id", "reason", "attempts"]].values.tolist() == [["p7", "invalid_reply: score 42 out of range 0..10", 2]]
    wild = [c for c in calls if c["caption"].endswith("#wild")]
    assert [c["behaviour"] for c in wild] == ["out_of_range"] * 2 and all(c["response_format"] for c in wild)
    assert ledger["rows"]["quarantined_by_reason"] == {"invalid_reply": 1}


def test_an_api_refusing_response_format_is_asked_without_it_and_no_row_suffers(tmp_path, ray_address):
    captions = [f"a plain post {i}" for i in range(12)]
    folder = write_posts(tmp_path, captions)
    with FakeOpenAI(key=KEY, latency=0.05, refuse_format=True) as server:
        result = run(folder, server, ray_address)
        calls = list(server.calls)
    assert result.returncode == 0, result.stderr[-3000:]
    labels, quarantine, ledger = outputs(folder)
    refusals = [c for c in calls if c["behaviour"] == "format_refused"]
    # Each Labeler process learns it once (two actors), whatever the rows in flight.
    assert 1 <= len(refusals) <= 2 and all(c["response_format"] for c in refusals)
    answered = [c for c in calls if c["status"] == 200]
    assert sorted(c["caption"] for c in answered) == sorted(captions)
    assert not any(c["response_format"] for c in answered)
    assert len(calls) == len(answered) + len(refusals) and quarantine.empty
    assert sorted(labels["score"]) == sorted(expected_score(c) for c in captions)  # fenced replies too
    assert ledger["attempt_failures_by_kind"] == {"http_400": len(refusals)} and ledger["retries"] == 0
    from platform.label.reply import refused

    assert refused(400, "Invalid parameter: response_format") and not refused(400, "max_tokens is too large")


def test_replies_are_parsed_leniently_and_validated_strictly():
    from platform.label.labeler import RETRY_AFTER_CAP_S, retry_after, retry_after_cap
    from platform.label.reply import ReplyError
    from platform.label.task import load

    parse_reply = load("gender_bias").parse
    assert parse_reply('```json\n{"score": 7, "reason": "ok"}\n```') == (7.0, "ok")
    assert parse_reply('Sure! {"score": "3.5", "reason": " two\nlines "} Hope it helps.') == (3.5, "two lines")
    for bad in ("", "five", "[1, 2]", '{"score": 11, "reason": "x"}', '{"score": true, "reason": "x"}', '{"score": 4}', '{"reason": "x"}'):
        with pytest.raises(ReplyError):
            parse_reply(bad)
    assert retry_after({"retry-after": "2"}) == 2.0 and retry_after({"retry-after-ms": "250"}) == 0.25
    assert retry_after({}) == 0.0 and retry_after({"retry-after": "soon"}) == 0.0
    assert retry_after({"retry-after": "86400"}) == 86400  # the server's word; the pause is capped apart
    assert retry_after_cap(1) == 1 and retry_after_cap(3600) == RETRY_AFTER_CAP_S == 60
