"""The package store keeps installers by sha256 and serves them to agents."""

import hashlib
import os
import subprocess

import aiohttp
import pytest

from server.errors import DiskFullError, InvalidRequestError
from tests.helpers import write_installer


def _auth(token):
    return {"Authorization": f"Bearer {token}"}


async def test_added_package_is_stored_under_its_sha256(server, tmp_path):
    content = b"echo hello\n" * 1000
    installer = write_installer(tmp_path / "setup.sh", content)

    software = await server.add_software(
        installer, name="Hello", version="2", installer_type="script"
    )

    assert software["sha256"] == hashlib.sha256(content).hexdigest()
    assert software["size"] == len(content)
    assert software["file_name"] == "setup.sh"
    stored = server.config.packages_dir / software["sha256"]
    assert stored.read_bytes() == content


async def test_identical_installer_is_stored_once(server, tmp_path):
    first = write_installer(tmp_path / "a.sh", b"same bytes")
    second = write_installer(tmp_path / "b.sh", b"same bytes")

    one = await server.add_software(first, name="A", installer_type="script")
    two = await server.add_software(second, name="B", installer_type="script")

    assert one["id"] != two["id"]
    assert one["sha256"] == two["sha256"]
    assert [p.name for p in server.config.packages_dir.iterdir()] == [one["sha256"]]


async def test_adding_an_installer_again_repairs_a_damaged_stored_copy(
    server, tmp_path
):
    content = b"echo the real installer\n" * 100
    installer = write_installer(tmp_path / "setup.sh", content)
    first = await server.add_software(installer, name="A", installer_type="script")
    stored = server.config.packages_dir / first["sha256"]
    stored.write_bytes(b"damaged on disk")

    await server.add_software(installer, name="A again", installer_type="script")

    assert stored.read_bytes() == content


async def test_add_software_reports_progress_up_to_done(server, tmp_path):
    installer = write_installer(tmp_path / "big.bin", os.urandom(3 * 1024 * 1024))
    fractions = []

    await server.add_software(
        installer, name="Big", installer_type="exe", progress=fractions.append
    )

    assert fractions == sorted(fractions)
    assert fractions[-1] == 1.0


async def test_missing_installer_is_a_clear_error(server, tmp_path):
    with pytest.raises(InvalidRequestError, match="Cannot read the installer"):
        await server.add_software(
            tmp_path / "nope.msi", name="Nope", installer_type="msi"
        )

    assert await server.list_software() == []


@pytest.fixture
def tiny_filesystem(tmp_path):
    """A 256 KiB tmpfs: a real full disk (needs permission to mount)."""
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mountpoint)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip("needs permission to mount a tiny tmpfs to fill a disk for real")
    yield mountpoint  # requested before the server, so unmounted after it stops
    subprocess.run(["umount", str(mountpoint)], check=True)


async def test_full_disk_is_a_clear_error_and_leaves_no_file(
    tiny_filesystem, server_factory, tmp_path
):
    server = await server_factory(data_dir=tiny_filesystem)
    installer = write_installer(tmp_path / "huge.exe", os.urandom(1024 * 1024))

    with pytest.raises(DiskFullError, match="Not enough disk space"):
        await server.add_software(installer, name="Huge", installer_type="exe")

    assert list(server.config.packages_dir.iterdir()) == []
    assert await server.list_software() == []


async def test_download_needs_the_enrollment_token(server, package):
    url = f"{server.url}/packages/{package['sha256']}"
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as missing:
            assert missing.status == 401
            assert (await missing.json())["error"]
        async with http.get(url, headers=_auth("wrong")) as wrong:
            assert wrong.status == 401


async def test_download_with_token_gives_file_and_length(server, package, tmp_path):
    url = f"{server.url}/packages/{package['sha256']}"
    async with (
        aiohttp.ClientSession() as http,
        http.get(url, headers=_auth(server.enrollment_token)) as response,
    ):
        body = await response.read()

    assert response.status == 200
    assert int(response.headers["Content-Length"]) == package["size"]
    assert hashlib.sha256(body).hexdigest() == package["sha256"]


async def test_download_honours_range_requests(server, tmp_path):
    content = bytes(range(256)) * 64
    software = await server.add_software(
        write_installer(tmp_path / "r.bin", content), name="R", installer_type="exe"
    )
    headers = {**_auth(server.enrollment_token), "Range": "bytes=1000-"}

    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{server.url}/packages/{software['sha256']}", headers=headers
        ) as response,
    ):
        body = await response.read()

    assert response.status == 206
    assert body == content[1000:]
    assert int(response.headers["Content-Length"]) == len(content) - 1000


@pytest.mark.parametrize("name", ["0" * 64, "not-a-hash", "..%2F..%2Ftokens.json"])
async def test_unknown_package_is_404_json(server, name):
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{server.url}/packages/{name}", headers=_auth(server.enrollment_token)
        ) as response,
    ):
        assert response.status == 404
        assert (await response.json())["error"]
