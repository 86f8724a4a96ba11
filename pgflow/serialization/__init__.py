"""Turn workflow inputs, step outputs and errors into database text, and back.

Two serializers: ``json`` (the default) round-trips the common Python value types exactly through
a tagged JSON form; ``pickle`` (opt-in) stores anything picklable but trusts every writer of the
database, because unpickling runs code. Errors are always recorded as JSON so any reader can show
them, and are rebuilt as their own type only from classes the reader has already imported.

Four modules, each importing only from those listed after it: ``payloads`` (inputs and values,
their size limit) and ``recorded_errors`` (recording and rebuilding errors); ``serializers``
(JSON, pickle, the choice of one for a row); ``codec`` (the tagged JSON form).
"""

from __future__ import annotations

from .payloads import dumps_inputs, dumps_value, loads_inputs, loads_value
from .recorded_errors import RecordedError, dumps_error, loads_error, recorded_traceback
from .serializers import JSON, PICKLE, Serializer, get_serializer, serializer_for_row

__all__ = [
    "JSON",
    "PICKLE",
    "RecordedError",
    "Serializer",
    "dumps_error",
    "dumps_inputs",
    "dumps_value",
    "get_serializer",
    "loads_error",
    "loads_inputs",
    "loads_value",
    "recorded_traceback",
    "serializer_for_row",
]
