"""The ASGI handler's request threads: a fixed set, reused, the least busy first."""

from __future__ import annotations

from chatsite.handlers import RequestThreads


def test_requests_take_the_least_busy_thread_and_give_it_back_once():
    threads = RequestThreads(3)
    a, b, c = threads.take(), threads.take(), threads.take()
    assert sorted(lease.thread for lease in (a, b, c)) == [0, 1, 2]
    d = threads.take()  # all busy: share the first least busy one
    assert threads.busy[d.thread] == 2
    threads.give(b)
    threads.give(b)  # a stream gives its thread back when it starts, then again at its end
    assert threads.busy[b.thread] == 0
    assert threads.take().thread == b.thread
    for executor in threads.executors:
        executor.shutdown()
