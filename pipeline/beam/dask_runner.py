"""``--runner=DaskRunner``: Beam's DaskRunner with a Reshuffle that redistributes.

Beam's DaskRunner (``apache_beam.runners.dask``) turns each PCollection into a ``dask.bag``
whose partitions are fixed where a ``Create`` makes them (128 elements each by default) and
kept by every later step: its ``Reshuffle`` is a no-op. For this job that meant one partition,
hence one task, for all the ranges of the input: no parallelism at all.

Here a Reshuffle is what it is on Dataflow, a checkpoint: its input is computed on the
cluster when the job is translated, and the elements (the job only reshuffles small
descriptors: file names, byte ranges) start a new bag of N partitions that depend on nothing.
Tasks without dependencies go to whichever worker has a free thread; tasks that all depend on
one partition would stay where that partition was made (dask prefers data locality, and the
measured result was every range on one of two workers). N is ``--dask_npartitions`` when
given, else at most four per worker thread: every later shuffle (a task-based ``dask.bag``
groupby) costs a few tasks per partition and the scheduler about a millisecond per task
(measured on a 2-worker loopback cluster: 64 partitions made 22,000 tasks and an 83-second
job of 8 s).

The other shortcomings of Beam's translation (all outputs of a multi-output ParDo in one bag,
side inputs recomputed inside every task that reads them, only the last transform's graph
computed) are avoided by the job's shape (``pipeline.beam.transforms``), not patched here.

Everything else is Beam's DaskRunner: ``--dask_client_address`` names the scheduler (a
``dask.distributed`` cluster on Slurm through dask-jobqueue, on Kubernetes, or started by
hand); without it a LocalCluster is started in this process.
"""
from __future__ import annotations

import dask.bag as db
from apache_beam.runners.dask import dask_runner as beam_dask
from apache_beam.runners.dask import transform_evaluator
from apache_beam.runners.dask.overrides import _Reshuffle
from apache_beam.runners.runner import PipelineState

PARTITIONS_PER_THREAD = 4


def _cluster_threads() -> int:
    try:
        from distributed import get_client

        return sum(get_client().nthreads().values())
    except (ImportError, ValueError):
        return 1


class Redistribute(transform_evaluator.DaskBagOp):
    """A Reshuffle: the input computed now, its elements dealt evenly into N partitions."""

    def apply(self, input_bag: db.Bag, side_inputs=None) -> db.Bag:
        items = input_bag.compute()
        target = (self.bag_kwargs.get("npartitions")
                  or min(len(items), PARTITIONS_PER_THREAD * _cluster_threads()))
        return db.from_sequence(items, npartitions=max(1, target))


# Beam leaves _Reshuffle untranslated (a NoOp); register ours in Beam's translation table.
transform_evaluator.TRANSLATIONS[_Reshuffle] = Redistribute


class _Result(beam_dask.DaskRunnerResult):
    """Beam's result, which also closes the client it opened once the job has ended (Beam's
    leaves it open, reconnecting to a scheduler that may be gone)."""

    def wait_until_finish(self, duration=None) -> str:
        try:
            return super().wait_until_finish(duration)
        finally:
            if self.state in (PipelineState.DONE, PipelineState.FAILED):
                self.client.close()


class DaskRunner(beam_dask.DaskRunner):
    """Beam's DaskRunner, with ``Redistribute`` registered for Reshuffle (importing this
    module registers it) and its client closed when the job ends."""

    def run_pipeline(self, pipeline, options):
        result = super().run_pipeline(pipeline, options)
        return _Result(result.client, result.futures)
