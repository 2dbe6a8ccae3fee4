"""`Stream`, the endless batch iterator of training: an empty pass is an error, not a hang."""

from __future__ import annotations

import pytest
import torch

from imas.resume import Stream


def loader(samples: int, batch: int) -> torch.utils.data.DataLoader:
    data = torch.utils.data.TensorDataset(torch.arange(samples))
    return torch.utils.data.DataLoader(data, batch_size=batch, shuffle=False, drop_last=True)


def test_stream_repeats_passes() -> None:
    stream = Stream(loader(4, 2))
    assert [next(stream)[0].tolist() for _ in range(3)] == [[0, 1], [2, 3], [0, 1]]


def test_fewer_samples_than_a_batch_fail_instead_of_spinning() -> None:
    # A sweep's `-S labeled=3` with batch_labeled 4 used to loop forever in the warmup.
    with pytest.raises(ValueError, match="fewer samples than the batch size"):
        next(Stream(loader(3, 4)))
