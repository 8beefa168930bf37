"""Why ``torch.load(..., weights_only=True)`` refused a file, in a few words of our own.

torch's message for such a refusal advises loading the file again with
``weights_only=False``: that runs whatever code the file's pickle names, and
frameexit never does it, so the advice is never relayed. What the file holds
instead (the Python objects its pickle names) is.
"""

from __future__ import annotations

import re

#: torch's messages for a file its restricted (weights-only) unpickler refuses, across versions.
_WEIGHTS_ONLY = ("Weights only load failed", "WeightsUnpickler")
#: A Python object the pickle names (``GLOBAL module.name``), as torch's message quotes it.
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_OPERAND = re.compile(r"Unsupported operand \d+")


def refusal_reason(exc: BaseException) -> str:
    """Why loading a file with ``weights_only=True`` failed, on one line, without torch's advice.

    A pickle naming Python objects: ``it holds pickled Python objects other than
    tensors and containers (NAMES), ...``; another refusal of the restricted
    unpickler: that it is no file of tensors ``torch.save`` wrote; any other
    error (not a zip, truncated, ...): the first line of its message.
    """
    text = str(exc).strip()
    if any(marker in text for marker in _WEIGHTS_ONLY):
        names = sorted(set(_GLOBAL.findall(text)))
        if names:
            return (
                f"it holds pickled Python objects other than tensors and containers ({', '.join(names)}), which "
                "frameexit never unpickles (unpickling them can run any code)"
            )
        detail = _OPERAND.search(text)
        return "it is not a file of tensors written by torch.save" + (f" ({detail.group(0)})" if detail else "")
    return text.splitlines()[0] if text else type(exc).__name__
