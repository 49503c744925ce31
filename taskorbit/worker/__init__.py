"""The threads of one running worker and the pure core they share.

``runtime`` owns the threads (pollers, dispatcher, runners on the thread pool,
timer wheel, acker, lease keeper) and their start and stop order; ``pipeline`` is
the pure ``process(message) -> Outcome`` at their centre; ``settle`` and
``inflight`` keep the settlement invariant; ``ring`` is the only door to the C
ring buffer. Imported by ``taskorbit.app``; nothing here imports a broker's client
library or the command line.
"""
