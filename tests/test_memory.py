"""hamdata.memory.release: large stages give their freed memory back; small ones do not pay for it."""

import hamdata.memory as memory


def test_release_skips_small_stages_and_collects_after_large_ones(monkeypatch):
    collected, trimmed = [], []
    monkeypatch.setattr(memory.gc, "collect", lambda *a: collected.append(1) or 0)
    monkeypatch.setattr(memory, "_malloc_trim", lambda: (lambda pad: trimmed.append(pad) or 1))
    memory.release(memory.RELEASE_FROM - 1)
    assert collected == [] and trimmed == []
    memory.release(memory.RELEASE_FROM)
    assert collected == [1] and trimmed == [0]
    memory.release()  # no size given: always
    assert collected == [1, 1] and trimmed == [0, 0]
