"""Shared test set-up."""
import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """One intra-op thread: the models under test are tiny, and on a small shared CPU two OpenMP
    threads spin against each other (measured up to 20x slower); results are the same."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
