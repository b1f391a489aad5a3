"""The ``patchbay`` command line.

Long-running commands: ``run``, ``serve`` and ``agent``. Management commands: ``servers``, ``profiles``,
``tools``, ``call``, ``config check`` and ``import``.

``servers``, ``profiles``, ``tools`` and ``call`` talk to a running hub through its REST API when one
answers at ``--url`` (default ``$PATCHBAY_URL``, else http://127.0.0.1:8765); otherwise they work on the
config file directly (``tools`` and ``call`` start the servers in-process for the one command). They always
say which on stderr.

Output: results on stdout (tables, coloured on a terminal unless ``NO_COLOR`` is set), ``--json`` for
machines; notes and progress on stderr; an error is one line, ``patchbay: error: …`` (``--debug`` for the
traceback). Exit codes: 0 ok, 1 the operation failed, 2 usage or config error, 3 hub not reachable at an
explicit ``--url`` (or needed and absent), 130 interrupted.

Layout: ``entry`` (main: run a command, map failures to exit codes), ``parser`` (commands, options, help),
``commands/`` (what each command does), and what they share: ``output``, ``errors``, ``options``,
``hubclient`` (a running hub), ``configfile`` (the config file), ``localhub`` (servers started in-process),
``check`` (config validation), ``importers`` (other clients' configs).
"""

from patchbay.cli.configfile import default_config_path
from patchbay.cli.entry import main

__all__ = ["default_config_path", "main"]
