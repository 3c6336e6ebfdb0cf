""" What a part of the study is: the runs that measure its numbers, and what the report shows of them

A part runs on its own and its numbers are kept in `reproduction.json` under its name; its report section and
figures read that JSON alone, so the report can be re-rendered without any model.
"""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from .runs import Study
from .sections import Verdicts


@dataclass(frozen=True)
class Part:
    """One part: `measure` makes its numbers once; everything else shows them, as often as the report is rendered."""
    name: str
    measure: Callable[[Study], dict]  # trains (or reuses) the part's runs and returns its numbers (JSON)
    shows: Tuple[str, ...] = ()  # the parts whose numbers its section and figures show; default: its own
    section: Optional[Callable[[dict, Verdicts], List[str]]] = None  # markdown lines
    figures: Dict[str, Callable[[dict, Path], None]] = field(default_factory=dict)  # file name: plot of the JSON
    drawn: Dict[str, str] = field(default_factory=dict)  # file name: what it shows, drawn by `measure` from models
    setting: Optional[Callable[[dict], List[str]]] = None  # lines on its recipe fields, for the report's setting

    def shown(self, results: dict) -> bool:
        """Whether its section and figures belong in the report: a part they show has run."""
        return any(name in results['parts'] for name in self.shows or (self.name,))

    def first_shown(self, results: dict) -> dict:
        """The numbers of the first part it shows that has run (see `shown`)."""
        return next(results['parts'][name] for name in self.shows or (self.name,) if name in results['parts'])
