"""One quick-preset fit per method on the shared toy problem, for the whole test session.

The conformance suite and the method tests that use the same toy data share these fits
instead of training the same networks again (``weak_toys.fit_on_toys``).
"""

from collections.abc import Callable, Iterator

import pytest
import torch
from weak_toys import fit_on_toys

import anodiff


@pytest.fixture(scope="session")
def fitted_on_toys(tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[Callable[[str], anodiff.Detector]]:
    """``get(method)``: the method fitted at its quick preset on the labelled toy slices
    (each regime takes what it may use), with a run folder; fitted on first use."""
    cache: dict[str, anodiff.Detector] = {}

    def get(method: str) -> anodiff.Detector:
        if method not in cache:
            threads = torch.get_num_threads()
            cache[method] = fit_on_toys(method, tmp_path_factory.mktemp(method))
            torch.set_num_threads(threads)
        return cache[method]

    yield get


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Torch on one thread for the test: tiny networks gain nothing from a second one, and
    on a machine whose cores are busy two threads made tests several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
