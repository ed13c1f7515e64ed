"""Pure rules of the agent: exit codes, command lines, zip extraction, log tails."""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import pytest

from agent.cmdline import (
    CommandLineError,
    split_posix_args,
    split_windows_args,
    unquote_windows_token,
    windows_command_line,
    wine_msi_argv,
)
from agent.exitcodes import Outcome, interpret_exit_code
from agent.installers import InstallError, extract_zip, safe_name
from agent.process import read_tail

# --- exit codes ----------------------------------------------------------------


@pytest.mark.parametrize("code", [0, 1707])
def test_windows_success_codes_succeed_without_reboot(code: int) -> None:
    verdict = interpret_exit_code(code, windows_codes=True)
    assert verdict.outcome is Outcome.SUCCESS
    assert not verdict.reboot_required


@pytest.mark.parametrize("code", [3010, 1641])
def test_reboot_codes_succeed_and_ask_for_a_reboot(code: int) -> None:
    verdict = interpret_exit_code(code, windows_codes=True)
    assert verdict.outcome is Outcome.SUCCESS
    assert verdict.reboot_required


def test_another_installation_running_means_retry() -> None:
    assert interpret_exit_code(1618, windows_codes=True).outcome is Outcome.RETRY


@pytest.mark.parametrize("code", [1, 1603, 1620, 2**32 - 1])
def test_other_windows_codes_fail_and_name_the_code(code: int) -> None:
    verdict = interpret_exit_code(code, windows_codes=True)
    assert verdict.outcome is Outcome.FAILED
    assert str(code) in verdict.message


def test_1603_failure_says_what_it_means() -> None:
    assert "fatal error" in interpret_exit_code(1603, windows_codes=True).message


@pytest.mark.parametrize("code", [1, 3010 & 0xFF, 1707 & 0xFF, 67])
def test_native_posix_programs_fail_on_anything_but_zero(code: int) -> None:
    assert interpret_exit_code(code, windows_codes=False).outcome is Outcome.FAILED


def test_native_posix_zero_succeeds() -> None:
    assert interpret_exit_code(0, windows_codes=False).outcome is Outcome.SUCCESS


def test_killed_by_signal_is_a_failure_naming_the_signal() -> None:
    verdict = interpret_exit_code(-9, windows_codes=False)
    assert verdict.outcome is Outcome.FAILED
    assert "signal 9" in verdict.message


# --- Windows argument splitting ---------------------------------------------------


def test_msi_property_with_spaces_stays_one_quoted_token() -> None:
    tokens = split_windows_args(r'APPDIR="C:\My Apps\Dé ploy" /quiet')
    assert tokens == [r'APPDIR="C:\My Apps\Dé ploy"', "/quiet"]


def test_quoted_path_token_keeps_its_quotes() -> None:
    assert split_windows_args('"C:\\Program Files\\x" -s') == [
        '"C:\\Program Files\\x"',
        "-s",
    ]


def test_doubled_quotes_inside_a_value_are_one_quote() -> None:
    [token] = split_windows_args('MSG="say ""hi"" now"')
    assert unquote_windows_token(token) == 'MSG=say "hi" now'


def test_unterminated_quote_is_refused_with_a_clear_error() -> None:
    with pytest.raises(CommandLineError, match="unterminated quote"):
        split_windows_args('APPDIR="C:\\oops')


def test_empty_arguments_give_no_tokens() -> None:
    assert split_windows_args("   ") == []


def test_unquoted_token_value_is_what_the_program_sees() -> None:
    assert unquote_windows_token('APPDIR="C:\\My Apps"') == "APPDIR=C:\\My Apps"


def test_windows_command_line_quotes_paths_and_keeps_msi_properties_verbatim() -> None:
    line = windows_command_line(
        ["msiexec", "/i", r"C:\Pakete ü\setup 1.msi", "/qn"],
        ['INSTALLDIR="C:\\Program Files\\Ä b"', "ALLUSERS=1"],
    )
    assert line == (
        r'msiexec /i "C:\Pakete ü\setup 1.msi" /qn '
        r'INSTALLDIR="C:\Program Files\Ä b" ALLUSERS=1'
    )


def test_windows_command_line_round_trips_through_the_c_runtime_rules() -> None:
    argv = ["setup.exe", 'a "quoted" word', "trailing\\", "ünï cödé", ""]
    line = windows_command_line(argv)
    # list2cmdline is the inverse of the MS C runtime's argv parsing.
    assert line == subprocess.list2cmdline(argv)
    assert '"a \\"quoted\\" word"' in line
    assert '""' in line


def test_wine_argv_passes_property_value_unquoted_and_captures_errorlevel(
    tmp_path: Path,
) -> None:
    argv = wine_msi_argv(
        ["wine", "msiexec"],
        tmp_path / "a b.msi",
        tmp_path / "log.txt",
        tmp_path / "rc.txt",
        ['APPDIR="C:\\My Apps"'],
    )
    assert argv[:4] == ["wine", "cmd", "/c", "msiexec"]
    assert "APPDIR=C:\\My Apps" in argv
    assert argv[-5:-1] == ["&", "echo", "%ERRORLEVEL%", ">"]
    assert argv[5].startswith("Z:\\") and argv[5].endswith("\\a b.msi")


def test_posix_arguments_split_like_the_shell() -> None:
    assert split_posix_args("--dir 'a b' \"ü c\"") == ["--dir", "a b", "ü c"]


def test_posix_arguments_with_open_quote_are_refused() -> None:
    with pytest.raises(CommandLineError):
        split_posix_args("'open")


# --- names and zip ----------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["../../etc/passwd", "..\\..\\win.ini", "C:\\x\\setup.exe", "/abs/s.sh"]
)
def test_package_file_names_cannot_climb_out(name: str) -> None:
    assert "/" not in safe_name(name) and "\\" not in safe_name(name)
    assert safe_name(name) not in ("", ".", "..")


def _zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def test_zip_is_extracted_with_spaces_and_non_ascii_names(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "app.zip", {"bin/prog ü.txt": b"x", "read me.txt": b"y"})
    target = tmp_path / "Programme ä" / "App"
    assert extract_zip(archive, target) == 2
    assert (target / "bin" / "prog ü.txt").read_bytes() == b"x"


@pytest.mark.parametrize("evil", ["../outside.txt", "a/../../outside.txt", "/abs.txt"])
def test_zip_slip_entry_refuses_the_whole_archive(tmp_path: Path, evil: str) -> None:
    archive = _zip(tmp_path / "evil.zip", {"fine.txt": b"ok", evil: b"bad"})
    target = tmp_path / "target"
    with pytest.raises(InstallError, match="outside the target folder"):
        extract_zip(archive, target)
    assert not (tmp_path / "outside.txt").exists()
    assert not (target / "fine.txt").exists()


# --- log tails --------------------------------------------------------------------


def test_utf16_msiexec_log_tail_is_decoded(tmp_path: Path) -> None:
    log = tmp_path / "msi.log"
    log.write_bytes(
        "\ufeffline one\r\nMainEngineThread is returning 1603\r\n".encode("utf-16-le")
    )
    assert read_tail(log).endswith("MainEngineThread is returning 1603")


def test_tail_of_stray_bytes_never_fails(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    out.write_bytes(b"ok \xff\xfe\x80 broken \xc3")
    assert read_tail(out).startswith("ok ")


def test_tail_is_bounded(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    out.write_bytes(b"x" * 100_000 + b"END")
    tail = read_tail(out, limit=500)
    assert len(tail) <= 500 and tail.endswith("END")
