"""The artifact store: registered models' files, kept by content so a version outlives the run it came from.

Like MLflow's artifact store, the registry database records where a version's files are and the store holds them:
`MODELYARD_ARTIFACTS` (default `MODELYARD_HOME/artifacts`), laid out as `sha256/<hash>/` with one model folder
per distinct content. Registering the same files twice stores them once. Servers that share a registry
(PostgreSQL) must see the same store, so point MODELYARD_ARTIFACTS at storage every server mounts.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Callable

from modelyard.store.db import RegistryError, home

ENV_ROOT = "MODELYARD_ARTIFACTS"


def root() -> Path:
    """The artifact store's folder: MODELYARD_ARTIFACTS, else MODELYARD_HOME/artifacts."""
    value = os.environ.get(ENV_ROOT)
    return Path(value).expanduser() if value else home() / "artifacts"


def _files(folder: Path) -> list[Path]:
    return sorted((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.relative_to(folder).as_posix())


def content_hash(folder: Path) -> str:
    """SHA-256 of a manifest listing every file of `folder`: its relative path, size and SHA-256.

    Hashing a manifest rather than the files' bytes end to end keeps file boundaries unambiguous: moving bytes from
    one file to another, or renaming one, changes the hash.
    """
    manifest = [[f.relative_to(folder).as_posix(), f.stat().st_size, _file_sha256(f).hexdigest()]
                for f in _files(folder)]
    return hashlib.sha256(json.dumps(manifest, separators=(",", ":")).encode()).hexdigest()


def legacy_content_hash(folder: Path) -> str:
    """The hash registry rows written before the artifact store recorded: names and bytes, end to end."""
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(folder)).encode() + b"\0")
        with f.open("rb") as fh:
            while chunk := fh.read(1 << 20):  # one running hash over every file: file_digest cannot continue one
                h.update(chunk)
    return h.hexdigest()


def _file_sha256(path: Path):
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256")


def put(model_dir: Path, check: Callable[[Path], None]) -> tuple[str, str]:
    """Copy a model folder into the store and return (address, content hash); the address is `sha256/<hash>`.

    The copy is hashed and passed to `check` (which raises if the model is not fit to register) before it takes its
    place, so what was checked is what is stored. The same content already stored is kept, not copied again; a
    stored copy that no longer matches its hash is replaced by the fresh one.
    """
    _check_source(model_dir)
    store = root()
    tmp = store / "tmp" / uuid.uuid4().hex
    try:
        try:
            tmp.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(model_dir, tmp)
        except OSError as exc:
            raise RegistryError(f"cannot copy {model_dir} into the artifact store {store}: {exc.strerror or exc}. "
                                f"Check that {ENV_ROOT} (or MODELYARD_HOME) names a folder you can write") from None
        digest = content_hash(tmp)
        check(tmp)
        address = f"sha256/{digest}"
        _place(tmp, store / address, digest)
        return address, digest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _check_source(model_dir: Path) -> None:
    """Only the folder's own files are stored. A link out of it would copy its target (any file the registering
    user can read, /etc/passwd included) into the store; a link to a folder can loop; a pipe blocks the copy."""
    base = Path(model_dir).resolve()
    for p in sorted(Path(model_dir).rglob("*")):
        if p.is_symlink():
            target = p.resolve()
            if not target.is_relative_to(base) or target.is_dir():
                raise RegistryError(f"cannot register {model_dir}: {p} is a link to {target}, "
                                    f"{'a folder' if target.is_dir() else 'outside the model folder'}; replace it "
                                    "with the file itself, or remove it")
        if not (p.is_file() or p.is_dir()):
            raise RegistryError(f"cannot register {model_dir}: {p} is not a regular file or folder (a pipe, a "
                                "socket or a broken link); remove it")


def _place(tmp: Path, target: Path, digest: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_dir():
        if content_hash(target) == digest:
            return
        damaged = target.with_name(f"{target.name}.damaged-{uuid.uuid4().hex[:8]}")
        target.rename(damaged)  # aside first, so the rename below never meets a half-deleted folder
        shutil.rmtree(damaged, ignore_errors=True)
    try:
        tmp.rename(target)
    except OSError:  # another registration of the same content got there first
        if not (target.is_dir() and content_hash(target) == digest):
            raise


def folder(address: str) -> Path:
    """Where the store keeps the files at `address` (they may be missing)."""
    return root() / address


def verified(address: str, digest: str, what: str) -> Path:
    """The model folder at `address`, after checking that its files still hash to `digest`.

    Raises:
        RegistryError: the folder is missing from this store, or its files changed since they were registered.
    """
    path = folder(address)
    if not path.is_dir():
        raise RegistryError(f"{what}: its files are not in the artifact store: {path} does not exist. Servers that "
                            f"share a registry must mount the same store: set {ENV_ROOT} to it (now {root()}), or "
                            "register the run again")
    if content_hash(path) != digest:
        raise RegistryError(f"{what}: the files in {path} have changed since they were registered (content hash "
                            "mismatch); refusing to use them. Register the run again to store a fresh copy")
    return path
