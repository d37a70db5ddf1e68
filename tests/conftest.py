import shutil

import pytest
import torch


def pytest_configure(config):
    for tool in ("ffmpeg", "ffprobe"):
        if shutil.which(tool) is None:
            raise pytest.UsageError(f"{tool} not found: run the tests through `make test`, which installs it")


@pytest.fixture
def one_torch_thread():
    """Tiny models on a 2-core box shared with loader workers: more threads than cores makes steps crawl."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
