"""Names from ``transformers``, imported under one lock.

``transformers`` resolves its public names lazily (``_LazyModule.__getattr__``); two threads asking for a name at the
same moment in a fresh process can make one of them fail with ``ImportError: cannot import name 'GPT2LMHeadModel'
from 'transformers'`` (seen on the class server, where sessions load models in parallel threads). Every sample that
needs a ``transformers`` class asks for it here.
"""

from __future__ import annotations

import threading
from typing import Any

_LOCK = threading.Lock()


def transformers_names(*names: str) -> tuple[Any, ...]:
    """The named attributes of ``transformers`` (``transformers_names("GPT2Config", "GPT2LMHeadModel")``); the
    module itself when no name is given is not offered: ask for what you use."""
    with _LOCK:
        import transformers  # lazy: transformers takes seconds to import, and only the transformer samples need it

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        return tuple(getattr(transformers, name) for name in names)
