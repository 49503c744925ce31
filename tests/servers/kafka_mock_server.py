#!/usr/bin/env python3
"""A standalone Kafka wire-protocol server for the tests: librdkafka's mock cluster,
driven through ctypes, in a process of its own.

    python tests/servers/kafka_mock_server.py [-b BROKERS] [-t TOPIC:PARTITIONS]...
                                              [-f FILE] [-d MS] [--lib PATH]

Prints ``BOOTSTRAP=<host:port,...>`` on stdout once it listens (127.0.0.1, ports
chosen by the kernel), then serves until SIGTERM or SIGINT. ``-d`` sets the group's
initial rebalance delay (3,000 ms otherwise; needs librdkafka >= 2.6, which the
confluent-kafka wheel bundles). It loads the librdkafka of the confluent-kafka wheel
(or ``--lib`` / ``RDKAFKA_LIB``) and never imports confluent_kafka's C extension.

Adapted from the tested recipe in shared/kafka-mock.md (§7b). Two librdkafka quirks
shape it: a request sent to the mock thread right after the previous reply can lose
its wake-up and wait for the thread's 1 s idle tick, hence the 20 ms pause between
topic creations; and destroying the cluster can take about 1 s for the same
reason, so the server simply ``_exit``s (all state is in memory).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import glob
import importlib.util
import os
import signal
import sys
import time


def find_librdkafka() -> str:
    """The librdkafka bundled in the confluent-kafka wheel, else the system one."""
    spec = importlib.util.find_spec("confluent_kafka")
    if spec and spec.submodule_search_locations:
        package = next(iter(spec.submodule_search_locations))
        bundled = os.path.join(os.path.dirname(package), "confluent_kafka.libs")
        libs = sorted(glob.glob(os.path.join(bundled, "librdkafka*.so*")))
        if libs:
            return libs[0]
    return ctypes.util.find_library("rdkafka") or "librdkafka.so.1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-b", type=int, default=1, dest="brokers")
    parser.add_argument("-t", action="append", default=[], dest="topics", metavar="TOPIC:PARTS")
    parser.add_argument("-f", dest="outfile")
    parser.add_argument("-d", type=int, dest="rebalance_delay_ms", metavar="MS")
    parser.add_argument("--lib", default=os.environ.get("RDKAFKA_LIB") or find_librdkafka())
    args = parser.parse_args()

    # Block the stop signals before librdkafka starts threads (they inherit the
    # mask), so that only sigwait() below receives them.
    stop = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)

    lib = ctypes.CDLL(args.lib)
    vp, cp, ci = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
    lib.rd_kafka_version_str.restype = cp
    lib.rd_kafka_conf_new.restype = vp
    lib.rd_kafka_conf_set.argtypes = [vp, cp, cp, cp, ctypes.c_size_t]
    lib.rd_kafka_new.restype = vp
    lib.rd_kafka_new.argtypes = [ci, vp, cp, ctypes.c_size_t]
    lib.rd_kafka_mock_cluster_new.restype = vp
    lib.rd_kafka_mock_cluster_new.argtypes = [vp, ci]
    lib.rd_kafka_mock_cluster_bootstraps.restype = cp
    lib.rd_kafka_mock_cluster_bootstraps.argtypes = [vp]
    lib.rd_kafka_mock_topic_create.restype = ci
    lib.rd_kafka_mock_topic_create.argtypes = [vp, cp, ci, ci]
    lib.rd_kafka_err2str.restype = cp
    lib.rd_kafka_err2str.argtypes = [ci]

    errstr = ctypes.create_string_buffer(512)
    conf = lib.rd_kafka_conf_new()
    lib.rd_kafka_conf_set(conf, b"log_level", b"3", errstr, 512)
    rk = lib.rd_kafka_new(0, conf, errstr, 512)  # 0 = RD_KAFKA_PRODUCER
    if not rk:
        sys.exit(f"rd_kafka_new: {errstr.value.decode()}")
    cluster = lib.rd_kafka_mock_cluster_new(rk, args.brokers)
    if not cluster:
        sys.exit("rd_kafka_mock_cluster_new failed")
    if args.rebalance_delay_ms is not None:
        try:
            delay = lib.rd_kafka_mock_group_initial_rebalance_delay_ms
        except AttributeError:
            sys.exit("-d needs a librdkafka whose mock has group_initial_rebalance_delay_ms")
        delay.argtypes = [vp, ctypes.c_int32]
        delay(cluster, args.rebalance_delay_ms)

    for i, spec in enumerate(args.topics):
        if i:
            time.sleep(0.02)  # see the module docstring: a lost wake-up otherwise
        name, _, parts = spec.rpartition(":") if ":" in spec else (spec, ":", "1")
        err = lib.rd_kafka_mock_topic_create(
            cluster, name.encode(), int(parts), min(3, args.brokers)
        )
        if err:
            sys.exit(f"topic {name}: {lib.rd_kafka_err2str(err).decode()}")

    bootstrap = lib.rd_kafka_mock_cluster_bootstraps(cluster).decode()
    if args.outfile:
        with open(args.outfile + ".tmp", "w") as out:
            out.write(bootstrap + "\n")
        os.replace(args.outfile + ".tmp", args.outfile)
    print(f"BOOTSTRAP={bootstrap}", flush=True)
    version = lib.rd_kafka_version_str().decode()
    print(f"kafka_mock_server: librdkafka {version} from {args.lib}", file=sys.stderr, flush=True)

    sig = signal.sigwait(stop)
    print(f"kafka_mock_server: signal {sig}, exiting", file=sys.stderr, flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
