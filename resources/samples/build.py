"""Build the demo's sample packages from the sources next to this file.

Pure standard library (zipfile, shutil, hashlib, subprocess), so it runs anywhere the
repository is checked out: `python resources/samples/build.py [--out DIR]`. The demo
(`server/demo.py`) and the end-to-end tests import it by path and call
`build_samples(out_dir)`, which returns one `SamplePackage` per built installer:

- a script installer (`install-hello-deploy.sh` on POSIX, `.ps1` on Windows; the
  `.cmd` twin is copied along) that puts "Hello Deploy" under `DEPLOY_INSTALL_ROOT`;
- a portable zip of the `portable/HelloPortable` folder, byte-for-byte reproducible;
- an MSI built with `wixl` (msitools) from `msi/hello-msi.wxs`, when wixl is present.
  TODO(demo): not byte-reproducible (wixl stamps a new package code and time on
  every build), so the demo finds an MSI already in the library by name + version.
  TODO(demo): the Windows twins (.ps1, .cmd) are not run by any test here.

Blocking (file copies, zip, a wixl subprocess): call it from a worker thread when an
event loop is running.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

SAMPLES_DIR = Path(__file__).resolve().parent
VERSION = "1.0.0"

SCRIPT_NAME = "Hello Deploy"
ZIP_NAME = "Hello Portable"
MSI_NAME = "Hello MSI"

# Every zip entry gets this timestamp so that two builds give the same bytes (and so
# the same sha256: the server then stores the package once).
_ZIP_DATE_TIME = (2024, 1, 1, 0, 0, 0)


class SampleBuildError(Exception):
    """A sample could not be built; `str()` says which one and why."""


@dataclass(frozen=True)
class SamplePackage:
    """One built sample installer and the library fields it should be added with."""

    kind: str
    """"script", "zip" or "msi"."""
    path: Path
    name: str
    version: str
    installer_type: str
    install_args: str
    timeout_s: int
    sha256: str
    size: int


def wixl_available() -> bool:
    """Whether msitools' `wixl` (needed for the MSI sample) is on PATH."""
    return shutil.which("wixl") is not None


def build_samples(
    out_dir: Path, *, windows: bool | None = None, msi: bool = True
) -> list[SamplePackage]:
    """Build every sample into `out_dir` and describe them; rebuilding is cheap.

    Args:
        out_dir: created if missing; existing sample files in it are replaced.
        windows: pick the Windows script twin (`.ps1`); default: this machine's OS.
        msi: build the MSI too (skipped, with a log line, when wixl is missing).
    """
    if windows is None:
        windows = os.name == "nt"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    samples = [_build_script(out_dir, windows=windows), _build_zip(out_dir)]
    if msi and wixl_available():
        samples.append(build_msi(out_dir))
    elif msi:
        logger.info("MSI sample not built: wixl (msitools) is not installed")
    return samples


def write_zip(source_dir: Path, destination: Path) -> Path:
    """Zip the files under `source_dir` (paths relative to it), reproducibly.

    Entries are sorted, dated `_ZIP_DATE_TIME` and stored with fixed permissions, so
    the same folder always gives the same bytes. Written to a temporary name first.
    """
    files = sorted(p for p in Path(source_dir).rglob("*") if p.is_file())
    partial = destination.with_name(destination.name + ".part")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for file in files:
            entry = zipfile.ZipInfo(
                file.relative_to(source_dir).as_posix(), date_time=_ZIP_DATE_TIME
            )
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = 0o644 << 16
            archive.writestr(entry, file.read_bytes())
    partial.replace(destination)
    return destination


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _describe(kind: str, path: Path, name: str, installer_type: str, **extra):
    return SamplePackage(
        kind=kind,
        path=path,
        name=name,
        version=VERSION,
        installer_type=installer_type,
        install_args=extra.get("install_args", ""),
        timeout_s=extra.get("timeout_s", 300),
        sha256=sha256_of(path),
        size=path.stat().st_size,
    )


def _build_script(out_dir: Path, *, windows: bool) -> SamplePackage:
    source = SAMPLES_DIR / "script"
    for twin in source.glob("install-hello-deploy.*"):
        shutil.copyfile(twin, out_dir / twin.name)
    chosen = out_dir / (
        "install-hello-deploy.ps1" if windows else "install-hello-deploy.sh"
    )
    if not windows:
        chosen.chmod(0o755)
    return _describe("script", chosen, SCRIPT_NAME, "script", timeout_s=120)


def _build_zip(out_dir: Path) -> SamplePackage:
    destination = write_zip(
        SAMPLES_DIR / "portable" / "HelloPortable", out_dir / "hello-portable.zip"
    )
    return _describe("zip", destination, ZIP_NAME, "zip", timeout_s=120)


def build_msi(out_dir: Path) -> SamplePackage:
    """Build the MSI sample with wixl; raises `SampleBuildError` if wixl fails."""
    source = SAMPLES_DIR / "msi"
    destination = out_dir / "hello-msi.msi"
    command = [
        "wixl",
        "--arch",
        "x64",
        "--define",
        f"Version={VERSION}",
        "--output",
        str(destination),
        "hello-msi.wxs",
    ]
    # wixl resolves each File's Source against its working directory.
    result = subprocess.run(
        command, cwd=source, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SampleBuildError(
            f"wixl could not build the MSI sample (exit {result.returncode}): "
            f"{(result.stderr or result.stdout).strip()[-2000:]}"
        )
    return _describe(
        "msi", destination, MSI_NAME, "msi", install_args='INSTALLCOLOR="sea green"'
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=SAMPLES_DIR / "dist", help="output folder"
    )
    parser.add_argument(
        "--windows", action="store_true", help="use the Windows script twin (.ps1)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    try:
        samples = build_samples(args.out, windows=args.windows or None)
    except (OSError, SampleBuildError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for sample in samples:
        fields = asdict(sample)
        print(f"{fields['kind']:<6} {fields['path']}  sha256={fields['sha256']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
