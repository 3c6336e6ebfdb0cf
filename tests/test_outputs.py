"""Commands check where they write first, and never overwrite or delete a file they did not create."""
import os
import stat

import pytest

from timm_frozenmix.core.errors import UsageError
from timm_frozenmix.io.outputs import check_output_folder, replace_atomically, staging_folder
from timm_frozenmix.io.reporting import replace_between_markers


def test_check_output_folder_creates_nothing_and_refuses_files(tmp_path):
    (tmp_path / 'file').write_text('mine')
    assert check_output_folder(tmp_path / 'new' / 'deeper') == (tmp_path / 'new' / 'deeper').resolve()
    assert check_output_folder(tmp_path) == tmp_path.resolve()
    with pytest.raises(UsageError, match='is a file'):
        check_output_folder(tmp_path / 'file')
    with pytest.raises(UsageError, match='lies under the file'):
        check_output_folder(tmp_path / 'file' / 'a' / 'b', '--report-dir')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['file']


def test_replace_atomically_leaves_a_users_temporary_file_alone(tmp_path):
    users = tmp_path / '.weights.bin.tmp'  # the name earlier versions wrote to, and then deleted
    users.write_text('mine')
    replace_atomically(tmp_path / 'weights.bin', lambda tmp: tmp.write_bytes(b'new'))
    assert (tmp_path / 'weights.bin').read_bytes() == b'new' and users.read_text() == 'mine'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['.weights.bin.tmp', 'weights.bin']


def test_replace_atomically_keeps_the_old_file_when_writing_fails(tmp_path):
    (tmp_path / 'weights.bin').write_bytes(b'old')

    def fail(tmp):
        tmp.write_bytes(b'half')
        raise OSError('disk full')
    with pytest.raises(OSError):
        replace_atomically(tmp_path / 'weights.bin', fail)
    assert (tmp_path / 'weights.bin').read_bytes() == b'old' and len(list(tmp_path.iterdir())) == 1


def test_replaced_files_get_the_permissions_of_a_plain_open(tmp_path):
    umask = os.umask(0o022)
    try:
        replace_atomically(tmp_path / 'x', lambda tmp: tmp.write_text('x'))
        (tmp_path / 'y').write_text('y')
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / 'x').stat().st_mode) == stat.S_IMODE((tmp_path / 'y').stat().st_mode) == 0o644


def test_staging_folder_is_fresh_and_removed(tmp_path):
    (tmp_path / '.staging-x').mkdir()
    with staging_folder(tmp_path / 'out') as staging:
        assert staging.parent == tmp_path / 'out' and not any(staging.iterdir())
        (staging / 'partial').write_text('x')
    assert list((tmp_path / 'out').iterdir()) == [] and (tmp_path / '.staging-x').is_dir()


def test_replace_between_markers_rewrites_only_the_generated_section(tmp_path):
    readme = tmp_path / 'README.md'
    readme.write_text('intro\n<!-- a -->\nold table\n<!-- /a -->\noutro\n')
    assert replace_between_markers(readme, '<!-- a -->', '<!-- /a -->', 'new table')
    assert readme.read_text() == 'intro\n<!-- a -->\nnew table\n<!-- /a -->\noutro\n'
    assert not replace_between_markers(readme, '<!-- b -->', '<!-- /b -->', 'other')
    assert readme.read_text() == 'intro\n<!-- a -->\nnew table\n<!-- /a -->\noutro\n'
