"""Build the frozen `deploy-console` and `deploy-agent` bundles and their setups.

One command, from the repository root with the project installed in a virtual
environment (`pip install -e '.[console,build]'`):

    python build_installer.py                  # both bundles, setups or tarballs
    python build_installer.py --self-test      # ... then prove they run without Python

PyInstaller makes one folder per program (`dist/deploy-console/`,
`dist/deploy-agent/`). On Windows the Inno Setup scripts in `resources/installer/` are
compiled when ISCC is found; on Linux each bundle becomes a `.tar.gz`, the agent's with
its systemd unit. What the programs load by name at run time (engine.io's aiohttp
driver, SQLAlchemy's dialects, Alembic's migrations, Qt's plugins) is declared in the
hooks under `resources/installer/hooks/`; a bundle that misses one fails `--self-test`.
"""

from __future__ import annotations

import argparse
import ast
import importlib.metadata
import os
import platform
import shlex
import shutil
import string
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent
INSTALLER_DIR = ROOT / "resources" / "installer"
DIST_NAME = "deploy-console"
"""The distribution name in pyproject.toml; its metadata is copied into the bundles."""

IS_WINDOWS = sys.platform == "win32"
EXE_SUFFIX = ".exe" if IS_WINDOWS else ""
SELF_TEST_TIMEOUT_S = 300
STARTED_LINE = "self-test: server listening on"
"""The console's first self-test line: window shown, embedded server accepting."""


class BuildError(Exception):
    """A build step failed; the message says which and what to do."""


@dataclass(frozen=True)
class Bundle:
    """One program to freeze: its name, entry script and what PyInstaller must add."""

    key: str
    name: str
    description: str
    entry: Path
    windowed: bool
    setup_script: str
    excludes: tuple[str, ...] = ()
    hidden_imports: tuple[str, ...] = ()
    loaded_by_path: tuple[str, ...] = ()
    """Globs (from the repository root) of Python files the program executes from
    disk rather than imports; what they import must be bundled all the same."""
    with_resources: bool = False
    extra_files: tuple[Path, ...] = field(default=())

    def executable(self, dist_dir: Path) -> Path:
        return dist_dir / self.name / f"{self.name}{EXE_SUFFIX}"


# Modules nobody here imports but PyInstaller would follow from optional imports.
_NEVER = ("tkinter", "_tkinter", "pytest", "_pytest", "IPython", "matplotlib")
# qasync probes every Qt binding by name; only PySide6 may be collected, and of
# PySide6 only what the console uses (QtCore, QtGui, QtWidgets).
_OTHER_QT = ("PyQt5", "PyQt6", "PySide2")
_UNUSED_QT = tuple(
    f"PySide6.{name}"
    for name in [
        *("QtNetwork", "QtQml", "QtQuick", "QtQuickWidgets", "QtQuickControls2"),
        *("QtOpenGL", "QtOpenGLWidgets", "QtSql", "QtTest", "QtXml", "QtConcurrent"),
        *("QtDBus", "QtPrintSupport", "QtSvg", "QtSvgWidgets", "QtUiTools"),
        *("QtDesigner", "QtHelp", "QtStateMachine", "QtPdf", "QtPdfWidgets"),
        *("QtMultimedia", "QtWebEngineCore", "QtCharts"),
    ]
)

BUNDLES = {
    "console": Bundle(
        key="console",
        name="deploy-console",
        description="Deploy Console",
        entry=INSTALLER_DIR / "entry" / "deploy_console.py",
        windowed=True,
        setup_script="console.iss",
        excludes=_NEVER + _OTHER_QT + _UNUSED_QT,
        # `deploy-console -m agent` runs the agent (demo fleet, self-test default).
        hidden_imports=("agent.cli",),
        loaded_by_path=("server/migrations/**/*.py", "resources/samples/build.py"),
        with_resources=True,
    ),
    "agent": Bundle(
        key="agent",
        name="deploy-agent",
        description="Deploy Console agent",
        entry=INSTALLER_DIR / "entry" / "deploy_agent.py",
        windowed=False,
        setup_script="agent.iss",
        excludes=_NEVER + _OTHER_QT + ("PySide6", "shiboken6", "qasync"),
        extra_files=(INSTALLER_DIR / "deploy-agent.service",),
    ),
}


# --- version -------------------------------------------------------------------


def project_version() -> str:
    """The version in pyproject.toml, checked against the installed metadata.

    The bundles carry the installed distribution's metadata (so the programs'
    `importlib.metadata.version()` works frozen); a stale editable install would
    stamp the wrong version, so that is refused with the command that fixes it.
    """
    with (ROOT / "pyproject.toml").open("rb") as fh:
        declared = tomllib.load(fh)["project"]["version"]
    try:
        installed = importlib.metadata.version(DIST_NAME)
    except importlib.metadata.PackageNotFoundError:
        installed = None
    if installed != declared:
        raise BuildError(
            f"pyproject.toml says version {declared} but the installed "
            f"{DIST_NAME} is {installed or 'missing'}; run "
            f"`{sys.executable} -m pip install -e '.[console,build]'` first"
        )
    return declared


def windows_version_file(bundle: Bundle, version: str, work_dir: Path) -> Path:
    """Fill the Windows version-resource template for one executable."""
    numbers = [int(part) for part in version.split(".")[:4] if part.isdigit()]
    numbers += [0] * (4 - len(numbers))
    template = string.Template(
        (INSTALLER_DIR / "version_info.txt.in").read_text(encoding="utf-8")
    )
    target = work_dir / f"{bundle.name}-version.txt"
    target.write_text(
        template.substitute(
            exe_name=bundle.name,
            description=bundle.description,
            version=version,
            version_tuple=repr(tuple(numbers)),
        ),
        encoding="utf-8",
    )
    return target


# --- PyInstaller ---------------------------------------------------------------


def imports_of(source_file: Path) -> set[str]:
    """Absolute module names a Python file imports, read without running it."""
    tree = ast.parse(source_file.read_bytes(), str(source_file))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def hidden_imports(bundle: Bundle) -> list[str]:
    """The bundle's declared hidden imports plus those of its path-loaded files."""
    names = set(bundle.hidden_imports)
    for pattern in bundle.loaded_by_path:
        for source_file in sorted(ROOT.glob(pattern)):
            names |= imports_of(source_file)
    names.discard("__future__")
    return sorted(names)


def _data_arg(source: Path, dest: str) -> str:
    return f"{source}{os.pathsep}{dest}"


def pyinstaller_command(
    bundle: Bundle, *, version: str, dist_dir: Path, work_dir: Path, clean: bool
) -> list[str]:
    """The PyInstaller command line that freezes `bundle` into `dist_dir`."""
    command = [
        sys.executable,
        "-m",
        "PyInstaller",
        "--noconfirm",
        "--onedir",
        "--log-level=WARN",
        f"--name={bundle.name}",
        f"--distpath={dist_dir}",
        f"--workpath={work_dir / bundle.name}",
        f"--specpath={work_dir}",
        f"--paths={ROOT}",
        f"--additional-hooks-dir={INSTALLER_DIR / 'hooks'}",
        f"--copy-metadata={DIST_NAME}",
    ]
    if clean:
        command.append("--clean")
    if not IS_WINDOWS:
        # Debug symbols are most of libpython's size; Windows DLLs have none.
        command.append("--strip")
    command += [f"--exclude-module={name}" for name in bundle.excludes]
    command += [f"--hidden-import={name}" for name in hidden_imports(bundle)]
    if bundle.with_resources:
        for item in sorted((ROOT / "resources").iterdir()):
            if item.name != "installer":
                command.append(
                    f"--add-data={_data_arg(item, f'resources/{item.name}')}"
                )
    if IS_WINDOWS:
        command.append("--windowed" if bundle.windowed else "--console")
        version_file = windows_version_file(bundle, version, work_dir)
        command.append(f"--version-file={version_file}")
        icon = ROOT / "resources" / "icons" / f"{bundle.name}.ico"
        if icon.is_file():
            command.append(f"--icon={icon}")
    command.append(str(bundle.entry))
    return command


def freeze(
    bundle: Bundle, *, version: str, dist_dir: Path, work_dir: Path, clean: bool
) -> float:
    """Run PyInstaller for one bundle; returns the seconds it took.

    Each bundle gets its own PyInstaller cache (stripped binaries) under the work
    folder, so two bundles can be frozen at the same time without sharing one.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    if clean:
        shutil.rmtree(work_dir / bundle.name, ignore_errors=True)
        shutil.rmtree(work_dir / f"{bundle.name}-cache", ignore_errors=True)
    command = pyinstaller_command(
        bundle, version=version, dist_dir=dist_dir, work_dir=work_dir, clean=clean
    )
    env = {
        **os.environ,
        "PYINSTALLER_CONFIG_DIR": str(work_dir / f"{bundle.name}-cache"),
    }
    print(f"build: freezing {bundle.name} {version}", flush=True)
    started = time.monotonic()
    result = subprocess.run(command, cwd=ROOT, env=env, check=False)
    if result.returncode != 0:
        raise BuildError(
            f"PyInstaller failed for {bundle.name} (exit {result.returncode})"
        )
    for extra in bundle.extra_files:
        shutil.copy2(extra, dist_dir / bundle.name / extra.name)
    return time.monotonic() - started


# --- setups --------------------------------------------------------------------


def find_iscc(explicit: str | None) -> list[str] | None:
    """The Inno Setup compiler command: --iscc, $ISCC, PATH, or its usual folders."""
    for candidate in (explicit, os.environ.get("ISCC")):
        if candidate:
            return shlex.split(candidate, posix=not IS_WINDOWS)
    found = shutil.which("ISCC") or shutil.which("iscc")
    if found:
        return [found]
    if IS_WINDOWS:
        for base in (
            os.environ.get("PROGRAMFILES(X86)"),
            os.environ.get("PROGRAMFILES"),
        ):
            if base and (Path(base) / "Inno Setup 6" / "ISCC.exe").is_file():
                return [str(Path(base) / "Inno Setup 6" / "ISCC.exe")]
    return None


def _host_path(path: Path, iscc: list[str]) -> str:
    """A path as the compiler sees it: Windows form when ISCC runs under Wine."""
    if IS_WINDOWS or Path(iscc[0]).name != "wine":
        return str(path)
    converted = subprocess.run(
        ["winepath", "-w", str(path)], capture_output=True, text=True, check=True
    )
    return converted.stdout.strip()


def compile_setup(
    bundle: Bundle, *, iscc: list[str], version: str, dist_dir: Path
) -> Path:
    """Compile the bundle's Inno Setup script into `dist_dir`; returns the setup."""
    from server.config import DEFAULT_PORT  # only the number, no server start-up

    output_name = f"{bundle.name}-{version}-setup"
    command = [
        *iscc,
        "/Q",
        f"/DAppVersion={version}",
        f"/DSourceDir={_host_path(dist_dir / bundle.name, iscc)}",
        f"/DServerPort={DEFAULT_PORT}",
        f"/O{_host_path(dist_dir, iscc)}",
        f"/F{output_name}",
        _host_path(INSTALLER_DIR / bundle.setup_script, iscc),
    ]
    print(f"build: compiling {bundle.setup_script}", flush=True)
    result = subprocess.run(command, cwd=INSTALLER_DIR, check=False)
    if result.returncode != 0:
        raise BuildError(
            f"ISCC failed for {bundle.setup_script} (exit {result.returncode})"
        )
    return dist_dir / f"{output_name}.exe"


def make_tarball(bundle: Bundle, *, version: str, dist_dir: Path) -> Path:
    """Pack the bundle folder as `<name>-<version>-linux-<machine>.tar.gz`."""
    target = dist_dir / f"{bundle.name}-{version}-linux-{platform.machine()}.tar.gz"
    print(f"build: packing {target.name}", flush=True)
    # Level 6 packs within a few percent of 9 in a fraction of the time.
    with tarfile.open(target, "w:gz", compresslevel=6) as tar:
        tar.add(dist_dir / bundle.name, arcname=bundle.name)
    return target


# --- self-test -----------------------------------------------------------------


def minimal_environment(home: Path) -> dict[str, str]:
    """An environment with no virtual environment and no Python on any path.

    What a technician's machine has: the system folders, a home, a temp folder.
    Qt is told to draw offscreen so the console runs without a display.
    """
    env = {"HOME": str(home), "QT_QPA_PLATFORM": "offscreen", "LANG": "C.UTF-8"}
    if IS_WINDOWS:
        for name in ("SYSTEMROOT", "WINDIR", "COMSPEC", "PROGRAMDATA"):
            if name in os.environ:
                env[name] = os.environ[name]
        env["PATH"] = str(Path(os.environ.get("SYSTEMROOT", r"C:\Windows"), "System32"))
        env.update(
            USERPROFILE=str(home),
            APPDATA=str(home / "AppData" / "Roaming"),
            LOCALAPPDATA=str(home / "AppData" / "Local"),
            TEMP=str(home),
            TMP=str(home),
        )
    else:
        env["PATH"] = "/usr/bin:/bin"
        env["TMPDIR"] = str(home)
    return env


@dataclass
class RunResult:
    """What a frozen program did: exit code, output lines, and when they came."""

    returncode: int
    lines: list[str]
    line_times_s: list[float]
    total_s: float

    def seconds_to(self, prefix: str) -> float | None:
        """Seconds from launch to the first output line starting with `prefix`."""
        for line, seconds in zip(self.lines, self.line_times_s, strict=True):
            if line.startswith(prefix):
                return seconds
        return None


def run_frozen(
    command: list[str], *, env: dict[str, str], timeout_s: float, echo: bool = True
) -> RunResult:
    """Run a frozen program, echoing its output and timing each line.

    The program is killed (and the result says so by its exit code) past timeout_s.
    """
    started = time.monotonic()
    lines: list[str] = []
    line_times_s: list[float] = []
    with subprocess.Popen(
        command,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    ) as proc:
        killer = threading.Timer(timeout_s, proc.kill)
        killer.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                line_times_s.append(time.monotonic() - started)
                lines.append(line.rstrip("\n"))
                if echo:
                    print(f"  | {lines[-1]}", flush=True)
            returncode = proc.wait()
        finally:
            killer.cancel()
    return RunResult(returncode, lines, line_times_s, time.monotonic() - started)


def agent_command_arg(agent_exe: Path) -> str:
    """The agent executable as one `--agent-cmd` string the console can split."""
    if IS_WINDOWS:
        return subprocess.list2cmdline([str(agent_exe)])
    return shlex.quote(str(agent_exe))


def self_test(dist_dir: Path) -> dict[str, float]:
    """Run the frozen agent's --version and the frozen console's --self-test.

    Both run in `minimal_environment`; raises BuildError when either fails.
    Returns timings: the console's start-up (launch to window shown and server
    listening) and the whole self-test.
    """
    agent_exe = BUNDLES["agent"].executable(dist_dir)
    console_exe = BUNDLES["console"].executable(dist_dir)
    with tempfile.TemporaryDirectory(prefix="deploy-selftest-") as tmp:
        home = Path(tmp)
        env = minimal_environment(home)

        print(f"self-test: {agent_exe.name} --version", flush=True)
        version = run_frozen([str(agent_exe), "--version"], env=env, timeout_s=60)
        if version.returncode != 0:
            raise BuildError(f"frozen agent --version exited {version.returncode}")

        print(f"self-test: {console_exe.name} --self-test", flush=True)
        run = run_frozen(
            [
                str(console_exe),
                "--self-test",
                "--data-dir",
                str(home / "console-data"),
                "--agent-cmd",
                agent_command_arg(agent_exe),
            ],
            env=env,
            timeout_s=SELF_TEST_TIMEOUT_S,
        )
        if run.returncode != 0:
            raise BuildError(f"frozen console --self-test exited {run.returncode}")
    return {
        "console_startup_s": run.seconds_to(STARTED_LINE) or run.total_s,
        "console_self_test_s": run.total_s,
    }


# --- summary -------------------------------------------------------------------


def folder_size(path: Path) -> int:
    """Bytes on disk; the symlinks PyInstaller makes for Qt's libraries count once."""
    return sum(
        item.stat().st_size
        for item in path.rglob("*")
        if item.is_file() and not item.is_symlink()
    )


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def print_summary(
    built: list[Bundle],
    *,
    dist_dir: Path,
    seconds: dict[str, float],
    build_s: float,
    packages: dict[str, list[Path]],
    timings: dict[str, float] | None,
) -> None:
    print("\nsummary:")
    for bundle in built:
        folder = dist_dir / bundle.name
        line = f"  {bundle.name:15} {_mib(folder_size(folder)):>11} folder"
        for package in packages.get(bundle.key, []):
            line += f", {_mib(package.stat().st_size)} {package.name}"
        line += f"  (built in {seconds[bundle.key]:.0f} s)"
        print(line)
    print(f"  build time: {build_s:.0f} s (freezing, packing, setups)")
    if timings:
        print(
            f"  frozen console start-up (window shown, server listening): "
            f"{timings['console_startup_s']:.1f} s; "
            f"whole self-test: {timings['console_self_test_s']:.1f} s"
        )


# --- command line --------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="build_installer.py",
        description=(
            "Freeze deploy-console and deploy-agent with PyInstaller (one folder "
            "each), then make their setups: Inno Setup on Windows (when ISCC is "
            "found), a .tar.gz per bundle on Linux (the agent's with a systemd unit)."
        ),
    )
    parser.add_argument(
        "--only",
        choices=sorted(BUNDLES),
        help="build just this bundle (default: both); --self-test needs both",
    )
    parser.add_argument(
        "--clean",
        action="store_true",
        help="remove PyInstaller's cache and earlier output first (slower, surer)",
    )
    parser.add_argument(
        "--dist",
        type=Path,
        default=ROOT / "dist",
        metavar="DIR",
        help="where bundles, tarballs and setups go (default: %(default)s)",
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=ROOT / "build",
        metavar="DIR",
        help="PyInstaller's work folder and its spec files (default: %(default)s)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        choices=(1, 2),
        default=2,
        help=(
            "bundles frozen at the same time (default: %(default)s; each PyInstaller "
            "run uses about one core)"
        ),
    )
    parser.add_argument(
        "--skip-setup",
        action="store_true",
        help="freeze only: no Inno Setup compile, no tarballs",
    )
    parser.add_argument(
        "--iscc",
        metavar="CMD",
        help=(
            "Inno Setup compiler to use, e.g. 'C:/Tools/ISCC.exe' or "
            "'wine /opt/inno/ISCC.exe' (default: $ISCC, then ISCC on PATH, then "
            "on Windows Inno Setup 6's install folders)"
        ),
    )
    parser.add_argument(
        "--self-test",
        action="store_true",
        help=(
            "after building, run the frozen 'deploy-agent --version' and "
            "'deploy-console --self-test' (offscreen, one real deployment to the "
            "frozen agent) with no virtual environment on the path; exit 1 on failure"
        ),
    )
    args = parser.parse_args(argv)
    if args.self_test and args.only:
        parser.error("--self-test runs both programs; drop --only")
    args.dist = args.dist.resolve()
    args.work = args.work.resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    built = [BUNDLES[args.only]] if args.only else list(BUNDLES.values())
    started = time.monotonic()
    try:
        version = project_version()
        args.dist.mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futures = {
                bundle.key: pool.submit(
                    freeze,
                    bundle,
                    version=version,
                    dist_dir=args.dist,
                    work_dir=args.work,
                    clean=args.clean,
                )
                for bundle in built
            }
            seconds = {key: future.result() for key, future in futures.items()}

        packages: dict[str, list[Path]] = {bundle.key: [] for bundle in built}
        if not args.skip_setup:
            iscc = find_iscc(args.iscc)
            if IS_WINDOWS and not iscc:
                print("build: ISCC not found; setups skipped (see --iscc)")
            for bundle in built:
                if not IS_WINDOWS:
                    packages[bundle.key].append(
                        make_tarball(bundle, version=version, dist_dir=args.dist)
                    )
                if iscc:
                    packages[bundle.key].append(
                        compile_setup(
                            bundle, iscc=iscc, version=version, dist_dir=args.dist
                        )
                    )

        build_s = time.monotonic() - started
        timings = self_test(args.dist) if args.self_test else None
    except BuildError as exc:
        print(f"build_installer: error: {exc}", file=sys.stderr)
        return 1
    print_summary(
        built,
        dist_dir=args.dist,
        seconds=seconds,
        build_s=build_s,
        packages=packages,
        timings=timings,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
