"""Named weights download, against a real HTTP server on 127.0.0.1 (nothing leaves the host)."""

from __future__ import annotations

import hashlib
import http.server
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import xxhash

from napari_sam.model import download
from napari_sam.model.download import (
    BUNDLED,
    WEIGHTS,
    ChecksumError,
    DownloadError,
    NoPublishedHashError,
    WeightsError,
    WeightsInfo,
    WeightsUnavailableError,
    cache_dir,
    fetch_weights,
    file_sha256,
    file_xxh128,
    get_weights_info,
    is_cached,
    local_path,
)

BODY = os.urandom(3 * download.CHUNK_BYTES + 12345)  # a few chunks and a ragged end
BODY_HASH = hashlib.sha256(BODY).hexdigest()


@dataclass
class Server:
    """Routes: path -> (body, declared Content-Length or None for the true length)."""

    port: int
    routes: dict[str, tuple[bytes, int | None]] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def server() -> Iterator[Server]:
    """A threaded ``http.server`` on an ephemeral loopback port, stopped after the test."""
    state = Server(port=0)

    class Handler(http.server.BaseHTTPRequestHandler):
        timeout = 10  # a stuck client cannot hold a thread for long

        def do_GET(self) -> None:
            state.hits.append(self.path)
            if self.path not in state.routes:
                self.send_error(404, "no such file")
                return
            body, declared = state.routes[self.path]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) if declared is None else declared))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            self.close_connection = True  # a short body then ends the transfer

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    # Bounded: shut down whatever happens in the test, and at most after 120 s.
    watchdog = threading.Timer(120, httpd.shutdown)
    watchdog.daemon = True
    watchdog.start()
    try:
        yield state
    finally:
        watchdog.cancel()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _info(url: str, digest: str = BODY_HASH) -> WeightsInfo:
    return WeightsInfo("test_weights", "vit_b", url, digest, "weights.pth")


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if p.is_file())


def test_download_verifies_renames_and_reports_progress(server: Server, tmp_path: Path) -> None:
    server.routes["/w.pth"] = (BODY, None)
    calls: list[tuple[int, int]] = []
    path = fetch_weights(_info(server.url("/w.pth")), lambda d, t: calls.append((d, t)),
                         root=tmp_path)
    assert path == tmp_path / "weights" / "test_weights" / "weights.pth"
    assert path.read_bytes() == BODY
    assert _leftovers(tmp_path) == ["weights.pth", "weights.pth.verified"]
    assert calls[0] == (0, len(BODY)) and calls[-1] == (len(BODY), len(BODY))
    assert [d for d, _ in calls] == sorted(d for d, _ in calls) and len(calls) >= 4
    assert is_cached(_info(server.url("/w.pth")), tmp_path)


def test_marker_records_the_sha256(server: Server, tmp_path: Path) -> None:
    server.routes["/w.pth"] = (BODY, None)
    path = fetch_weights(_info(server.url("/w.pth")), root=tmp_path)
    digest, size, mtime_ns = (path.parent / "weights.pth.verified").read_text().split()
    assert digest == hashlib.sha256(BODY).hexdigest()
    assert (int(size), int(mtime_ns)) == (path.stat().st_size, path.stat().st_mtime_ns)


def test_a_file_whose_sha256_differs_is_refused_and_not_kept(
    server: Server, tmp_path: Path
) -> None:
    """Checked by SHA-256: neither a changed file nor a matching checksum (xxh128) passes."""
    tampered = BODY[:-1] + bytes([BODY[-1] ^ 1])
    server.routes["/w.pth"] = (tampered, None)
    info = _info(server.url("/w.pth"))
    with pytest.raises(ChecksumError, match="SHA-256") as err:
        fetch_weights(info, root=tmp_path)
    assert hashlib.sha256(tampered).hexdigest() in str(err.value)
    assert _leftovers(tmp_path) == [] and not is_cached(info, tmp_path)
    # An xxh128 in place of the SHA-256 is not accepted either: the file's own checksum.
    xxh = xxhash.xxh3_128(tampered).hexdigest()
    with pytest.raises(ChecksumError):
        fetch_weights(_info(server.url("/w.pth"), digest=xxh), root=tmp_path)
    assert _leftovers(tmp_path) == []


def test_old_xxh128_marker_makes_the_file_be_rehashed_with_sha256(
    server: Server, tmp_path: Path
) -> None:
    """A cached file with a marker an older napari-sam wrote (xxh128) is hashed again; a
    tampered one is deleted and downloaded afresh, never trusted."""
    server.routes["/w.pth"] = (BODY, None)
    info = _info(server.url("/w.pth"))
    path = local_path(info, tmp_path)
    path.parent.mkdir(parents=True)
    tampered = BODY[:-1] + bytes([BODY[-1] ^ 1])
    path.write_bytes(tampered)
    stat = path.stat()
    marker = path.parent / "weights.pth.verified"
    marker.write_text(f"{xxhash.xxh3_128(tampered).hexdigest()} {stat.st_size} "
                      f"{stat.st_mtime_ns}\n")
    assert not is_cached(info, tmp_path)
    assert fetch_weights(info, root=tmp_path).read_bytes() == BODY
    assert server.hits == ["/w.pth"]
    assert marker.read_text().split()[0] == BODY_HASH


def test_cached_file_is_not_downloaded_again(server: Server, tmp_path: Path) -> None:
    server.routes["/w.pth"] = (BODY, None)
    info = _info(server.url("/w.pth"))
    first = fetch_weights(info, root=tmp_path)
    assert fetch_weights(info, root=tmp_path) == first
    assert server.hits == ["/w.pth"]


def test_tampered_cache_file_is_detected_and_replaced(server: Server, tmp_path: Path) -> None:
    server.routes["/w.pth"] = (BODY, None)
    info = _info(server.url("/w.pth"))
    path = fetch_weights(info, root=tmp_path)
    path.write_bytes(BODY[:-1] + bytes([BODY[-1] ^ 1]))  # same size, new mtime
    assert not is_cached(info, tmp_path)
    assert fetch_weights(info, root=tmp_path).read_bytes() == BODY
    assert server.hits == ["/w.pth", "/w.pth"]


def test_file_copied_in_by_hand_is_hashed_once_then_trusted(
    server: Server, tmp_path: Path
) -> None:
    info = _info(server.url("/never-served.pth"))
    path = local_path(info, tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(BODY)
    assert not is_cached(info, tmp_path)  # no marker yet: not trusted on sight
    assert fetch_weights(info, root=tmp_path) == path
    assert is_cached(info, tmp_path) and server.hits == []


def test_wrong_hash_leaves_nothing_and_retries(server: Server, tmp_path: Path) -> None:
    server.routes["/w.pth"] = (BODY, None)
    info = _info(server.url("/w.pth"), digest="0" * 64)
    with pytest.raises(ChecksumError) as err:
        fetch_weights(info, root=tmp_path)
    message = str(err.value)
    assert server.url("/w.pth") in message and "0" * 64 in message and BODY_HASH in message
    assert _leftovers(tmp_path) == []
    with pytest.raises(ChecksumError):
        fetch_weights(info, root=tmp_path)
    assert server.hits == ["/w.pth", "/w.pth"]  # the bad file was not trusted later


def test_truncated_transfer_is_an_error_and_leaves_nothing(
    server: Server, tmp_path: Path
) -> None:
    server.routes["/w.pth"] = (BODY[:100_000], len(BODY))
    info = _info(server.url("/w.pth"))
    with pytest.raises(DownloadError, match=r"after 100000 of \d+ bytes") as err:
        fetch_weights(info, root=tmp_path)
    assert server.url("/w.pth") in str(err.value)
    assert _leftovers(tmp_path) == []
    server.routes["/w.pth"] = (BODY, None)  # the server recovers: a retry succeeds
    assert fetch_weights(info, root=tmp_path).read_bytes() == BODY


def test_server_down_is_a_download_error(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/w.pth"
    with pytest.raises(DownloadError, match="refused") as err:
        fetch_weights(_info(url), root=tmp_path)
    assert url in str(err.value) and isinstance(err.value, WeightsError)
    # what to do offline: the bundled model, a file of one's own, or the cache folder's path
    message = str(err.value)
    assert "use the bundled model ('bundled'" in message and "give a weights file" in message
    assert str(tmp_path) in message
    assert "weights_only" not in message and "pickle" not in message
    assert _leftovers(tmp_path) == []


def test_http_error_names_status(server: Server, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch_weights(_info(server.url("/missing.pth")), root=tmp_path)
    assert _leftovers(tmp_path) == []


def test_interrupted_download_leaves_no_trusted_file(server: Server, tmp_path: Path) -> None:
    server.routes["/w.pth"] = (BODY, None)

    def interrupt(done: int, total: int) -> None:
        if done > 0:
            raise KeyboardInterrupt

    info = _info(server.url("/w.pth"))
    with pytest.raises(KeyboardInterrupt):
        fetch_weights(info, interrupt, root=tmp_path)
    assert _leftovers(tmp_path) == [] and not is_cached(info, tmp_path)


def test_stale_partial_files_are_cleaned_up(server: Server, tmp_path: Path) -> None:
    server.routes["/w.pth"] = (BODY, None)
    info = _info(server.url("/w.pth"))
    folder = local_path(info, tmp_path).parent
    folder.mkdir(parents=True)
    stale, fresh = folder / ".weights.pth.old.part", folder / ".weights.pth.new.part"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"y")  # maybe another process's download in progress: kept
    os.utime(stale, (0, 0))
    fetch_weights(info, root=tmp_path)
    assert not stale.exists() and fresh.exists()


def test_cache_dir_honours_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NAPARI_SAM_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    assert local_path(WEIGHTS["vit_b_lm"]) == tmp_path / "c/weights/vit_b_lm/vit_b.pt"
    monkeypatch.delenv("NAPARI_SAM_CACHE")
    assert "napari-sam" in str(cache_dir())


def test_registry_holds_the_published_weights() -> None:
    assert set(WEIGHTS) == {
        BUNDLED, "vit_b", "vit_l", "vit_h", "vit_t", "vit_b_lm", "vit_l_lm", "vit_t_lm",
        "vit_b_em_organelles", "vit_l_em_organelles", "vit_t_em_organelles",
    }
    for info in WEIGHTS.values():
        if info.bundled:
            assert info.url is None
            continue
        assert info.url.startswith("https://") and info.url.endswith(info.filename)
        assert info.sha256 is None or (len(info.sha256) == 64 and int(info.sha256, 16) >= 0)
        assert info.architecture in {"vit_b", "vit_l", "vit_h", "vit_t"}
        assert info.name.startswith(info.architecture)
    # The published SHA-256 of Meta's and MobileSAM's files.
    assert WEIGHTS["vit_h"].sha256 == (
        "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e")
    assert WEIGHTS["vit_t"].sha256 == (
        "6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f")
    assert all(WEIGHTS[n].sha256 for n in ("vit_b", "vit_l", "vit_h", "vit_t"))
    assert len({local_path(i) for i in WEIGHTS.values()}) == len(WEIGHTS)  # no clashes
    with pytest.raises(KeyError, match="known: bundled, vit_b"):
        get_weights_info("vit_x")


def test_missing_bundled_weights_are_a_clear_error(tmp_path: Path) -> None:
    info = replace(WEIGHTS[BUNDLED], filename="not_shipped.pt")
    with pytest.raises(WeightsUnavailableError, match=r"not_shipped\.pt is missing"):
        fetch_weights(info, root=tmp_path)
    assert not is_cached(info)
    expected = BUNDLED if is_cached(WEIGHTS[BUNDLED]) else download.FALLBACK_DEFAULT
    assert download.default_weights() == expected


def test_tqdm_progress_counts_bytes(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.routes["/w.pth"] = (BODY, None)
    fetch_weights(_info(server.url("/w.pth")), download.tqdm_progress("w"), root=tmp_path)
    assert "w: 100%" in capsys.readouterr().err


def test_file_hashes_match_one_shot_hashes(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(BODY)
    assert file_sha256(tmp_path / "f", chunk=4096) == BODY_HASH
    assert file_xxh128(tmp_path / "f", chunk=4096) == xxhash.xxh3_128(BODY).hexdigest()


def test_weights_without_a_published_sha256_are_not_downloaded(
    server: Server, tmp_path: Path
) -> None:
    server.routes["/w.pth"] = (BODY, None)
    info = _info(server.url("/w.pth"), digest=None)
    with pytest.raises(NoPublishedHashError) as err:
        fetch_weights(info, root=tmp_path)
    message = str(err.value)
    assert "no published SHA-256" in message and server.url("/w.pth") in message
    assert "give its path" in message and str(local_path(info, tmp_path)) in message
    assert "sha256=" in message
    assert server.hits == [] and _leftovers(tmp_path) == []
    assert isinstance(err.value, download.WeightsUnavailableError)

    # A SHA-256 the user trusts: downloaded and checked against it (a wrong one refused).
    with pytest.raises(ChecksumError):
        fetch_weights(info, root=tmp_path, sha256="1" * 64)
    with pytest.raises(ValueError, match="64 hexadecimal"):
        fetch_weights(info, root=tmp_path, sha256="1234")
    path = fetch_weights(info, root=tmp_path, sha256=BODY_HASH.upper())
    assert path.read_bytes() == BODY and server.hits == ["/w.pth", "/w.pth"]

    # The file put in the cache folder by the user is used as they gave it.
    other = tmp_path / "other"
    mine = local_path(info, other)
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"my own copy")
    assert is_cached(info, other) and fetch_weights(info, root=other) == mine
    assert len(server.hits) == 2


def test_registry_entries_without_sha256_refuse_and_the_rest_do_not(tmp_path: Path) -> None:
    unknown = [n for n, i in WEIGHTS.items() if i.url and i.sha256 is None]
    assert "vit_b_lm" in unknown
    for name in unknown:
        with pytest.raises(NoPublishedHashError, match=name):
            fetch_weights(name, root=tmp_path)
    assert _leftovers(tmp_path) == []


def test_info_lists_weights_cache_state_and_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from napari_sam.cli import main

    source = tmp_path / "source.pth"
    source.write_bytes(BODY)
    info = replace(_info(source.as_uri()), name="test_cached", description="for the test")
    monkeypatch.setitem(WEIGHTS, info.name, info)
    monkeypatch.setenv("NAPARI_SAM_CACHE", str(tmp_path / "cache"))
    fetch_weights(info)  # file:// URLs go through the same code path
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"cache: {tmp_path / 'cache' / 'weights'}" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert "cached" in lines["test_cached"].split() and "for the test" in lines["test_cached"]
    assert "download" in lines["vit_h"] and "2.56 GB" in lines["vit_h"]
    assert set(WEIGHTS) <= set(lines)


def test_the_fallback_default_is_one_we_can_verify_and_the_listing_says_which_are_not():
    """Without the bundled file the default must be a download we can check; weights with
    no published SHA-256 are listed as files to bring, not as downloads."""
    fallback = WEIGHTS[download.FALLBACK_DEFAULT]
    assert fallback.url and fallback.sha256
    unverifiable = [i for i in WEIGHTS.values() if not i.bundled and i.sha256 is None]
    assert unverifiable  # the micro-sam models today
    for info in unverifiable:
        if not download.is_cached(info):
            assert "no published SHA-256" in download.availability(info)
    assert download.availability(WEIGHTS["vit_b"]).startswith(("download", "cached"))
