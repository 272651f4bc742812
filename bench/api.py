"""Latency and throughput of GET /api/feature, the feature page and the SAE page, served by gunicorn, at a fixed
request rate.

Stores --features synthetic features (default 1,000,000 in one SAE; each its own density and max activation, its
dashboard one of 8,192 full-size ones that bench/ingest.py builds) by the one writer, run_features_publish's
binary COPY, in a scratch database it creates and drops (`atlas_bench_api` on DATABASE_URL's server, or on the
embedded Postgres), then VACUUMs it as autovacuum would. It serves them with gunicorn on loopback, and from a
second process sends GETs for random feature indexes at a fixed rate (default 300 per second for 20 s, first the
API, then the page). The load is open-loop: each request is sent when it is due, whether or not earlier ones
have been answered, and its latency counts from when it was due, so a server that falls behind shows it instead
of slowing the client down. Any answer but a 200, and any request unanswered after --timeout seconds, is an error.
Then it asks the SAE page's feature table at page 1 (the baseline), page 5,000 by density (both ways) and by
index, and the last page, each again and again at --sae-rate for --sae-seconds.
Prints p50/p90/p99/max latency and requests per second for each, then `RESULT sae_page_<case>_p50_ms=...` and
`RESULT sae_page_<case>_ms=...` (its p99), `RESULT api_p99_ms=...`, `RESULT api_rps=...`, `RESULT
api_errors=...` (and the same for the page). `--features 100000` is the smaller case, about a minute less.
"""

import argparse
import asyncio
import itertools
import json
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from bench.ingest import DEAD_SHARE, ROOT, VOCABULARY, dashboards_synthetic
from bench.scratch import scratch_database
from workers.compute.params import DashboardParams

if TYPE_CHECKING:  # Django models load only once scratch_database has set Django up.
    from atlas.features.services import PackedFeatures

SCRATCH_DATABASE = "atlas_bench_api"
MODEL, SAE = "bench", "bench-api"
HOST = "127.0.0.1"
# The SAE page's deep page: a million features hold about 9,500 pages of 100 live ones.
DEEP_PAGE = 5_000
SAE_PAGE_WARMUP = 10
# Distinct dashboards the stored features cycle through (a multiple of the COPY chunk).
DASHBOARD_POOL = 8_192
# Requests sent before measuring, so every worker has its database connection and the vocabulary loaded.
WARMUP_SECONDS = 3.0


@dataclass(frozen=True)
class LoadResult:
    """What the load process saw: each answered request's latency, the errors, and the span they took."""

    latencies_ms: list[float]
    errors: int
    seconds: float

    @property
    def rps(self) -> float:
        return len(self.latencies_ms) / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, share: float) -> float:
        return float(np.percentile(self.latencies_ms, share)) if self.latencies_ms else float("nan")


async def _status(port: int, path: str) -> bytes:
    """One GET on a fresh connection (as a client without keep-alive would), read to the end."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n\r\n".encode())
        status_line = await reader.readline()
        await reader.read()
    finally:
        writer.close()
    return status_line.split(b" ")[1]


async def _get(port: int, path: str, due: float, timeout: float) -> float | None:
    """The latency in ms from when the request was due, or None for an error or no answer within timeout."""
    loop = asyncio.get_running_loop()
    try:
        status = await asyncio.wait_for(_status(port, path), timeout)
    except (OSError, TimeoutError, IndexError):
        return None
    return (loop.time() - due) * 1000 if status == b"200" else None


async def _load(port: int, paths: list[str], rate: float, timeout: float) -> LoadResult:
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.1
    requests: list[asyncio.Task[float | None]] = []
    for number, path in enumerate(paths):
        due = start + number / rate
        await asyncio.sleep(max(0.0, due - loop.time()))
        requests.append(asyncio.create_task(_get(port, path, due, timeout)))
    answers = await asyncio.gather(*requests)
    latencies = [latency for latency in answers if latency is not None]
    return LoadResult(latencies_ms=latencies, errors=len(answers) - len(latencies), seconds=loop.time() - start)


def feature_paths(kind: str, n_features: int, count: int, seed: int) -> list[str]:
    """Random feature indexes, as /api/feature/<model>/<sae>/<index> or the page /<model>/<sae>/<index>."""
    prefix = f"/api/feature/{MODEL}/{SAE}" if kind == "api" else f"/{MODEL}/{SAE}"
    indexes = random.Random(seed).choices(range(n_features), k=count)
    return [f"{prefix}/{index}" for index in indexes]


def sae_page_cases(n_pages: int) -> dict[str, str]:
    """The SAE page's feature table, by name: the first page (the baseline), page DEEP_PAGE by density both ways
    and by index, and the last page by density."""
    deep = f"page={DEEP_PAGE}"
    return {
        "sae_page_1_density": "?sort=density&page=1",
        f"sae_page_{DEEP_PAGE}_density": f"?sort=density&{deep}",
        f"sae_page_{DEEP_PAGE}_density_desc": f"?sort=density&order=desc&{deep}",
        f"sae_page_{DEEP_PAGE}_index": f"?{deep}",
        "sae_page_last_density": f"?sort=density&page={n_pages}",
    }


def sae_page_count() -> int:
    """The SAE page's pages of live features (the default listing hides dead ones)."""
    from django.conf import settings

    from atlas.features.models import Feature

    live = Feature.objects.filter(frac_nonzero__gt=0).count()
    return max(1, -(-live // settings.ATLAS_FEATURES_PER_PAGE))


def load_from_second_process(port: int, paths: list[str], rate: float, timeout: float) -> LoadResult:
    """Runs this module's --load mode in another Python process, so the client never shares the server's CPU
    time slices through one interpreter."""
    command = [sys.executable, "-m", "bench.api", "--load", "--port", str(port), "--rate", str(rate),
               "--timeout", str(timeout)]
    done = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True, input=json.dumps(paths))
    return LoadResult(**json.loads(done.stdout))


def densities_synthetic(n_features: int, seed: int = 0) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float32]]:
    """(frac_nonzero, max_act) for every feature, as dashboards_synthetic draws them: DEAD_SHARE dead, densities
    from 1e-5 to 1e-1."""
    rng = np.random.default_rng(seed)
    alive = rng.random(n_features) >= DEAD_SHARE
    frac_nonzero = np.where(alive, 10 ** rng.uniform(-5, -1, n_features), 0.0)
    max_act = np.where(alive, rng.lognormal(1.0, 0.6, n_features), 0.0).astype(np.float32)
    return frac_nonzero, max_act


def features_synthetic(n_features: int, params: DashboardParams) -> Iterator["PackedFeatures"]:
    """n_features packed features: each row's own density and max activation, its dashboard one of
    DASHBOARD_POOL distinct synthetic ones of full size, so a million rows need not be built one by one."""
    from atlas.features.services import PackedFeatures, _dashboards_packed

    pool = list(_dashboards_packed(dashboards_synthetic(min(n_features, DASHBOARD_POOL), params),
                                   focus=params.context_before))
    frac_nonzero, max_act = densities_synthetic(n_features)
    start = 0
    for block in itertools.cycle(pool):
        if start >= n_features:
            return
        stop = min(start + len(block), n_features)
        yield PackedFeatures(start, frac_nonzero[start:stop], max_act[start:stop], block.dashboards[:stop - start])
        start = stop


def features_store(n_features: int) -> None:
    """The SAE, its published run of synthetic dashboards, and a vocabulary for the token text."""
    from atlas.features.services import run_features_publish
    from atlas.lms.models import Vocabulary
    from bench.records import records_make, run_make

    params = DashboardParams()
    sae = records_make(n_features, slug=SAE)
    Vocabulary.objects.create(language_model=sae.language_model,
                              tokens=[f" word{token_id}" for token_id in range(VOCABULARY)])
    run_features_publish(run=run_make(sae, params), features=features_synthetic(n_features, params))


def features_vacuum() -> None:
    """The VACUUM that autovacuum runs soon after a large insert, so the feature list's index-only scans skip
    the heap."""
    from django.db import connection

    from atlas.features.models import Feature

    with connection.cursor() as cursor:
        # The dashboards' TOAST table holds nothing an index-only scan reads; vacuuming it would reread every blob.
        cursor.execute(f"VACUUM (ANALYZE, PROCESS_TOAST FALSE) {connection.ops.quote_name(Feature._meta.db_table)}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def gunicorn_serving(database_url: str, workers: int) -> Iterator[int]:
    """gunicorn on loopback against the scratch database; yields its port once it answers."""
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "SECRET_KEY": "bench-api", "DEBUG": "false",
           "LOG_LEVEL": "WARNING"}
    command = [sys.executable, "-m", "gunicorn", "atlas.wsgi", "--pythonpath", "platform",
               "--bind", f"{HOST}:{port}", "--workers", str(workers), "--worker-class", "gthread", "--threads", "4",
               "--log-level", "warning"]
    server = subprocess.Popen(command, cwd=ROOT, env=env)
    try:
        _wait_until_answering(port, server)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=30)


def _wait_until_answering(port: int, server: subprocess.Popen[bytes], seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"gunicorn exited with status {server.returncode}")
        try:
            if asyncio.run(_status(port, f"/api/feature/{MODEL}/{SAE}/0")) == b"200":
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"gunicorn did not answer on port {port} within {seconds:.0f} s")


def report(name: str, result: LoadResult, rate: float) -> None:
    print(f"{name}: {len(result.latencies_ms)} answered, {result.errors} errors, {result.rps:.1f} req/s "
          f"(asked {rate:.0f}); latency ms p50 {result.percentile(50):.1f}, p90 {result.percentile(90):.1f}, "
          f"p99 {result.percentile(99):.1f}, max {max(result.latencies_ms, default=float('nan')):.1f}")


def load_main(args: argparse.Namespace) -> None:
    """The second process: send the requests read as a JSON list from stdin, print what happened as JSON."""
    paths: list[str] = json.loads(sys.stdin.read())
    result = asyncio.run(_load(args.port, paths, args.rate, args.timeout))
    print(json.dumps(asdict(result)))


def sae_pages_load(port: int, sae_pages: dict[str, str], args: argparse.Namespace) -> dict[str, LoadResult]:
    """Each SAE page asked again and again at --sae-rate for --sae-seconds, as readers paging there would,
    after SAE_PAGE_WARMUP requests."""
    results: dict[str, LoadResult] = {}
    for name, query in sae_pages.items():
        path = f"/{MODEL}/{SAE}/{query}"
        load_from_second_process(port, [path] * SAE_PAGE_WARMUP, args.sae_rate, args.timeout)
        results[name] = load_from_second_process(port, [path] * round(args.sae_rate * args.sae_seconds),
                                                 args.sae_rate, args.timeout)
    return results


def bench_main(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    with scratch_database(SCRATCH_DATABASE) as database_url:
        features_store(args.features)
        features_vacuum()
        print(f"stored {args.features} features in {time.perf_counter() - started:.1f} s")
        sae_pages = sae_page_cases(sae_page_count())
        with gunicorn_serving(database_url, args.workers) as port:
            results: dict[str, LoadResult] = {}
            for kind, rate in (("api", args.rate), ("page", args.page_rate)):
                # The warm-up asks for other features than the measured load, whose rows it must not cache.
                warmup = feature_paths(kind, args.features, round(rate * WARMUP_SECONDS), seed=args.seed + 1)
                load_from_second_process(port, warmup, rate, args.timeout)
                paths = feature_paths(kind, args.features, round(rate * args.seconds), seed=args.seed)
                results[kind] = load_from_second_process(port, paths, rate, args.timeout)
            sae_results = sae_pages_load(port, sae_pages, args)
    print(f"{args.features} features, gunicorn with {args.workers} workers, {os.cpu_count()} CPUs, "
          f"{args.seconds:.0f} s per load at a fixed rate from a second process on loopback")
    report("GET /api/feature", results["api"], args.rate)
    report("GET feature page", results["page"], args.page_rate)
    for name, query in sae_pages.items():
        report(f"GET SAE page {query}", sae_results[name], args.sae_rate)
    # Each SAE page's p50, then its p99 as <name>_ms: the target (page 5,000 by density under 100 ms) is on it.
    for name, result in sae_results.items():
        print(f"RESULT {name}_p50_ms={result.percentile(50):.1f}")
        print(f"RESULT {name}_ms={result.percentile(99):.1f}")
        print(f"RESULT {name}_errors={result.errors}")
    # The API's lines last: its target (p99 <= 25 ms at 300 req/s, no errors) is what a reader looks for.
    for kind in ("page", "api"):
        result = results[kind]
        print(f"RESULT {kind}_p99_ms={result.percentile(99):.1f}")
        print(f"RESULT {kind}_rps={result.rps:.1f}")
        print(f"RESULT {kind}_errors={result.errors}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=300.0, help="API requests per second")
    parser.add_argument("--page-rate", type=float, default=50.0,
                        help="feature page requests per second (a page costs several times an API answer)")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each measured load")
    parser.add_argument("--sae-rate", type=float, default=10.0, help="requests per second for each SAE page")
    parser.add_argument("--sae-seconds", type=float, default=10.0, help="length of each SAE page's load")
    parser.add_argument("--workers", type=int, default=3, help="gunicorn worker processes (gthread, 4 threads each)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds before a request counts as an error")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        load_main(args)
    else:
        bench_main(args)


if __name__ == "__main__":
    main()
