import pytest

from vmae import memory


def test_reuse_freed_memory_sets_and_restores_the_allocator(monkeypatch):
    calls = []
    monkeypatch.setattr(memory, "_glibc", lambda: lambda option, value: calls.append((option, value)))
    with memory.reuse_freed_memory():
        assert dict(calls) == {memory.M_ARENA_MAX: 1, memory.M_MMAP_THRESHOLD: 32 << 20,
                               memory.M_TRIM_THRESHOLD: 1 << 30}
        calls.clear()
    assert dict(calls) == {memory.M_ARENA_MAX: 0, memory.M_MMAP_THRESHOLD: 128 * 1024,
                           memory.M_TRIM_THRESHOLD: 128 * 1024}
    calls.clear()
    with pytest.raises(ValueError), memory.reuse_freed_memory():
        raise ValueError("the defaults come back on failure too")
    assert dict(calls)[memory.M_TRIM_THRESHOLD] == 128 * 1024


def test_reuse_freed_memory_without_glibc_does_nothing(monkeypatch):
    monkeypatch.setattr(memory, "_glibc", lambda: None)
    with memory.reuse_freed_memory():
        pass


def test_this_glibc_accepts_every_setting():
    mallopt = memory._glibc()
    if mallopt is None:
        pytest.skip("not glibc")
    try:
        # glibc answers 1 for a setting it took, 0 for one it refused.
        assert [mallopt(option, value) for option, value in memory._REUSE.items()] == [1, 1, 1]
        assert [mallopt(option, value) for option, value in memory._DEFAULTS.items()] == [1, 1, 1]
    finally:
        for option, value in memory._DEFAULTS.items():
            mallopt(option, value)
