""" One place for how results are written: markdown tables, figures and JSON, each file replaced atomically

Figures use matplotlib's object API (`matplotlib.figure.Figure`), so drawing one never switches the caller's
backend or touches pyplot's global state.
"""
import json
from pathlib import Path
from typing import Any, Iterable, Sequence, Tuple

import numpy as np
from matplotlib.figure import Figure

from timm_frozenmix.io.outputs import replace_atomically

__all__ = ['markdown_table', 'new_figure', 'save_figure', 'write_json', 'write_text']


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub markdown table; cells are written with str()."""
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(str(cell) for cell in row) + ' |' for row in rows]
    return '\n'.join(lines)


def attack_name(results: dict, attack: str) -> str:
    """An attack's label in a robust.json (`results`) with its version where it names one and its random restarts
    where there are several: 'AutoAttack (standard)', 'PGD-10 (3 restarts)'. Files written before versions were
    recorded (a sentence in their place) show the bare label."""
    recorded = results.get('attacks', {}).get(attack, {})
    version, restarts = recorded.get('version'), recorded.get('restarts', 1)
    if isinstance(version, str) and ' ' not in version:
        return f'{attack} ({version})'
    return f'{attack} ({restarts} restarts)' if restarts > 1 else attack


def new_figure(rows: int = 1, columns: int = 1, figsize: Tuple[float, float] = (7, 4.5)) -> Tuple[Figure, np.ndarray]:
    """A figure with a rows x columns array of axes (always 2-D), laid out tightly when saved."""
    fig = Figure(figsize=figsize, layout='tight')
    return fig, fig.subplots(rows, columns, squeeze=False)


def save_figure(fig: Figure, path, dpi: int = 110) -> Path:
    """`fig` as a PNG at `path`, written atomically."""
    path = Path(path)
    replace_atomically(path, lambda tmp: fig.savefig(tmp, format='png', dpi=dpi))
    return path


def write_json(path, data: Any) -> Path:
    """`data` as indented JSON with a final newline, written atomically."""
    return write_text(path, json.dumps(data, indent=2) + '\n')


def replace_between_markers(path, start: str, end: str, block: str) -> bool:
    """Put `block` between the lines `start` and `end` of the text file `path` (a generated section of README or
    of a page under docs/), keeping the rest; False, with nothing written, when the file lacks either marker."""
    text = Path(path).read_text()
    if start not in text or end not in text:
        return False
    head, rest = text.split(start, 1)
    write_text(path, f'{head}{start}\n{block}\n{end}{rest.split(end, 1)[1]}')
    return True


def write_text(path, text: str) -> Path:
    path = Path(path)
    replace_atomically(path, lambda tmp: tmp.write_text(text))
    return path
