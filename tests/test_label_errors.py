"""``python -m platform.label`` refusing what it cannot do, with one ``error:`` line and nothing written:
images outside the source folder, no key, a rejected key, an unreachable server; and the dry run,
which needs neither a key nor a call. Against the loopback OpenAI-compatible server.

    .venv/bin/python -m pytest tests/test_label_errors.py
"""

from __future__ import annotations

from helpers import last_line
from labeling import KEY, PRICES, assert_key_nowhere, label, write_posts
from openai_server import FakeOpenAI


def test_an_image_path_outside_the_source_folder_is_refused_unless_allowed(tmp_path):
    folder = tmp_path / "posts"
    elsewhere = write_posts(tmp_path / "elsewhere", ["private one", "private two"])
    extra = [
        ("inside", str(folder / "images" / "p1.jpg"), "an absolute path inside the folder"),
        ("out", "../elsewhere/images/p0.jpg", "private one"),
        ("out2", str(elsewhere / "images" / "p1.jpg"), "private two"),
    ]
    write_posts(folder, ["a post", "another post"], extra)
    with FakeOpenAI(key=KEY) as server:
        refused = label(str(folder), "--base-url", server.url, *PRICES)
        assert server.call_count == 0
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert last_line(refused.stderr) == (
        f"error: {folder / 'posts.csv'}: post_id out: image_path '../elsewhere/images/p0.jpg' is outside {folder} "
        "(and 1 more rows); pass --allow-outside-images to send images from elsewhere to the API"
    )
    assert not (folder / "labeled").exists()
    allowed = label(str(folder), "--base-url", server.url, *PRICES, "--allow-outside-images", "--dry-run", key=None)
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    assert "would send 5 requests" in allowed.stdout and "0 quarantined before any request" in allowed.stdout


def test_dry_run_estimates_without_a_key_or_a_call(tmp_path):
    folder = write_posts(tmp_path, [f"estimated post {i}" for i in range(5)], [("gone", "images/x.jpg", "no image")])
    with FakeOpenAI(key=KEY) as server:
        result = label(str(folder), "--base-url", server.url, "--dry-run", "--progress", "on", key=None)
        assert server.call_count == 0
    assert result.returncode == 0, result.stderr
    assert "would send 5 requests" in result.stdout and "cost (estimate): ~$" in result.stdout
    assert "missing_image 1" in result.stdout and not (folder / "labeled").exists()
    assert "[label] scanning images: 100%" in result.stdout + result.stderr  # --progress on: the scan's bar


def test_an_image_path_holding_a_nul_byte_is_quarantined_not_a_traceback(tmp_path):
    folder = write_posts(tmp_path, ["a post"], [("nul", "images/p0\x00.jpg", "a path no file can have")])
    with FakeOpenAI(key=KEY) as server:
        result = label(str(folder), "--base-url", server.url, "--dry-run", key=None)
        assert server.call_count == 0
    assert result.returncode == 0, result.stderr[-3000:]
    assert "would send 1 requests" in result.stdout and "missing_image 1" in result.stdout


def test_a_missing_key_is_one_error_line(tmp_path):
    folder = write_posts(tmp_path, ["a post"])
    result = label(str(folder), key=None)
    assert result.returncode == 2 and last_line(result.stderr).startswith("error: no API key: set OPENROUTER_API_KEY")


def test_a_rejected_key_aborts_with_one_error_line(tmp_path, ray_address):
    folder = write_posts(tmp_path, [f"post {i}" for i in range(8)])
    with FakeOpenAI(key="the-right-key") as server:
        result = label(str(folder), "--base-url", server.url, *PRICES, "--concurrency", "2", address=ray_address)
        assert 1 <= server.call_count <= 2 + 2  # in flight when the first 401 came
    assert result.returncode == 2
    assert (
        last_line(result.stderr) == f"error: the API at {server.url} rejected the key (HTTP 401): "
        "check OPENROUTER_API_KEY or OPENAI_API_KEY"
    )
    assert not (folder / "labeled" / "labels.csv").exists()
    assert_key_nowhere(folder, result.stdout, result.stderr)


def test_an_unreachable_server_aborts_with_one_error_line(tmp_path, ray_address):
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/v1"
    folder = write_posts(tmp_path, ["a post", "another post"])
    result = label(str(folder), "--base-url", url, *PRICES, "--max-retries", "1", "--backoff", "0.01", address=ray_address)
    assert result.returncode == 2
    assert last_line(result.stderr).startswith(f"error: cannot reach the API at {url} (")
    assert not (folder / "labeled" / "labels.csv").exists()
