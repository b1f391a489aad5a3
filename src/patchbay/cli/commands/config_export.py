"""``config export``: write a cluster's config of record (kept in Redis) back to a file, or print it."""

from __future__ import annotations

import argparse
import json
import sys

from patchbay.cli.errors import EXIT_FAILED, EXIT_OK, CliError
from patchbay.config import atomic_write, load_config
from patchbay.errors import ConfigError


async def cmd_config_export(args: argparse.Namespace) -> int:
    from patchbay.cluster.settings import check_url, cluster_url

    url: str | None = None
    try:
        if args.cluster:
            url = check_url(args.cluster, "--cluster")
        elif args.config is not None:
            url = cluster_url(None, load_config(args.config.expanduser()))
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    if url is None:
        raise CliError(
            "give the cluster's Redis: --cluster redis://HOST:PORT/DB (or --config FILE whose "
            '"cluster": {"redis": …} names it)'
        )
    import asyncio

    from redis.exceptions import RedisError

    from patchbay.cluster.export import read_config_of_record

    try:
        version, document = await asyncio.wait_for(read_config_of_record(url), 10)
    except (RedisError, TimeoutError) as exc:
        why = f"cannot read the cluster's config: Redis is unreachable ({exc or type(exc).__name__})"
        raise CliError(why, EXIT_FAILED) from None
    if document is None:
        raise CliError("the cluster has no config yet: no replica has joined it", EXIT_FAILED)
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if args.output is None:
        sys.stdout.write(text)
    else:
        atomic_write(args.output.expanduser(), text.encode())
        print(f"wrote the cluster's config (version {version}) to {args.output}", file=sys.stderr)
    return EXIT_OK
