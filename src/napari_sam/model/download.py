"""Named SAM weights: the registry, the cache directory, and download with a hash check.

A :class:`WeightsInfo` names one published file (URL + the SHA-256 of its bytes, as its
publisher or others who checked it published it). The first :func:`fetch_weights` streams
it into a temporary file beside its final place in the cache, hashing while writing; only a
file whose SHA-256 matches the table is renamed into place (``os.replace``, atomic on one
filesystem). A half-written, interrupted, corrupted or tampered file never gets the final
name, so it is never trusted, and the next call simply downloads again. SHA-256, not a fast
checksum such as xxh128: a checksum catches corruption, but anyone who can change the file
on the server can also make a checksum match; a SHA-256 they cannot.

An entry whose SHA-256 nobody has published (``sha256=None``, the micro-sam models today,
which publish only xxh128) is not downloaded: :class:`NoPublishedHashError` says how to
supply the file (a path of one's own, or the file put in the cache folder) or to pass a
SHA-256 one trusts (``fetch_weights(name, sha256=...)``).

Re-checking a cached file: hashing a 2.5 GB file on every start costs seconds, so after a
verification a small marker ``<file>.verified`` records ``sha256 size mtime_ns``. A cached
file is trusted without re-hashing only when the marker names the hash the table expects
*and* the file's size and modification time are the ones recorded; anything else (no
marker: a file the user copied in by hand; a marker from an older table or an older
napari-sam that recorded xxh128; a file rewritten since) triggers a full re-hash, and a file
that fails it is deleted and downloaded again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.client
import os
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import xxhash

#: ``progress(done_bytes, total_bytes)``; ``total_bytes`` is 0 when the server does not say.
ProgressCallback = Callable[[int, int], None]

CACHE_ENV = "NAPARI_SAM_CACHE"
CHUNK_BYTES = 1 << 20
TIMEOUT_S = 60.0
_STALE_PART_S = 24 * 3600.0
_BUNDLED_DIR = Path(__file__).resolve().parents[1] / "weights"


class WeightsError(RuntimeError):
    """Base class: named weights could not be provided or a weights file is unusable."""


class DownloadError(WeightsError):
    """The transfer failed: server unreachable, HTTP error, or the connection ended early."""


class ChecksumError(WeightsError):
    """The bytes received (or found in the cache) do not have the expected SHA-256."""


class WeightsUnavailableError(WeightsError):
    """The weights have no download URL and their file is not present (e.g. not shipped)."""


class NoPublishedHashError(WeightsUnavailableError):
    """No published SHA-256 is known for the weights, so they are not downloaded."""


@dataclass(frozen=True)
class WeightsInfo:
    """One named weights file.

    ``url`` is ``None`` for weights shipped inside the package (``bundled=True``, the file
    lives in ``napari_sam/weights/``); ``sha256`` is the lower-case hex SHA-256 of the whole
    file, or ``None``: for the bundled weights (the package install provides them), and for
    published files whose SHA-256 is not known, which are then not downloaded.
    """

    name: str
    architecture: str
    url: str | None
    sha256: str | None
    filename: str
    description: str = ""
    size: str = ""
    bundled: bool = False
    #: the instance decoder shipped beside bundled weights (a file in ``napari_sam/weights/``)
    decoder_filename: str | None = None

    def decoder_path(self) -> Path | None:
        """Where the decoder shipped beside these weights lives, or None if none is."""
        return _BUNDLED_DIR / self.decoder_filename if self.decoder_filename else None


WEIGHTS: dict[str, WeightsInfo] = {}

#: The name :func:`default_weights` prefers: our own small model shipped in the package.
BUNDLED = "bundled"
#: Used while the bundled file is absent (a build without it): small and microscopy-tuned.
FALLBACK_DEFAULT = "vit_t"  # MobileSAM: small, and its SHA-256 is published


def _add(info: WeightsInfo) -> None:
    if info.name in WEIGHTS:
        raise ValueError(f"weights named {info.name!r} are already registered")
    WEIGHTS[info.name] = info


_FAIR = "https://dl.fbaipublicfiles.com/segment_anything"
_BIOIMAGE = "https://uk1s3.embassy.ebi.ac.uk/public-datasets/bioimage.io"
# SHA-256 of Meta's three files and of MobileSAM's: as micro-sam published them for these
# files (its early micro_sam/util.py, _CHECKSUMS; MobileSAM there from a mirror of the same
# bytes: micro-sam's xxh128 of the mirror equals that of the GitHub file). For micro-sam's
# current models its registry gives only xxh128, a checksum, and no SHA-256 of these exact
# files was found published: None, so they are not downloaded (see NoPublishedHashError).
for _info in (
    WeightsInfo(
        BUNDLED, "vit_nano", None, None, "vit_nano.pt",
        "napari-sam nano SAM for nuclei, shipped in the package", bundled=True,
        decoder_filename="vit_nano_decoder.pt",
    ),
    WeightsInfo("vit_b", "vit_b", f"{_FAIR}/sam_vit_b_01ec64.pth",
                "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
                "sam_vit_b_01ec64.pth", "SAM ViT-B (Meta)", "375 MB"),
    WeightsInfo("vit_l", "vit_l", f"{_FAIR}/sam_vit_l_0b3195.pth",
                "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
                "sam_vit_l_0b3195.pth", "SAM ViT-L (Meta)", "1.25 GB"),
    WeightsInfo("vit_h", "vit_h", f"{_FAIR}/sam_vit_h_4b8939.pth",
                "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
                "sam_vit_h_4b8939.pth", "SAM ViT-H (Meta)", "2.56 GB"),
    WeightsInfo("vit_t", "vit_t",
                "https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt",
                "6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f",
                "mobile_sam.pt", "MobileSAM", "40 MB"),
    WeightsInfo("vit_b_lm", "vit_b", f"{_BIOIMAGE}/diplomatic-bug/1.2/files/vit_b.pt",
                None, "vit_b.pt", "micro-sam ViT-B, light microscopy", "375 MB"),
    WeightsInfo("vit_l_lm", "vit_l", f"{_BIOIMAGE}/idealistic-rat/1.2/files/vit_l.pt",
                None, "vit_l.pt", "micro-sam ViT-L, light microscopy"),
    WeightsInfo("vit_t_lm", "vit_t", f"{_BIOIMAGE}/faithful-chicken/1.1/files/vit_t.pt",
                None, "vit_t.pt", "micro-sam ViT-T, light microscopy"),
    WeightsInfo("vit_b_em_organelles", "vit_b", f"{_BIOIMAGE}/noisy-ox/1.2/files/vit_b.pt",
                None, "vit_b.pt", "micro-sam ViT-B, electron microscopy organelles"),
    WeightsInfo("vit_l_em_organelles", "vit_l",
                f"{_BIOIMAGE}/humorous-crab/1.2/files/vit_l.pt",
                None, "vit_l.pt", "micro-sam ViT-L, electron microscopy organelles"),
    WeightsInfo("vit_t_em_organelles", "vit_t", f"{_BIOIMAGE}/greedy-whale/1/files/vit_t.pt",
                None, "vit_t.pt", "micro-sam ViT-T, electron microscopy organelles"),
):
    _add(_info)


def get_weights_info(name: str) -> WeightsInfo:
    """The registered weights called ``name``; a clear ``KeyError`` lists the known names."""
    try:
        return WEIGHTS[name]
    except KeyError:
        raise KeyError(f"unknown weights {name!r}; known: {', '.join(WEIGHTS)}") from None


def default_weights() -> str:
    """The default weights name: the bundled model when shipped, else :data:`FALLBACK_DEFAULT`."""
    return BUNDLED if local_path(WEIGHTS[BUNDLED]).is_file() else FALLBACK_DEFAULT


def cache_dir() -> Path:
    """napari-sam's cache root: ``$NAPARI_SAM_CACHE`` if set, else the user cache directory."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("napari-sam", appauthor=False))


def local_path(info: WeightsInfo, root: Path | None = None) -> Path:
    """Where ``info``'s file lives: in the package if bundled, else ``<cache>/weights/<name>/``.

    One folder per name, because several published files share a filename (``vit_b.pt``).
    """
    if info.bundled:
        return _BUNDLED_DIR / info.filename
    return (cache_dir() if root is None else root) / "weights" / info.name / info.filename


def availability(info: WeightsInfo, root: Path | None = None) -> str:
    """How ``info`` can be had, in a few words (the model picker, ``napari-sam info``):
    "in package" / "not shipped" (bundled), "cached", "download 375 MB", or, for weights
    whose SHA-256 nobody has published, "bring the file (no published SHA-256)"."""
    if info.bundled:
        return "in package" if is_cached(info, root) else "not shipped"
    if is_cached(info, root):
        return "cached"
    if info.sha256 is None:
        return "bring the file (no published SHA-256)"
    return f"download {info.size}".strip() if info.size else "download"


def is_cached(info: WeightsInfo, root: Path | None = None) -> bool:
    """Whether ``info`` is usable without a download (cheap: marker check, no hashing)."""
    path = local_path(info, root)
    if info.bundled or info.sha256 is None:
        return path.is_file()
    return _marker_ok(path, info.sha256)


def file_sha256(path: str | os.PathLike, chunk: int = CHUNK_BYTES) -> str:
    """SHA-256 hex digest of a file's bytes, read in chunks (what downloads are checked by)."""
    return _file_digest(path, hashlib.sha256(), chunk)


def file_xxh128(path: str | os.PathLike, chunk: int = CHUNK_BYTES) -> str:
    """xxh128 hex digest of a file's bytes, read in chunks (~GB/s; 2.5 GB in a few seconds).

    A fast content identity (embedding caches record it), not a check against tampering.
    """
    return _file_digest(path, xxhash.xxh3_128(), chunk)


def _file_digest(path: str | os.PathLike, digest, chunk: int) -> str:
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def tqdm_progress(description: str = "download") -> ProgressCallback:
    """A ``progress`` callback drawing a tqdm bar on stderr (command line use)."""
    from tqdm import tqdm

    bar = tqdm(desc=description, unit="B", unit_scale=True, unit_divisor=1024)

    def update(done: int, total: int) -> None:
        bar.total = total or None
        bar.update(done - bar.n)
        if total and done >= total:
            bar.close()

    return update


def fetch_weights(
    weights: str | WeightsInfo,
    progress: ProgressCallback | None = None,
    *,
    root: Path | None = None,
    sha256: str | None = None,
) -> Path:
    """Path of a verified local copy of ``weights``, downloading it on first use.

    ``weights`` is a registered name or a :class:`WeightsInfo` (tests pass one pointing at a
    local server); ``root`` overrides :func:`cache_dir`; ``sha256`` (64 hex digits) replaces
    the table's hash, e.g. for an entry whose SHA-256 is not published. A file of an entry
    without a SHA-256 is used if it is in the cache folder (put there by the user) and never
    downloaded. Raises :class:`DownloadError`, :class:`ChecksumError`,
    :class:`WeightsUnavailableError` or its :class:`NoPublishedHashError`.
    """
    info = get_weights_info(weights) if isinstance(weights, str) else weights
    if sha256 is not None:
        info = dataclasses.replace(info, sha256=_checked_sha256(sha256))
    path = local_path(info, root)
    if info.url is None:
        if path.is_file():
            return path
        raise WeightsUnavailableError(
            f"weights {info.name!r} are not available: {path} is missing and there is no "
            f"URL to download them from; choose one of: "
            f"{', '.join(n for n, i in WEIGHTS.items() if i.url and i.sha256)}"
        )
    if info.sha256 is None:
        if path.is_file():  # put there by the user: their choice, as a path of their own is
            return path
        raise NoPublishedHashError(
            f"no published SHA-256 is known for {info.name!r} ({info.url}), and napari-sam "
            f"does not download a file it cannot check. Download it yourself from a source "
            f"you trust and give its path instead of {info.name!r}, or put it in the cache "
            f"folder as {path}; from Python, fetch_weights({info.name!r}, sha256='<64 hex "
            f"digits>') downloads it checked against a SHA-256 you trust"
        )
    if path.is_file() and _cached_file_ok(path, info):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_parts(path)
    try:
        _download(info, path, progress)
    except DownloadError as exc:
        raise DownloadError(f"{exc}. {offline_hint(info, path)}") from exc
    return path


def offline_hint(info: WeightsInfo, path: Path) -> str:
    """What to do when ``info`` cannot be downloaded (offline, blocked)."""
    return (f"Without a connection: use the bundled model ({BUNDLED!r}, no download), give a "
            f"weights file you have (a path instead of {info.name!r}), or put "
            f"{info.filename} ({info.url}) in the cache folder as {path}")


def _checked_sha256(digest: str) -> str:
    """``digest`` in lower case if it is 64 hex digits, else a ``ValueError``."""
    text = digest.strip().lower()
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError(f"a SHA-256 is 64 hexadecimal digits, not {digest!r}")
    return text


def _cached_file_ok(path: Path, info: WeightsInfo) -> bool:
    """True if ``path`` may be trusted; a file that fails a full re-hash is deleted."""
    assert info.sha256 is not None
    if _marker_ok(path, info.sha256):
        return True
    if file_sha256(path) == info.sha256:
        _write_marker(path, info.sha256)
        return True
    path.unlink(missing_ok=True)
    return False


def _marker_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _marker_ok(path: Path, expected: str) -> bool:
    try:
        recorded = _marker_path(path).read_text().split()
        stat = path.stat()
    except OSError:
        return False
    return recorded == [expected, str(stat.st_size), str(stat.st_mtime_ns)]


def _write_marker(path: Path, digest: str) -> None:
    stat = path.stat()
    marker = _marker_path(path)
    with _temporary_file(marker.parent, marker.name) as (tmp, f):
        f.write(f"{digest} {stat.st_size} {stat.st_mtime_ns}\n".encode())
        f.close()
        os.replace(tmp, marker)


@contextlib.contextmanager
def _temporary_file(folder: Path, name: str) -> Iterator[tuple[Path, BinaryIO]]:
    """A new ``.part`` file in ``folder``; removed on exit unless renamed away meanwhile."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".part")
    tmp_path = Path(tmp)
    try:
        with os.fdopen(fd, "wb") as f:
            yield tmp_path, f
    finally:
        tmp_path.unlink(missing_ok=True)


def _remove_stale_parts(path: Path) -> None:
    """Delete ``.part`` files left by a killed process (older than a day, so not in use)."""
    now = time.time()
    for part in path.parent.glob(f".{path.name}.*.part"):
        with contextlib.suppress(OSError):
            if now - part.stat().st_mtime > _STALE_PART_S:
                part.unlink()


def _download(info: WeightsInfo, path: Path, progress: ProgressCallback | None) -> None:
    """Stream ``info.url`` into a temporary file, check its SHA-256, rename it to ``path``."""
    assert info.url is not None and info.sha256 is not None
    url = info.url
    digest = hashlib.sha256()
    request = urllib.request.Request(url, headers={"User-Agent": "napari-sam"})
    with _temporary_file(path.parent, path.name) as (tmp, f):
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                total = int(response.headers.get("Content-Length") or 0)
                done = 0
                if progress is not None:
                    progress(done, total)
                while block := response.read(CHUNK_BYTES):
                    f.write(block)
                    digest.update(block)
                    done += len(block)
                    if progress is not None:
                        progress(done, total)
        except urllib.error.HTTPError as exc:
            raise DownloadError(f"downloading {url} failed: HTTP {exc.code} {exc.reason}") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise DownloadError(f"downloading {url} failed: {exc!r}") from exc
        if total and done != total:
            raise DownloadError(
                f"downloading {url} failed: the connection ended after {done} of {total} bytes"
            )
        actual = digest.hexdigest()
        if actual != info.sha256:
            raise ChecksumError(
                f"{url}: the SHA-256 of the downloaded file is {actual}, expected "
                f"{info.sha256}; the file was discarded (changed, corrupted or tampered with)"
            )
        f.close()
        os.replace(tmp, path)
    _write_marker(path, actual)
