# Worker image for Dataflow (and any portable runner with --environment_type=DOCKER): Beam's
# Python SDK container at exactly the Beam version setup.py pins for the launcher (they must
# match: tests/test_worker_image.py checks it), a CPU build of torch (ltp depends on it through
# ltp-core; the default index would pull a multi-GB CUDA build), this package, and the built-in
# LTP model, trained at build time so that no worker trains it.
#
#   docker build -t REGION-docker.pkg.dev/PROJECT/REPO/bert-wwm:0.1 .
#   docker push REGION-docker.pkg.dev/PROJECT/REPO/bert-wwm:0.1
#   python -m pipeline.run --runner=DataflowRunner ... \
#     --sdk_container_image=REGION-docker.pkg.dev/PROJECT/REPO/bert-wwm:0.1 --sdk_location=container
#
# The image's Python must be the launcher's (pickled code crosses between them): PY_VERSION.
ARG PY_VERSION=3.11
FROM apache/beam_python${PY_VERSION}_sdk:2.77.0

ARG TORCH_VERSION=2.13.0
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" \
        --index-url https://download.pytorch.org/whl/cpu

WORKDIR /opt/bert-wwm-pipeline
COPY setup.py ./
COPY pipeline ./pipeline
RUN pip install --no-cache-dir ".[gcp,aws]"

# The default segmenter (a legacy LTP model trained on People's Daily 1998, ~30 s), cached where
# every worker process finds it.
ENV BERT_WWM_CACHE=/opt/bert-wwm-cache
RUN python -m pipeline.tools.ltp_model --evaluate --every 10
