"""Offline, single-threaded, quiet test session (see ../shared/ENVIRONMENT.md)."""
import os

# Before any Hugging Face import: an accidental hub lookup would otherwise hang for ~50 s.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DSC_NO_PROGRESS", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
BUNDLED_DATA = REPO / "specs" / "data"


@pytest.fixture(scope="session", autouse=True)
def _isolated_build_cache(tmp_path_factory):
    """Builds in tests never read or fill the user's ~/.cache/dsc (nor its build index)."""
    if "DSC_CACHE_DIR" not in os.environ:
        os.environ["DSC_CACHE_DIR"] = str(tmp_path_factory.mktemp("dsc-cache"))
    if "DSC_STATE_DIR" not in os.environ:
        os.environ["DSC_STATE_DIR"] = str(tmp_path_factory.mktemp("dsc-state"))
    yield


@pytest.fixture(scope="session", autouse=True)
def _quiet_and_single_threaded():
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
    try:
        import datasets

        datasets.disable_progress_bars()
    except ImportError:  # pragma: no cover
        pass
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass
    yield


@pytest.fixture(scope="session")
def fireact_dir() -> Path:
    """The full FireAct data beside the repository, or skip where it is absent."""
    d = SHARED_DATA / "fireact"
    if not d.is_dir():
        pytest.skip("../shared/data/fireact is not present")
    return d


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    from tiny import make_tokenizer

    return make_tokenizer(tmp_path_factory.mktemp("tiny-tokenizer"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    from tiny import make_model

    return make_model(tmp_path_factory.mktemp("tiny-model"), tiny_tokenizer_dir)
