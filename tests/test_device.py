import random

import numpy as np
import pytest
import torch

from lossbook import demo_seed, pick_device, seed_everything


def test_override_cpu(monkeypatch):
    monkeypatch.setenv("LOSSBOOK_DEVICE", "cpu")
    assert pick_device() == torch.device("cpu")


def test_default_order_prefers_cuda_then_mps(monkeypatch):
    monkeypatch.delenv("LOSSBOOK_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device() == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("lossbook.device._mps_available", lambda: True)
    assert pick_device() == torch.device("mps")
    monkeypatch.setattr("lossbook.device._mps_available", lambda: False)
    assert pick_device() == torch.device("cpu")


def test_unknown_device_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("LOSSBOOK_DEVICE", "tpu")
    with pytest.raises(ValueError, match="LOSSBOOK_DEVICE='tpu'"):
        pick_device()


def test_missing_cuda_is_an_error_not_a_fallback(monkeypatch):
    monkeypatch.setenv("LOSSBOOK_DEVICE", "cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="is_available"):
        pick_device()


def test_seed_everything_repeats_every_generator():
    def draw():
        gen = seed_everything(123)
        return random.random(), float(np.random.rand()), float(torch.rand(())), float(torch.rand((), generator=gen))

    first, second = draw(), draw()
    assert first == second
    seed_everything(124)
    assert float(torch.rand(())) != first[2]


def test_seed_must_be_int():
    with pytest.raises(TypeError, match="seed must be an int"):
        seed_everything(1.5)


def test_pin_threads_defaults_to_one_and_honours_the_variable_and_argument(monkeypatch):
    import torch

    from lossbook import pin_threads

    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("LOSSBOOK_THREADS", raising=False)
        torch.set_num_threads(2)
        assert pin_threads() == 1 == torch.get_num_threads()
        monkeypatch.setenv("LOSSBOOK_THREADS", "2")
        assert pin_threads() == 2 == torch.get_num_threads()
        assert pin_threads(1) == 1
        for bad in ("0", "two", "-1"):
            monkeypatch.setenv("LOSSBOOK_THREADS", bad)
            with pytest.raises(ValueError, match="LOSSBOOK_THREADS"):
                pin_threads()
        with pytest.raises(ValueError, match="threads must be a positive int"):
            pin_threads(0)
    finally:
        torch.set_num_threads(before)


def test_demo_seed_is_zero_unless_the_variable_names_a_non_negative_integer(monkeypatch):
    monkeypatch.delenv("LOSSBOOK_SEED", raising=False)
    assert demo_seed() == 0
    monkeypatch.setenv("LOSSBOOK_SEED", " 2 ")
    assert demo_seed() == 2
    for bad in ("-1", "1.5", "two"):
        monkeypatch.setenv("LOSSBOOK_SEED", bad)
        with pytest.raises(ValueError, match=f"LOSSBOOK_SEED='{bad}'"):
            demo_seed()
