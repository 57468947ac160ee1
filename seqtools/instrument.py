"""SeqTools 1.4.1's module path of the instrumented views
(:mod:`seqtools.views.instrument`)."""

from .views.instrument import debug, monitor_throughput

__all__ = ["debug", "monitor_throughput"]
