"""The sample packages are real installers, built reproducibly from the repository."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from server.demo import load_sample_builder, samples_dir

builder = load_sample_builder()

pytestmark = pytest.mark.skipif(os.name == "nt", reason="POSIX script twin")


def run_script_sample(script: Path, install_root: Path | None) -> int:
    env = {k: v for k, v in os.environ.items() if k != "DEPLOY_INSTALL_ROOT"}
    if install_root is not None:
        env["DEPLOY_INSTALL_ROOT"] = str(install_root)
    result = subprocess.run(
        ["/bin/sh", str(script), "0"],  # "0": no pause between steps
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env=env,
        cwd=script.parent,
        check=False,
    )
    return result.returncode


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("samples")
    return {sample.kind: sample for sample in builder.build_samples(out)}


def test_script_sample_puts_the_application_under_the_install_root(built, tmp_path):
    status = run_script_sample(built["script"].path, tmp_path)

    app = tmp_path / "HelloDeploy"
    assert status == 0
    assert (app / "VERSION").read_text().strip() == builder.VERSION
    assert os.access(app / "bin" / "hello-deploy", os.X_OK)
    greeting = subprocess.run(
        [app / "bin" / "hello-deploy"], capture_output=True, text=True, check=True
    )
    assert "Hello Deploy" in greeting.stdout


def test_script_sample_records_every_installation_in_install_count_log(built, tmp_path):
    run_script_sample(built["script"].path, tmp_path)
    run_script_sample(built["script"].path, tmp_path)

    log = (tmp_path / "HelloDeploy" / "install-count.log").read_text().splitlines()
    assert len(log) == 2


def test_script_sample_without_install_root_fails_and_installs_nothing(built):
    status = run_script_sample(built["script"].path, None)

    assert status != 0
    assert not (built["script"].path.parent / "HelloDeploy").exists()


def test_script_sample_has_windows_twins_next_to_it(built):
    folder = built["script"].path.parent
    assert (folder / "install-hello-deploy.ps1").is_file()
    assert (folder / "install-hello-deploy.cmd").is_file()


def test_zip_sample_holds_the_portable_application(built):
    with zipfile.ZipFile(built["zip"].path) as archive:
        names = set(archive.namelist())
        assert archive.testzip() is None
    assert names == {"README.txt", "VERSION", "hello_portable.py"}


def test_zip_sample_is_byte_for_byte_reproducible(built, tmp_path):
    again = {s.kind: s for s in builder.build_samples(tmp_path, msi=False)}

    assert again["zip"].sha256 == built["zip"].sha256


@pytest.mark.skipif(shutil.which("wixl") is None, reason="wixl (msitools) missing")
def test_msi_sample_is_a_windows_installer_database(built):
    msi = built["msi"]
    ole_signature = bytes.fromhex("d0cf11e0a1b11ae1")

    assert msi.path.read_bytes()[:8] == ole_signature
    assert msi.installer_type == "msi"
    assert 'INSTALLCOLOR="sea green"' in msi.install_args


def test_builder_command_line_builds_every_sample_into_the_given_folder(tmp_path):
    result = subprocess.run(
        [sys.executable, str(samples_dir() / "build.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert (tmp_path / "install-hello-deploy.sh").is_file()
    assert (tmp_path / "hello-portable.zip").is_file()
