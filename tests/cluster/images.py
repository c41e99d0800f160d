"""Container images for the real node, built here with buildah from Debian's packages and PyPI.

No registry is reachable here, so the bases are made locally: ``localhost/debian:bookworm-slim``
with ``debootstrap --variant=minbase`` from the machine's own Debian mirror, and
``localhost/python:3.11-slim-bookworm`` (Debian's python3.11) on it. The project's images are
built from the project's own Dockerfiles, their bases passed as build args (one file serves the
registry build and this one); the Vestige v1 images take the real 1.3.0/2.0.0 binary built from
``../shared/vendor/vestige/`` (``tests.vestige.build.ensure``); the v3 shape runs the stand-in.

Every image ends as an OCI archive (``buildah push <ref> oci-archive:<file>:<ref>``) in
``<cache>/images/`` named by a hash of everything that went into it; a fresh archive is reused
without running buildah at all. buildah's own storage (``<cache>/images/buildah``) is scratch:
a base missing from it is pulled back from its archive. ``import_into`` loads the archives into a
containerd (``ctr images import``) unless the same digest is already there.

``python -m tests.cluster images [--import ADDRESS]`` builds (or checks) them and prints the refs.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.cluster.build import cache_root

ROOT = Path(__file__).resolve().parents[2]
TESTS_IMAGES = ROOT / "tests" / "images"
#: Bump to rebuild every image (a change in how they are made that the inputs do not show).
RECIPE = "1"
SUITE = "bookworm"
DEBIAN_REF = "localhost/debian:bookworm-slim"
PYTHON_REF = "localhost/python:3.11-slim-bookworm"
PAUSE_REF = "localhost/pause:3.10"
VESTIGE_VERSIONS = ("1.3.0", "2.0.0")
#: Images other builds start FROM: kept in buildah's storage between builds.
BASE_KEYS = ("debian", "python")
STANDIN_VERSION = "3.1.1"
#: How the Vestige binaries image is laid out (bump when ``_binaries_image`` changes).
BINARIES_RECIPE = "2"
#: Archives kept per image (the ones used last).
KEEP = 3
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
#: What the trimmed base keeps out of every later install too (like Docker's debian:*-slim).
DPKG_EXCLUDES = """\
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
"""
#: buildah flags that work on this machine (root, no systemd, cgroup v1): chroot isolation (no
#: OCI runtime, no network namespace to set up) and the host's network, so RUN steps reach the
#: Debian mirror and PyPI like the host does. See docs/images.md for what was measured.
BUILD_FLAGS = ("--isolation", "chroot", "--network", "host", "--pull=never", "--layers=false")


class ImageError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class Image:
    """One built image: its ref and the OCI archive holding it."""

    key: str
    ref: str
    archive: Path
    stamp: str


@dataclass(frozen=True, slots=True)
class ImageRefs:
    """The refs the tests and the operator's config use (``imagePullPolicy: IfNotPresent``)."""

    debian: str
    python: str
    pause: str
    bridge: str
    operator: str
    #: Vestige version ("1.3.0", "2.0.0") -> the v1-shape image (real Vestige behind mcp-proxy).
    vestige: dict[str, str]
    #: The v3 shape: the stand-in behind the ``vestige-mcp`` command line of Vestige 3.x.
    standin: str

    def all(self) -> list[str]:
        return [
            self.debian,
            self.python,
            self.pause,
            self.bridge,
            self.operator,
            *self.vestige.values(),
            self.standin,
        ]


@dataclass(frozen=True, slots=True)
class ImageSet:
    images: dict[str, Image]

    @property
    def refs(self) -> ImageRefs:
        ref = {key: image.ref for key, image in self.images.items()}
        return ImageRefs(
            debian=ref["debian"],
            python=ref["python"],
            pause=ref["pause"],
            bridge=ref["bridge"],
            operator=ref["operator"],
            vestige={v: ref[f"vestige-{v}"] for v in VESTIGE_VERSIONS if f"vestige-{v}" in ref},
            standin=ref["standin"],
        )

    def archives(self) -> list[Path]:
        return [image.archive for image in self.images.values()]


# -- paths and tools -------------------------------------------------------------------------


def images_dir() -> Path:
    return cache_root() / "images"


def missing_tools() -> list[str]:
    """The host tools a build needs and this machine lacks (empty when a build can run)."""
    return [tool for tool in ("buildah", "debootstrap") if shutil.which(tool) is None]


def _log(message: str) -> None:
    print(f"[images] {message}", file=sys.stderr, flush=True)


def _run(cmd: list[str], what: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-6000:]
        raise ImageError(f"{what} failed ({' '.join(map(str, cmd))}):\n{tail}")
    return proc


def _buildah_storage() -> list[str]:
    """Global flags: buildah's own storage under the cache, not the machine's default one (other
    builds on this machine keep theirs); overlay (native diff on ext4) is the fast driver here."""
    root = images_dir() / "buildah"
    run = images_dir() / "buildah-run"
    driver = os.environ.get("VESTIGE_BUILDAH_DRIVER", "overlay")
    return ["--root", str(root / driver), "--runroot", str(run / driver), "--storage-driver", driver]


def _buildah(*args: str, what: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return _run(["buildah", *_buildah_storage(), *args], what, **kwargs)


def _hash(*parts: str | bytes | Path) -> str:
    digest = hashlib.sha256(RECIPE.encode() + b"\0")
    for part in parts:
        if isinstance(part, Path):
            files = sorted(p for p in part.rglob("*") if p.is_file()) if part.is_dir() else [part]
            for file in files:
                if "__pycache__" in file.parts:
                    continue
                digest.update(str(file.relative_to(ROOT) if file.is_relative_to(ROOT) else file).encode())
                digest.update(hashlib.sha256(file.read_bytes()).digest())
        else:
            digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return digest.hexdigest()


# -- the Debian mirror -----------------------------------------------------------------------


def apt_sources(etc_apt: Path = Path("/etc/apt")) -> tuple[str, str]:
    """(main mirror, security mirror) from the machine's own apt sources: nothing else is
    reachable here. deb822 ``*.sources`` and one-line ``*.list`` files are both read."""
    main, security = "", ""
    files = [etc_apt / "sources.list", *sorted((etc_apt / "sources.list.d").glob("*"))]
    for file in files:
        if not file.is_file() or not file.name.endswith((".list", ".sources")):
            continue
        text = file.read_text(errors="replace")
        entries: list[tuple[str, list[str]]] = []
        if file.name.endswith(".sources"):
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(
                    (m.group(1).lower(), m.group(2).strip())
                    for m in re.finditer(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.MULTILINE)
                )
                if fields.get("types", "deb").split()[0] == "deb" and fields.get("enabled", "yes") != "no":
                    entries += [
                        (uri, fields.get("suites", "").split()) for uri in fields.get("uris", "").split()
                    ]
        else:
            for line in text.splitlines():
                m = re.match(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
                if m:
                    entries.append((m.group(1), [m.group(2)]))
        for uri, suites in entries:
            if SUITE in suites and not main:
                main = uri.rstrip("/")
            if f"{SUITE}-security" in suites and not security:
                security = uri.rstrip("/")
    return main or DEFAULT_MIRROR, security or DEFAULT_SECURITY_MIRROR


def _deb822(main: str, security: str) -> str:
    keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
    return (
        f"Types: deb\nURIs: {main}\nSuites: {SUITE} {SUITE}-updates\nComponents: main\n"
        f"Signed-By: {keyring}\n\n"
        f"Types: deb\nURIs: {security}\nSuites: {SUITE}-security\nComponents: main\n"
        f"Signed-By: {keyring}\n"
    )


# -- the cache -------------------------------------------------------------------------------


def _archive_path(key: str, stamp: str) -> Path:
    return images_dir() / f"{key}-{stamp[:16]}.oci.tar"


def _cached(key: str, ref: str, stamp: str) -> Image | None:
    archive = _archive_path(key, stamp)
    meta = archive.with_suffix(".json")
    if archive.is_file() and meta.is_file():
        info = json.loads(meta.read_text())
        if info.get("stamp") == stamp and info.get("ref") == ref:
            os.utime(meta)  # last used (see _prune)
            return Image(key, ref, archive, stamp)
    return None


def _push(key: str, ref: str, stamp: str, started: float) -> Image:
    """The image in buildah's storage -> its archive (atomically); see ``_prune``."""
    archive = _archive_path(key, stamp)
    partial = archive.with_name(archive.name + ".partial")
    partial.unlink(missing_ok=True)
    _buildah("push", "--quiet", ref, f"oci-archive:{partial}:{ref}", what=f"pushing {ref}")
    partial.rename(archive)
    meta = {"key": key, "ref": ref, "stamp": stamp, "digest": archive_digest(archive)}
    meta["build_seconds"] = round(time.monotonic() - started, 1)
    archive.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    _prune(key)
    if key not in BASE_KEYS:  # the archive is the cache; buildah's storage keeps only the bases
        _quiet(["buildah", *_buildah_storage(), "rmi", ref])
    _log(f"built {ref} in {meta['build_seconds']}s -> {archive.name}")
    return Image(key, ref, archive, stamp)


def _prune(key: str) -> None:
    """Keep the ``KEEP`` archives of ``key`` used last (worktrees sharing the cache may differ
    in an input, e.g. the README: they must not evict each other's image at every build)."""
    pattern = re.compile(rf"{re.escape(key)}-[0-9a-f]{{16}}\.oci\.tar")
    archives = [a for a in images_dir().glob(f"{key}-*.oci.tar") if pattern.fullmatch(a.name)]

    def last_used(archive: Path) -> float:
        meta = archive.with_suffix(".json")
        return meta.stat().st_mtime if meta.exists() else 0.0

    for old in sorted(archives, key=last_used, reverse=True)[KEEP:]:
        old.unlink(missing_ok=True)
        old.with_suffix(".json").unlink(missing_ok=True)


def archive_digest(archive: Path) -> str:
    """The manifest digest an OCI archive's index names (what containerd records as target)."""
    with tarfile.open(archive) as tar:
        member = tar.extractfile("index.json")
        if member is None:
            raise ImageError(f"{archive} has no index.json")
        index = json.load(member)
    return str(index["manifests"][0]["digest"])


def _ensure_in_storage(image: Image) -> None:
    """A base image a build needs: pulled back from its archive when buildah's storage lost it."""
    found = subprocess.run(
        [
            "buildah",
            *_buildah_storage(),
            "inspect",
            "--type",
            "image",
            "--format",
            "{{.FromImageDigest}}",
            image.ref,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if found.returncode == 0 and found.stdout.strip() == archive_digest(image.archive):
        return
    pulled = _buildah("pull", "--quiet", f"oci-archive:{image.archive}", what=f"loading {image.ref}")
    _buildah("tag", pulled.stdout.strip().splitlines()[-1], image.ref, what=f"tagging {image.ref}")


def _host_trust() -> list[str]:
    """RUN steps reach PyPI through this machine's TLS path, whose CA only the host's bundle
    holds: bind the host's bundle over the image's own (Debian's pip reads the system bundle).
    Only for builds on the Python base, whose bundle exists (so the bind leaves no mount point
    behind in the image) and which no RUN step rewrites."""
    bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    if not bundle.is_file():
        return []
    return ["--volume", f"{bundle.resolve()}:/etc/ssl/certs/ca-certificates.crt:ro"]


def _build(
    key: str,
    ref: str,
    stamp: str,
    dockerfile: Path,
    context: Path,
    args: dict[str, str],
    bases: list[Image],
) -> Image:
    """``buildah build`` unless a fresh archive exists. A build on the Python base gets the host's
    CA bundle (see ``_host_trust``)."""
    cached = _cached(key, ref, stamp)
    if cached is not None:
        return cached
    started = time.monotonic()
    _log(f"building {ref} from {dockerfile.relative_to(ROOT)} ...")
    for base in bases:
        _ensure_in_storage(base)
    build_args = [a for name, value in args.items() for a in ("--build-arg", f"{name}={value}")]
    _buildah(
        "build",
        *BUILD_FLAGS,
        *(_host_trust() if any(base.key == "python" for base in bases) else []),
        *build_args,
        "--file",
        str(dockerfile),
        "--tag",
        ref,
        str(context),
        what=f"building {ref}",
    )
    return _push(key, ref, stamp, started)


# -- the bases -------------------------------------------------------------------------------


def _debootstrap_rootfs(target: Path, main: str, security: str) -> None:
    _run(["debootstrap", "--variant=minbase", SUITE, str(target), main], f"debootstrap {SUITE}")
    # Trimmed like Docker's *-slim: no apt lists or caches, no docs (the copyright files stay),
    # man pages or locales, now and in every later install (dpkg path-exclude).
    for pattern in (
        "var/lib/apt/lists/*",
        "var/cache/apt/*.bin",
        "var/cache/apt/archives/*.deb",
        "var/cache/debconf/*-old",
        "var/lib/dpkg/*-old",
        "var/log/*",
        "usr/share/man/*",
        "usr/share/info/*",
        "usr/share/locale/*",
        "usr/share/lintian/*",
        "dev/*",
        "run/*",
        "tmp/*",
        "root/.*",
    ):
        for path in target.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    for doc in (target / "usr/share/doc").glob("*"):
        if doc.is_dir() and not doc.is_symlink():
            for item in doc.iterdir():
                if item.name != "copyright":
                    shutil.rmtree(item) if item.is_dir() and not item.is_symlink() else item.unlink()
    (target / "etc/dpkg/dpkg.cfg.d/docker-slim").write_text(DPKG_EXCLUDES)
    (target / "etc/apt/apt.conf.d/docker-clean").write_text(
        'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };\n'
        'Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";\n'
        'Acquire::Languages "none";\n'
    )
    (target / "etc/apt/sources.list").unlink(missing_ok=True)
    (target / "etc/apt/sources.list.d/debian.sources").write_text(_deb822(main, security))
    for name in ("etc/hostname", "etc/resolv.conf"):
        (target / name).unlink(missing_ok=True)
    (target / "etc/machine-id").write_text("")


def _debian() -> Image:
    main, security = apt_sources()
    stamp = _hash("debian", SUITE, "minbase", main, security, DPKG_EXCLUDES)
    cached = _cached("debian", DEBIAN_REF, stamp)
    if cached is not None:
        return cached
    started = time.monotonic()
    _log(f"debootstrap --variant=minbase {SUITE} from {main} (a few minutes) ...")
    work = images_dir() / "tmp"
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work) as scratch:
        rootfs = Path(scratch) / "rootfs"
        _debootstrap_rootfs(rootfs, main, security)
        layer = Path(scratch) / "rootfs.tar"
        _run(
            ["tar", "--numeric-owner", "--xattrs", "--acls", "-C", str(rootfs), "-cf", str(layer), "."],
            "packing the root filesystem",
        )
        shutil.rmtree(rootfs)
        with _working_container("scratch") as ctr:
            _buildah("add", ctr, str(layer), "/", what="adding the root filesystem")
            _buildah(
                "config",
                "--env",
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--cmd",
                "bash",
                "--os",
                "linux",
                "--arch",
                "amd64",
                "--label",
                f"org.opencontainers.image.title=debian {SUITE} (debootstrap minbase, slim)",
                "--label",
                f"org.opencontainers.image.source={main}",
                ctr,
                what="configuring the Debian base",
            )
            _buildah("commit", "--quiet", "--rm", ctr, DEBIAN_REF, what="committing the Debian base")
    return _push("debian", DEBIAN_REF, stamp, started)


def _python(debian: Image) -> Image:
    dockerfile = TESTS_IMAGES / "python" / "Dockerfile"
    stamp = _hash("python", debian.stamp, dockerfile)
    return _build(
        "python", PYTHON_REF, stamp, dockerfile, dockerfile.parent, {"DEBIAN_IMAGE": debian.ref}, [debian]
    )


def _pause(debian: Image) -> Image:
    dockerfile = TESTS_IMAGES / "pause" / "Dockerfile"
    stamp = _hash("pause", debian.stamp, dockerfile)
    return _build(
        "pause", PAUSE_REF, stamp, dockerfile, dockerfile.parent, {"DEBIAN_IMAGE": debian.ref}, [debian]
    )


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """One build at a time per cache (several pytest sessions, tests/run.sh)."""
    images_dir().mkdir(parents=True, exist_ok=True)
    with open(images_dir() / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            _remove_leftover_containers()
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_bases() -> dict[str, Image]:
    """The Debian, Python and pause images (built when missing or stale)."""
    with _locked():
        return _ensure_bases()


def _ensure_bases() -> dict[str, Image]:
    if missing := missing_tools():
        raise ImageError(
            f"cannot build images: {', '.join(missing)} not installed (apt-get install {' '.join(missing)})"
        )
    images_dir().mkdir(parents=True, exist_ok=True)
    debian = _debian()
    return {"debian": debian, "python": _python(debian), "pause": _pause(debian)}


# -- the project's images --------------------------------------------------------------------

#: What the project's images COPY from the repository root (their build context).
BRIDGE_INPUTS = ("pyproject.toml", "README.md", "images/bridge/vestige_bridge", ".dockerignore")
OPERATOR_INPUTS = (*BRIDGE_INPUTS, "operator/vestige_operator")
STANDIN_INPUTS = (
    "pyproject.toml",
    ".dockerignore",
    "tests/__init__.py",
    "tests/bridge/__init__.py",
    "tests/bridge/standin.py",
    "tests/bridge/data",
    "tests/images/standin",
)


def _tag(prefix: str, stamp: str) -> str:
    return f"{prefix}-{stamp[:12]}"


def _bridge(python: Image) -> Image:
    dockerfile = ROOT / "images" / "bridge" / "Dockerfile"
    stamp = _hash("bridge", python.stamp, dockerfile, *(ROOT / p for p in BRIDGE_INPUTS))
    ref = f"localhost/vestige-bridge:{_tag('dev', stamp)}"
    return _build("bridge", ref, stamp, dockerfile, ROOT, {"PYTHON_IMAGE": python.ref}, [python])


def _operator(python: Image) -> Image:
    dockerfile = ROOT / "Dockerfile.operator"
    stamp = _hash("operator", python.stamp, dockerfile, *(ROOT / p for p in OPERATOR_INPUTS))
    ref = f"localhost/vestige-operator:{_tag('dev', stamp)}"
    return _build("operator", ref, stamp, dockerfile, ROOT, {"PYTHON_IMAGE": python.ref}, [python])


def _standin(python: Image) -> Image:
    dockerfile = TESTS_IMAGES / "standin" / "Dockerfile"
    stamp = _hash("standin", python.stamp, *(ROOT / p for p in STANDIN_INPUTS))
    ref = f"localhost/vestige-standin:{_tag(STANDIN_VERSION, stamp)}"
    return _build("standin", ref, stamp, dockerfile, ROOT, {"PYTHON_IMAGE": python.ref}, [python])


def vestige_binary(version: str) -> Path:
    """The real ``vestige-mcp`` of ``version``, built from ``../shared/vendor/vestige`` by
    ``tests.vestige.build.ensure`` (cached in ``<cache>/vestige``)."""
    try:
        from tests.vestige import build as vestige_build
    except ImportError as exc:  # the vestige-real stream's module
        raise ImageError(
            f"tests.vestige.build is not available ({exc}): cannot build Vestige {version}"
        ) from exc
    try:
        return vestige_build.ensure(version)
    except vestige_build.BuildError as exc:
        raise ImageError(str(exc)) from exc


def vestige_unavailable() -> str | None:
    """Why the real Vestige images cannot be built from this tree (None when they can): the
    ``tests.vestige`` build module or the vendored sources are missing. (A missing cargo is an
    error of the build itself, as in ``tests/vestige``.)"""
    try:
        from tests.vestige import build as vestige_build
    except ImportError:
        return "tests.vestige (the real Vestige build) is not in this tree"
    if vestige_build.vendor_dir() is None:
        return vestige_build.missing_reason()
    return None


def available_vestige_versions() -> tuple[str, ...]:
    return VESTIGE_VERSIONS if vestige_unavailable() is None else ()


def _vendor_archive(version: str) -> Path:
    from tests.vestige import build as vestige_build

    vendor = vestige_build.vendor_dir()
    if vendor is None:
        raise ImageError(vestige_build.missing_reason())
    return vendor / f"vestige-{version}.tar.gz"


def _binaries_image(version: str, binary: Path, stamp: str) -> str:
    """A scratch image laid out like Dockerfile.v1's `build` stage (/out/bin, /out/doc) with the
    prebuilt binary (stripped: the debug build's symbols are most of its size), the licence
    files and the upstream commit from the vendored archive. Only lives in buildah's storage: it is
    remade from the cached binary whenever the Vestige image itself has to be rebuilt."""
    ref = f"localhost/vestige-binaries:{_tag(version, stamp)}"
    (images_dir() / "tmp").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=images_dir() / "tmp") as scratch:
        out = Path(scratch) / "out"
        (out / "bin").mkdir(parents=True)
        (out / "doc").mkdir()
        _run(["strip", "-o", str(out / "bin" / "vestige-mcp"), str(binary)], f"stripping {binary.name}")
        (out / "bin" / "vestige-mcp").chmod(0o755)
        with tarfile.open(_vendor_archive(version)) as tar:
            commit = tar.pax_headers.get("comment", "unknown")
            top = f"vestige-{version}/"
            licences = [m for m in tar.getmembers() if m.isfile() and m.name.startswith(top + "LICENSE")]
            if not any(m.name == top + "LICENSE" for m in licences):
                raise ImageError(f"vestige-{version}.tar.gz holds no LICENSE")
            for member in licences:  # LICENSE, and LICENSE-APACHE/-MIT where they exist
                data = tar.extractfile(member)
                assert data is not None
                (out / "doc" / member.name.removeprefix(top)).write_bytes(data.read())
        (out / "doc" / "VESTIGE_COMMIT").write_text(f"{commit} (vendored vestige-{version}.tar.gz)\n")
        for path in out.rglob("*"):
            if path.is_file():
                path.chmod(0o755 if path.parent.name == "bin" else 0o644)
        with _working_container("scratch") as ctr:
            _buildah("copy", ctr, str(out), "/out", what="copying the Vestige binary")
            _buildah("commit", "--quiet", "--rm", ctr, ref, what=f"committing {ref}")
    return ref


def _vestige(version: str, binary: Path, python: Image) -> Image:
    dockerfile = ROOT / "images" / "vestige" / "Dockerfile.v1"
    # The binary's name carries the hash of the sources it was built from.
    stamp = _hash(
        "vestige", BINARIES_RECIPE, version, python.stamp, dockerfile, binary.name, str(binary.stat().st_size)
    )
    key = f"vestige-{version}"
    ref = f"localhost/vestige:{_tag(version, stamp)}"
    cached = _cached(key, ref, stamp)
    if cached is not None:
        return cached
    binaries = _binaries_image(version, binary, stamp)
    args = {"RUNTIME_IMAGE": python.ref, "VESTIGE_BINARIES": binaries, "VESTIGE_REF": f"v{version}"}
    try:
        return _build(key, ref, stamp, dockerfile, dockerfile.parent, args, [python])
    finally:
        _remove_leftover_containers()  # the `AS build` stage's container, which pins `binaries`
        _quiet(["buildah", *_buildah_storage(), "rmi", binaries])


def _remove_leftover_containers() -> None:
    """Every buildah call on this cache's storage runs under the images lock, so a working
    container there while the lock is held is a leftover (a killed build, or the one `buildah
    bud` 1.28 leaves behind for a `FROM <image> AS <stage>` stage) that would stay mounted and
    keep `rmi` from removing its image: removed."""
    if shutil.which("buildah") is not None and (images_dir() / "buildah").is_dir():
        _quiet(["buildah", *_buildah_storage(), "rm", "--all"])


@contextlib.contextmanager
def _working_container(base: str) -> Iterator[str]:
    """``buildah from <base>``: the container's id, removed again if the block fails (a
    ``commit --rm`` inside the block removes it otherwise)."""
    ctr = _buildah("from", "--quiet", base, what=f"buildah from {base}").stdout.strip()
    try:
        yield ctr
    except BaseException:
        _quiet(["buildah", *_buildah_storage(), "rm", ctr])
        raise


def versitygw_image(debian: Image | None = None) -> Image:
    """``localhost/versitygw:<version>-<hash>``: the S3 server of the backup tests (``tests.s3``),
    for a pod on the real node. The cached binary is built with cgo (dynamically linked against
    glibc 2.34+), so it goes onto the Debian base (same glibc as this machine), stripped, as uid
    65532 with ``versitygw`` as entrypoint. Built on demand only (not in ``ensure_images``)."""
    from tests.s3 import build as s3_build

    binary = s3_build.ensure()
    with _locked():
        debian = debian or _ensure_bases()["debian"]
        stamp = _hash("versitygw", debian.stamp, s3_build.VERSITYGW_VERSION, binary)
        key = "versitygw"
        ref = f"localhost/versitygw:{_tag(s3_build.VERSITYGW_VERSION.lstrip('v'), stamp)}"
        cached = _cached(key, ref, stamp)
        if cached is not None:
            return cached
        started = time.monotonic()
        _log(f"building {ref} from {binary} ...")
        _ensure_in_storage(debian)
        (images_dir() / "tmp").mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=images_dir() / "tmp") as scratch:
            stripped = Path(scratch) / "versitygw"
            _run(["strip", "-o", str(stripped), str(binary)], "stripping versitygw")
            stripped.chmod(0o755)
            with _working_container(debian.ref) as ctr:
                _buildah("copy", ctr, str(stripped), "/usr/local/bin/versitygw", what="copying versitygw")
                _buildah(
                    "config",
                    "--entrypoint",
                    '["/usr/local/bin/versitygw"]',
                    "--cmd",
                    "",
                    "--user",
                    "65532:65532",
                    "--label",
                    f"org.opencontainers.image.title=versitygw {s3_build.VERSITYGW_VERSION} (tests only)",
                    "--label",
                    "org.opencontainers.image.licenses=Apache-2.0",
                    ctr,
                    what="configuring the versitygw image",
                )
                _buildah("commit", "--quiet", "--rm", ctr, ref, what=f"committing {ref}")
        return _push(key, ref, stamp, started)


def litestream_image(debian: Image | None = None) -> Image:
    """``localhost/litestream:<version>-<hash>`` from ``images/litestream/Dockerfile``: the
    replication sidecar and restore init container of continuous backups. The static binary
    built by ``tests.litestream`` goes in through a scratch image laid out like the Dockerfile's
    ``build`` stage (``LITESTREAM_BINARIES``); the CA bundle comes from the Debian base. Built
    on demand (and by ``tests/prepare.py``), not in ``ensure_images``."""
    from tests.litestream import build as litestream_build

    binary = litestream_build.ensure()
    dockerfile = ROOT / "images" / "litestream" / "Dockerfile"
    version = litestream_build.LITESTREAM_VERSION
    with _locked():
        debian = debian or _ensure_bases()["debian"]
        stamp = _hash("litestream", BINARIES_RECIPE, debian.stamp, version, dockerfile.parent, binary)
        key = "litestream"
        ref = f"localhost/litestream:{_tag(version.lstrip('v'), stamp)}"
        cached = _cached(key, ref, stamp)
        if cached is not None:
            return cached
        binaries = f"localhost/litestream-binaries:{_tag(version.lstrip('v'), stamp)}"
        (images_dir() / "tmp").mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=images_dir() / "tmp") as scratch:
            out = Path(scratch) / "out"
            (out / "bin").mkdir(parents=True)
            (out / "doc").mkdir()
            shutil.copyfile(binary, out / "bin" / "litestream")
            (out / "bin" / "litestream").chmod(0o755)
            shutil.copyfile(litestream_build.licence(), out / "doc" / "LICENSE")
            (out / "doc" / "LICENSE").chmod(0o644)
            with _working_container("scratch") as ctr:
                _buildah("copy", ctr, str(out), "/out", what="copying the Litestream binary")
                _buildah("commit", "--quiet", "--rm", ctr, binaries, what=f"committing {binaries}")
        args = {"DEBIAN_IMAGE": debian.ref, "LITESTREAM_BINARIES": binaries, "LITESTREAM_VERSION": version}
        try:
            return _build(key, ref, stamp, dockerfile, dockerfile.parent, args, [debian])
        finally:
            _remove_leftover_containers()  # the `AS binaries` stage's container pins `binaries`
            _quiet(["buildah", *_buildah_storage(), "rmi", binaries])


def ensure_images(vestige_versions: tuple[str, ...] | None = None) -> ImageSet:
    """Every image (bases, bridge, operator, the v3 stand-in, Vestige ``vestige_versions``;
    default: every version whose sources are here), built when missing or stale; a warm call
    only hashes the inputs (well under a second)."""
    if vestige_versions is None:
        vestige_versions = available_vestige_versions()
    # The binaries first (tests.vestige has its own lock): no image lock held during cargo.
    binaries = {version: vestige_binary(version) for version in vestige_versions}
    with _locked():
        return _ensure_images(binaries)


def _ensure_images(binaries: dict[str, Path]) -> ImageSet:
    bases = _ensure_bases()
    python = bases["python"]
    images = dict(bases)
    images["bridge"] = _bridge(python)
    images["operator"] = _operator(python)
    images["standin"] = _standin(python)
    for version, binary in binaries.items():
        images[f"vestige-{version}"] = _vestige(version, binary, python)
    return ImageSet(images)


# -- containerd ------------------------------------------------------------------------------


def _ctr(address: str, namespace: str, *args: str, what: str, **kwargs: object) -> str:
    return _run(["ctr", "--address", address, "--namespace", namespace, *args], what, **kwargs).stdout


def containerd_images(address: str, namespace: str = "k8s.io") -> dict[str, str]:
    """ref -> target digest of the images in a containerd namespace."""
    out = _ctr(address, namespace, "images", "list", what="listing containerd's images")
    found = {}
    for line in out.splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 3 and cols[2].startswith("sha256:"):
            found[cols[0]] = cols[2]
    return found


def wait_for_containerd(address: str, timeout: float = 60) -> None:
    """Until containerd answers on ``address`` (its socket appears before it serves)."""
    deadline = time.monotonic() + timeout
    while True:
        ok = subprocess.run(
            ["ctr", "--address", address, "version"], capture_output=True, text=True, check=False
        )
        if ok.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise ImageError(f"containerd at {address} does not answer: {ok.stderr.strip()}")
        time.sleep(0.2)


def import_into(
    address: str,
    namespace: str = "k8s.io",
    images: ImageSet | None = None,
    snapshotter: str | None = None,
) -> list[str]:
    """Import every image's archive into the containerd at ``address`` (unpacked for its
    snapshotter), skipping those whose ref already names the same digest there. Returns the
    refs that were imported. ``images`` defaults to ``ensure_images()``."""
    images = images or ensure_images()
    wait_for_containerd(address)
    present = containerd_images(address, namespace)
    imported = []
    for image in images.images.values():
        digest = archive_digest(image.archive)
        if present.get(image.ref) == digest:
            continue
        extra = ["--snapshotter", snapshotter] if snapshotter else []
        _ctr(
            address, namespace, "images", "import", *extra, str(image.archive), what=f"importing {image.ref}"
        )
        now = containerd_images(address, namespace).get(image.ref)
        if now != digest:
            raise ImageError(f"{image.archive.name} imported, but {image.ref} names {now}, not {digest}")
        imported.append(image.ref)
    return imported


CONTAINERD_CONFIG = """\
version = 2
root = "{root}"
state = "{state}"

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[debug]
  level = "info"

[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  restrict_oom_score_adj = true

[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "{snapshotter}"
"""


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve())
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            mounts.append(point)
    return mounts


@contextlib.contextmanager
def scratch_containerd(state_dir: Path, snapshotter: str = "overlayfs") -> Iterator[str]:
    """A throwaway containerd of its own (root, state and socket under ``state_dir``), for
    importing and running the images outside the cluster; yields its address. On exit its
    containers are killed and removed, the daemon stopped, what it mounted unmounted and
    ``state_dir`` removed. Touches no other containerd."""
    state_dir = state_dir.resolve()
    if state_dir.exists():
        _cleanup_containerd_dir(state_dir)
    state_dir.mkdir(parents=True)
    socket = state_dir / "containerd.sock"
    config = state_dir / "config.toml"
    config.write_text(
        CONTAINERD_CONFIG.format(
            root=state_dir / "root",
            state=state_dir / "state",
            socket=socket,
            pause=PAUSE_REF,
            snapshotter=snapshotter,
        )
    )
    log = open(state_dir / "containerd.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        ["containerd", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    address = str(socket)
    try:
        deadline = time.monotonic() + 30
        while True:
            ok = subprocess.run(["ctr", "--address", address, "version"], capture_output=True, check=False)
            if ok.returncode == 0:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise ImageError(
                    f"containerd did not start: {(state_dir / 'containerd.log').read_text()[-3000:]}"
                )
            time.sleep(0.2)
        yield address
    finally:
        try:
            _remove_containers(address)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
            _cleanup_containerd_dir(state_dir)


def _quiet(cmd: list[str]) -> str:
    """stdout of a best-effort command (cleanup: failures are ignored)."""
    return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout


def _remove_containers(address: str) -> None:
    for namespace in _quiet(["ctr", "--address", address, "namespaces", "list", "--quiet"]).split():
        ctr = ["ctr", "--address", address, "--namespace", namespace]
        for task in _quiet([*ctr, "tasks", "list", "--quiet"]).split():
            _quiet([*ctr, "tasks", "kill", "--signal", "SIGKILL", task])
            _quiet([*ctr, "tasks", "delete", "--force", task])
        for container in _quiet([*ctr, "containers", "list", "--quiet"]).split():
            _quiet([*ctr, "containers", "delete", container])


def _cleanup_containerd_dir(state_dir: Path) -> None:
    for point in sorted(_mounts_under(state_dir), key=len, reverse=True):
        subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)
    shutil.rmtree(state_dir, ignore_errors=True)


def image_refs(vestige_versions: tuple[str, ...] | None = None) -> ImageRefs:
    """The refs of the images (built first when missing or stale)."""
    return ensure_images(vestige_versions).refs
