""" The `learn` vocabulary: which kind of mixing a model learns, and which it keeps frozen at init.

`full` learns both, `channels` (the paper's "Chans") freezes spatial mixing, `spatial` ("Space") freezes
channel mixing. Parameters of any other role (norms, head) are always learned.
"""
from timm_frozenmix.core.errors import UsageError

__all__ = ['LEARN_MODES', 'LEARN_ALIASES', 'ROLES', 'resolve_learn', 'is_learned']

LEARN_MODES = ('full', 'channels', 'spatial')
LEARN_ALIASES = {'chans': 'channels', 'space': 'spatial'}
ROLES = ('spatial', 'channel', 'other')


def resolve_learn(learn: str) -> str:
    """Canonical learn mode for `learn` (paper aliases accepted), or a ValueError naming the choices."""
    mode = LEARN_ALIASES.get(learn, learn)
    if mode not in LEARN_MODES:
        choices = ', '.join(repr(m) for m in LEARN_MODES + tuple(LEARN_ALIASES))
        raise UsageError(f'unknown learn mode {learn!r}: choose one of {choices}')
    return mode


def is_learned(role: str, mode: str) -> bool:
    """Whether parameters of `role` are trained under the canonical learn `mode` (parse it with resolve_learn)."""
    if role == 'spatial':
        return mode != 'channels'
    if role == 'channel':
        return mode != 'spatial'
    return True
