"""transformers, imported on first use and set up once for exante's consoles.

About 1 s of imports that a process which only hands model directories on
(the verification's parent, a stage that reads no model) never needs; every
module that builds a model or loads a tokenizer asks for it here, so the
logging settings hold wherever transformers is used.
"""

from __future__ import annotations

import functools


@functools.cache
def transformers():
    import transformers as hf
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-checkpoint bars drown the per-shard progress
    hf_logging.set_verbosity_error()  # config chatter (e.g. loss_type=None) is not news to a user
    return hf
