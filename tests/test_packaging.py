"""The package says one version, one licence and what changed: metadata, LICENSE and CHANGELOG agree."""
import importlib.metadata
import re
import tomllib
from pathlib import Path

import timm_frozenmix

REPO = Path(__file__).resolve().parents[1]


def test_the_version_is_written_once_and_the_metadata_reads_it():
    pyproject = tomllib.loads((REPO / 'pyproject.toml').read_text())
    assert 'version' not in pyproject['project'] and 'version' in pyproject['project']['dynamic']
    assert importlib.metadata.version('timm-frozenmix') == timm_frozenmix.__version__


def test_the_changelog_has_a_section_for_this_version():
    headings = re.findall(r'^## (\S+)', (REPO / 'CHANGELOG.md').read_text(), flags=re.M)
    assert headings and headings[0] == timm_frozenmix.__version__


def test_the_licence_file_is_the_one_pyproject_declares():
    pyproject = tomllib.loads((REPO / 'pyproject.toml').read_text())['project']
    assert pyproject['license'] == 'Apache-2.0' and pyproject['license-files'] == ['LICENSE']
    text = (REPO / 'LICENSE').read_text()
    assert 'Apache License' in text and 'Version 2.0, January 2004' in text
