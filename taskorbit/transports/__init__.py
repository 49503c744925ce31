"""Transports: the brokers taskorbit receives from and publishes to."""

from taskorbit.transports.base import AckFailure, Transport

__all__ = ["AckFailure", "Transport"]
