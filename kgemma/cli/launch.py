"""`kgemma-launch`: run a kgemma command as several worker processes on this host."""

import sys

import click

from kgemma.cli.common import user_errors_as_messages
from kgemma.scaling.launch import GRACE_SECONDS

EPILOG = """\b
Examples:
  # Two workers training one model together (TensorFlow's MultiWorkerMirroredStrategy):
  kgemma-launch --workers 2 -- kgemma-train --distribution data --multi-worker --output runs/mw
  # Killed or failed? The same command with --resume goes on from the last checkpoint.
  kgemma-launch --workers 2 -- kgemma-train --distribution data --multi-worker --output runs/mw --resume
  # Evaluation in two shards, then merged:
  kgemma-launch --workers 2 -- \\
      kgemma-eval --adapter runs/mw/adapter.npz --shard {worker}/{workers} --output eval/s{worker}
  kgemma-eval --merge eval/s0 --merge eval/s1 --output eval
"""


@click.command(
    epilog=EPILOG,
    context_settings={"max_content_width": 100, "ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True, help="Worker processes.")
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="Compute threads per worker (default: this host's cores shared out).",
)
@click.option(
    "--grace-seconds",
    type=click.FloatRange(min=0),
    default=GRACE_SECONDS,
    show_default=True,
    help="After a worker fails, how long the others may go on before they are stopped.",
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@user_errors_as_messages
def main(workers, threads, grace_seconds, command):
    """Run COMMAND as --workers processes on 127.0.0.1, as a cluster would run it on as many
    hosts: each gets TF_CONFIG (TensorFlow) and KERAS_DISTRIBUTION_* (JAX) naming all the
    workers and its own index, and {worker} and {workers} in COMMAND become its index and
    their number. Output lines are prefixed with the worker's index. When a worker fails,
    the others are stopped after --grace-seconds, and the exit code is the failed worker's."""
    from kgemma.scaling.launch import launch

    result = launch(list(command), workers=workers, threads=threads, grace_seconds=grace_seconds)
    if result.ok:
        click.echo(f"kgemma-launch: {workers} workers finished in {result.seconds:.1f} s.", err=True)
        return
    click.echo(f"kgemma-launch: {result.describe()}", err=True)
    code = result.returncodes[result.first_failure]
    sys.exit(code if code > 0 else 1)


if __name__ == "__main__":
    main()
