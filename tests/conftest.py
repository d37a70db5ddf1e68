import shutil

import pytest


def pytest_configure(config):
    for tool in ("ffmpeg", "ffprobe"):
        if shutil.which(tool) is None:
            raise pytest.UsageError(f"{tool} not found: run the tests through `make test`, which installs it")
