"""The ``pgflow`` command: thin click commands that build Settings and call one function.

Exit codes: 0 success; 1 an error (one line on stderr says what to do; with several ids, the
others were still handled); 2 a usage error; 3 (``pgflow worker``) worker processes kept
failing to start.

One module per command or group; this one assembles them under ``main``. The options they
share are in :mod:`.options`; their settings, database and Client in :mod:`.environment`.
"""

from __future__ import annotations

import click

from .activity import explain, workers
from .cancel_resume import cancel, filter_options, resume
from .dashboard import dashboard
from .embedded import embedded, embedded_home_option
from .enqueue import enqueue
from .environment import (
    build_settings,
    operator_settings,
    operator_url,
    run_guarded,
    with_client,
)
from .options import (
    CONTEXT,
    app_option,
    common_options,
    flags_given,
    json_option,
    parse_duration_option,
    setting_option,
)
from .prune import prune
from .queues import queues
from .schema import migrate, reset
from .versions import retarget, versions
from .worker import worker
from .workflows import workflows

__all__ = [
    "app_option",
    "build_settings",
    "common_options",
    "embedded_home_option",
    "filter_options",
    "flags_given",
    "json_option",
    "main",
    "operator_settings",
    "operator_url",
    "parse_duration_option",
    "run_guarded",
    "setting_option",
    "with_client",
]


@click.group(context_settings=CONTEXT)
@click.version_option(package_name="pgflow")
def main() -> None:
    """pgflow: durable workflows and task queues on PostgreSQL.

    \b
    Quick start:
      pgflow worker -A examples.shop --burst     run the example's queues until empty
      pgflow workflows list                      what ran, and how it ended
    """


workflows.add_command(cancel)
workflows.add_command(resume)
workflows.add_command(retarget)
for command in (
    worker,
    migrate,
    reset,
    workflows,
    queues,
    enqueue,
    explain,
    workers,
    versions,
    prune,
    dashboard,
    embedded,
):
    main.add_command(command)
