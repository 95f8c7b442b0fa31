"""``--runner=DirectRunner``: Beam's DirectRunner, always on its FnApiRunner.

Beam 2.77's DirectRunner first tries Prism, a Go runner it downloads from GitHub at run time
(``apache_beam/runners/direct/direct_runner.py``), and falls back to its FnApiRunner only when
that fails. So the same command ran on two different engines depending on the network: offline
(CI, an air-gapped cluster) on the FnApiRunner with ``--direct_running_mode`` and
``--direct_num_workers`` honoured, online on Prism, which has its own worker settings; and a
download that hangs holds the job up. The job is measured, tested and documented on the
FnApiRunner, so the short name ``DirectRunner`` means that here, on every machine, with nothing
downloaded. ``--runner=PrismRunner`` still picks Prism explicitly.
"""
from __future__ import annotations

from apache_beam.portability.api import beam_provision_api_pb2
from apache_beam.runners.direct.direct_runner import SwitchingDirectRunner
from apache_beam.runners.portability.fn_api_runner import fn_runner
from apache_beam.runners.portability.portable_runner import JobServiceHandle


class DirectRunner(SwitchingDirectRunner):
    """Beam's DirectRunner without the Prism attempt: the FnApiRunner, given the job's
    options as Beam's DirectRunner gives them (its workers read them)."""

    def run_pipeline(self, pipeline, options):
        encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
        info = fn_runner.ExtendedProvisionInfo(
            beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
        return fn_runner.FnApiRunner(provision_info=info).run_pipeline(pipeline, options)
