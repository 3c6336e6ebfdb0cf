"""README is a short front door, and every relative link in it and in the pages under docs/ leads somewhere."""
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / 'README.md'
PAGES = [README, *sorted((REPO / 'docs').glob('*.md'))]
README_MAX_LINES = 200

FENCE = re.compile(r'^(```|~~~).*?^\1[^\n]*$', flags=re.M | re.S)
CODE_SPAN = re.compile(r'`[^`\n]*`')
LINK = re.compile(r'!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)')
HEADING = re.compile(r'^#{1,6}\s+(.+?)\s*#*\s*$', flags=re.M)


def prose(text: str) -> str:
    """Markdown without code blocks, and with code spans emptied, so code that looks like a link is not one."""
    return CODE_SPAN.sub('``', FENCE.sub('', text))


def links(text: str) -> list:
    return LINK.findall(prose(text))


def anchors(text: str) -> set:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    found, seen = set(), {}
    for heading in HEADING.findall(FENCE.sub('', text)):
        slug = re.sub(r'[^\w\- ]', '', heading.replace('`', '').lower()).replace(' ', '-')
        found.add(slug if slug not in seen else f'{slug}-{seen[slug]}')
        seen[slug] = seen.get(slug, 0) + 1
    return found


def is_external(target: str) -> bool:
    return re.match(r'^[a-z][a-z0-9+.-]*:', target, flags=re.I) is not None  # https:, mailto:, ...


def test_readme_is_a_front_door_of_at_most_200_lines():
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f'README.md has {len(lines)} lines; move detail to a page under docs/'


def test_every_page_under_docs_is_reached_from_readme():
    reached, todo = {README.resolve()}, [README]
    while todo:
        page = todo.pop()
        for target in links(page.read_text()):
            path = (page.parent / target.split('#')[0]).resolve()
            if not is_external(target) and path.suffix == '.md' and path.is_file() and path not in reached:
                reached.add(path)
                todo.append(path)
    unreached = [page.name for page in PAGES if page.resolve() not in reached]
    assert not unreached, f'pages under docs/ that no link from README leads to: {unreached}'


@pytest.mark.parametrize('page', PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_leads_to_a_file_that_exists(page):
    broken = []
    for target in links(page.read_text()):
        if is_external(target):
            continue
        path, _, anchor = target.partition('#')
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f'{target} (no {resolved.relative_to(REPO) if resolved.is_relative_to(REPO) else resolved})')
        elif anchor and resolved.suffix == '.md' and anchor not in anchors(resolved.read_text()):
            broken.append(f'{target} (no heading #{anchor} in {resolved.name})')
    assert not broken, f'{page.name}: broken links: {broken}'


def test_the_link_reader_sees_links_and_skips_code():
    text = ('See [a](docs/a.md#x) and ![p](p.png "t").\n\n```bash\necho [no](b.md)\n```\n'
            '`[nor](c.md)` and [`code text`](../d.md) and [web](https://example.org/e.md).\n')
    assert links(text) == ['docs/a.md#x', 'p.png', '../d.md', 'https://example.org/e.md']
    assert anchors('# Does it hold? The `study`\n## On a GPU\n## On a GPU\n') == {
        'does-it-hold-the-study', 'on-a-gpu', 'on-a-gpu-1'}
