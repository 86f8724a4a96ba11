"""``python -m pgflow.cli`` is the ``pgflow`` command."""

from . import main

main(prog_name="pgflow")
