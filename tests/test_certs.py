"""The relay's certificate folder is trusted only when nobody else could have
written it: links are not followed, loose modes are refused in one line."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from ctipipe.core.cli import CommandError
from ctipipe.relay import certs


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    """One certificate made for the module (making a key costs a moment)."""
    folder = tmp_path_factory.mktemp("data") / "ctipipe"
    certs.relay_certificate(folder)
    return folder


def _copy(made: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "ctipipe"
    folder.mkdir(mode=0o700)
    for name, mode in ((certs.CERT_NAME, 0o644), (certs.KEY_NAME, 0o600)):
        (folder / name).write_bytes((made / name).read_bytes())
        os.chmod(folder / name, mode)
    return folder


def test_a_folder_made_by_the_relay_is_private_and_used_again(made):
    assert os.stat(made).st_mode & 0o777 == 0o700
    assert os.stat(made / certs.KEY_NAME).st_mode & 0o777 == 0o600
    cert, key, fresh = certs.relay_certificate(made)
    assert (cert, key, fresh) == (made / certs.CERT_NAME, made / certs.KEY_NAME, False)


def test_a_lock_planted_as_a_link_truncates_nothing(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    folder = tmp_path / "ctipipe"
    folder.mkdir(mode=0o700)
    (folder / ".lock").symlink_to(victim)
    with pytest.raises(CommandError, match=r"lock file .*\.lock is a symbolic link: remove it"):
        certs.relay_certificate(folder)
    assert victim.read_text() == "precious"


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o722])
def test_a_folder_others_can_write_is_refused_with_the_fix(mode, made, tmp_path):
    folder = _copy(made, tmp_path)
    os.chmod(folder, mode)
    with pytest.raises(CommandError) as refused:
        certs.relay_certificate(folder)
    said = str(refused.value)
    assert str(folder) in said and "other users" in said and "chmod" in said


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_key_others_can_read_is_refused(mode, made, tmp_path):
    folder = _copy(made, tmp_path)
    os.chmod(folder / certs.KEY_NAME, mode)
    with pytest.raises(CommandError, match=r"key .* can be read or written by other users"):
        certs.relay_certificate(folder)


def test_a_certificate_others_can_write_is_refused(made, tmp_path):
    folder = _copy(made, tmp_path)
    os.chmod(folder / certs.CERT_NAME, 0o666)
    with pytest.raises(CommandError, match="certificate .* can be written by other users"):
        certs.relay_certificate(folder)


@pytest.mark.parametrize("planted", [certs.KEY_NAME, certs.CERT_NAME])
def test_a_key_or_certificate_planted_as_a_link_is_refused(planted, made, tmp_path):
    folder = _copy(made, tmp_path)
    (tmp_path / "elsewhere").write_bytes((folder / planted).read_bytes())
    (folder / planted).unlink()
    (folder / planted).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(CommandError, match="is a symbolic link"):
        certs.relay_certificate(folder)


def test_a_folder_that_is_a_link_is_refused(made, tmp_path):
    (tmp_path / "ctipipe").symlink_to(made)
    with pytest.raises(CommandError, match="folder .* is a symbolic link"):
        certs.relay_certificate(tmp_path / "ctipipe")


@pytest.mark.parametrize("value", ["relative/data", ".", ""])
def test_a_relative_xdg_data_home_is_ignored(value, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", value)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert certs.data_dir() == tmp_path / ".local" / "share" / "ctipipe"


def test_an_absolute_xdg_data_home_is_used(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert certs.data_dir() == tmp_path / "ctipipe"
